"""The standalone push-broom runner (``blmkd export --c --runner``), built with ``cc -O3`` alone.

Skipped, with the reason, where this machine has no C compiler.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import subprocess
import threading

import numpy as np
import pytest
from typer.testing import CliRunner

from blmkd.cli import app
from blmkd.export import export
from blmkd.inference.c_build import c_compiler

pytestmark = pytest.mark.skipif(c_compiler()[0] is None, reason=c_compiler()[1] or "C compiler present")
cli = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture(autouse=True)
def _native_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("BLMKD_NATIVE_DIR", str(tmp_path_factory.getbasetemp() / "native"))


@pytest.fixture(scope="module")
def runner_build(student_ckpt, tmp_path_factory):
    """The student's C export and its runner, the runner built with `cc -O3 ... -lm` and nothing else."""
    d = tmp_path_factory.mktemp("runner")
    lines: list[str] = []
    arts = export(student_ckpt, ["c"], d, runner=True, eval_size=64, log=lines.append)
    assert [a.path.name for a in arts] == ["blm_test.c", "blm_test_runner.c"]
    assert any("blm_test_runner.c" in ln and "equals predict's" in ln for ln in lines), lines
    exe = d / "blm_test_runner"
    cc = c_compiler()[0]
    res = subprocess.run([*shlex.split(cc), "-O3", "-o", str(exe), str(d / "blm_test_runner.c"), "-lm"],
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return d / "blm_test.c", exe


@pytest.fixture(scope="module")
def scene():
    from blmkd.data import load_scene

    return load_scene("indian_pines")


def _write_envi(
    path, cube: np.ndarray, interleave: str, dtype: str, data_type: int, byte_order: int = 0, **over
):
    """``cube (H, W, bands)`` as a raw ENVI file ``path`` + ``path.hdr``."""
    h, w, b = cube.shape
    a = {"bil": cube.transpose(0, 2, 1), "bip": cube, "bsq": cube.transpose(2, 0, 1)}[interleave]
    np.ascontiguousarray(a).astype(dtype).tofile(path)
    fields = {"samples": w, "lines": h, "bands": b, "header offset": 0, "file type": "ENVI Standard",
              "data type": data_type, "interleave": interleave, "byte order": byte_order, **over}  # fmt: skip
    text = "ENVI\ndescription = {blmkd test cube,\n  written as " + interleave + "}\n"
    text += "".join(f"{k} = {v}\n" for k, v in fields.items())
    text += "wavelength = {\n 400.0, 410.0,\n 420.0}\n"
    (path.parent / (path.name + ".hdr")).write_text(text)


def _run(exe, *args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, **kw)


def test_runner_map_equals_predict(runner_build, scene, tmp_path):
    """Indian Pines written as BIL: the runner's map is exactly the map `blmkd predict` writes."""
    src, exe = runner_build
    res = cli.invoke(
        app,
        ["predict", str(src), "--scene", "indian_pines", "-o", str(tmp_path / "map.npy"), "--no-progress"],
    )
    assert res.exit_code == 0, (res.output, res.exception)
    want = np.load(tmp_path / "map.npy")  # original class ids, uint8
    cube = np.asarray(scene.cube)
    h, w, _ = cube.shape
    assert len(np.unique(want)) > 3  # a map a wrong runner could not match by accident

    _write_envi(tmp_path / "ip.bil", cube, "bil", "<f4", 4)  # float32, layout and size from the header
    r = _run(exe, tmp_path / "ip.bil", "-o", tmp_path / "map.raw")
    assert r.returncode == 0, r.stderr
    got = np.fromfile(tmp_path / "map.raw", np.uint8)
    assert got.size == h * w and np.array_equal(got.reshape(h, w), want)

    # the same scene as big-endian uint16 (its values are integers) through a pipe, layout from flags
    raw = np.ascontiguousarray(cube.transpose(0, 2, 1)).astype(">u2").tobytes()
    r = _run(exe, "--width", w, "--interleave", "bil", "--dtype", "uint16", "--big-endian", "-", input=raw)
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.frombuffer(r.stdout, np.uint8).reshape(h, w), want)


@pytest.mark.parametrize("interleave,dtype,code", [("bip", "<i2", 2), ("bsq", "<u2", 12), ("bil", "<f4", 4)])
def test_runner_reads_every_layout(runner_build, scene, tmp_path, interleave, dtype, code):
    """BIP, BSQ and BIL, int16, uint16 and float32 files of a crop give the same map; --index gives indices."""
    _, exe = runner_build
    crop = np.asarray(scene.cube[40:60, 20:70])
    _write_envi(tmp_path / "ref.bil", crop, "bil", "<f4", 4)
    ref = _run(exe, tmp_path / "ref.bil")
    _write_envi(tmp_path / "c.img", crop, interleave, dtype, code)
    got = _run(exe, tmp_path / "c.img")  # header found beside the file: c.img.hdr
    assert ref.returncode == got.returncode == 0, got.stderr
    assert len(ref.stdout) == 20 * 50 and got.stdout == ref.stdout
    idx = _run(exe, "--index", tmp_path / "ref.bil")
    ids = np.asarray([0, *range(1, 17)])  # Indian Pines' ids are 1..16, in output order
    assert np.array_equal(ids[np.frombuffer(idx.stdout, np.uint8) + 1], np.frombuffer(ref.stdout, np.uint8))


def test_runner_streams_line_by_line_with_half_window_delay(runner_build, scene):
    """A map line comes out as soon as the line P/2 below it has gone in, before the stream ends."""
    _, exe = runner_build
    cube = np.asarray(scene.cube[:12]).transpose(0, 2, 1).astype("<f4")  # (12, bands, W) BIL lines
    w = cube.shape[2]
    p = subprocess.Popen([str(exe), "--width", str(w), "--interleave", "bil", "--dtype", "float32", "-"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        p.stdin.write(cube[:3].tobytes())  # lines 0..2: the 7-line window of map line 0 needs line 3
        p.stdin.flush()
        assert select.select([p.stdout], [], [], 1.0)[0] == []  # nothing yet
        p.stdin.write(cube[3].tobytes())
        p.stdin.flush()
        assert select.select([p.stdout], [], [], 30.0)[0], "no map line after P/2 + 1 input lines"
        first = os.read(p.stdout.fileno(), w)
        assert len(first) == w
        p.stdin.write(cube[4:].tobytes())
        rest, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert len(first) + len(rest) == 12 * w


def _vm_hwm_kib(pid: int) -> int:
    """Peak resident set of a running process (Linux /proc; ru_maxrss would carry the forking
    Python's own size across exec)."""
    with open(f"/proc/{pid}/status") as fh:
        return next(int(ln.split()[1]) for ln in fh if ln.startswith("VmHWM:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak RSS from /proc (Linux)")
def test_runner_memory_stays_flat_over_20000_lines(runner_build):
    """A synthetic uint8 BIP scene of 20,000 lines through a pipe: the runner's peak RSS after 20,000
    lines is what it was after 1,000 (O(P·W·bands), not O(lines)), one map line per input line."""
    _, exe = runner_build
    width, bands = 32, 200
    block = (
        np.random.default_rng(0).integers(0, 256, (100, width, bands), dtype=np.uint8).tobytes()
    )  # 100 lines
    p = subprocess.Popen([str(exe), "--width", str(width), "--interleave", "bip", "--dtype", "uint8", "-"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    out = [0]

    def drain() -> None:
        while chunk := p.stdout.read1(1 << 16):
            out[0] += len(chunk)

    t = threading.Thread(target=drain)
    t.start()
    hwm = {}
    try:
        for i in range(1, 201):  # 200 blocks of 100 lines
            p.stdin.write(block)
            p.stdin.flush()
            if i in (10, 200):
                while out[0] < (i * 100 - 50) * width:  # let it work through what it was given
                    assert p.poll() is None, p.stderr.read()
                    threading.Event().wait(0.01)
                hwm[i * 100] = _vm_hwm_kib(p.pid)
        p.stdin.close()
        t.join(timeout=120)
        assert p.wait(timeout=60) == 0, p.stderr.read()
    finally:
        p.kill()
    assert out[0] == 20_000 * width  # one map line per input line
    assert 0 < hwm[20_000] <= hwm[1_000] + 256, (
        f"peak RSS {hwm[1_000]} KiB after 1,000 lines, {hwm[20_000]} KiB after 20,000"
    )
    assert (
        hwm[20_000] < 16 << 10
    )  # and small: the ring of P lines, not the scene (20,000 × 32 × 200 B = 122 MiB)


@pytest.mark.parametrize(
    "case,match",
    [
        ("short", r"blm_runner: .*ip\.bil: \d+ data bytes are not whole lines of \d+ bytes"),
        ("lines", r"blm_runner: .*ip\.bil is short: it holds 9 lines, the header or --lines says 10"),
        ("bands", r"blm_runner: the input has 199 bands; this model takes 200"),
        ("envi-dtype", r"blm_runner: .*ENVI data type 5 is not supported"),
        ("flag-dtype", r"blm_runner: --dtype float64 is not supported \(uint8, uint16, int16, float32\)"),
        (
            "dtype-mismatch",
            r"blm_runner: .*ip\.bil is short: it holds 20 lines, the header or --lines says 10",
        ),
        ("cut-stream", r"blm_runner: the input is short: line 2 has \d+ bytes, not a whole line"),
        ("too-few-lines", r"blm_runner: the input has 2 lines; the model's 7-line window needs at least 4"),
        ("bsq-stream", r"blm_runner: BSQ needs a file and its line count"),
    ],
)
def test_bad_input_is_a_one_line_error(runner_build, scene, tmp_path, case, match):
    _, exe = runner_build
    cube = np.asarray(scene.cube[:10])
    path = tmp_path / "ip.bil"
    stdin = None
    args: list = [path]
    if case in ("short", "lines"):
        _write_envi(path, cube, "bil", "<f4", 4)
        data = path.read_bytes()
        path.write_bytes(data[: -(7 if case == "short" else len(data) // 10)])
    elif case == "bands":
        _write_envi(path, cube[:, :, :199], "bil", "<f4", 4)
    elif case == "envi-dtype":
        _write_envi(path, cube, "bil", "<f8", 5)
    elif case == "flag-dtype":
        _write_envi(path, cube, "bil", "<f4", 4)
        args = ["--dtype", "float64", path]
    elif case == "dtype-mismatch":  # float32 data, a header that says uint16
        _write_envi(path, cube, "bil", "<f4", 12)
    else:
        lines = {"cut-stream": 3, "too-few-lines": 2, "bsq-stream": 3}[case]
        data = np.ascontiguousarray(cube[:lines].transpose(0, 2, 1)).astype("<f4").tobytes()
        stdin = data[:-5] if case == "cut-stream" else data
        inter = "bsq" if case == "bsq-stream" else "bil"
        args = ["--width", cube.shape[1], "--interleave", inter, "--dtype", "float32", "-"]
    r = _run(exe, *args, input=stdin)
    err = r.stderr.decode()
    assert r.returncode != 0
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(match, err), err
