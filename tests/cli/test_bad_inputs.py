"""Bad input at every command: each case exits non-zero (2 for bad input) with one ``error:`` line
and no traceback.

Cases run in-process through :func:`blmkd.cli.main` on real files: a ``blm_test`` student trained
for one epoch on a crop of Indian Pines, its ONNX and C exports, and copies of them edited the ways
a careless or hostile user would (a digit of the preprocessing mean, bytes of a weight, a ``#define``
of the C kernel). The numeric cases are generated from :data:`blmkd.cli.NUMERIC_BOUNDS` for every
numeric option of every command: NaN, infinity and a value outside the allowed range each.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import onnx
import pytest

from blmkd.cli import NUMERIC_BOUNDS, app, main, numeric_options
from blmkd.inference.c_build import c_compiler, seal_c_source

needs_cc = pytest.mark.skipif(c_compiler()[0] is None, reason=c_compiler()[1] or "C compiler present")

#: Every case is refused well within this (most at option parsing, in milliseconds).
SECONDS_PER_CASE = 60

#: A folder no one can write into, root included (sysfs is mounted read-only for files we create).
READ_ONLY = "/sys/blmkd-read-only-out"


def _edit_onnx(src: Path, dst: Path, change) -> Path:
    """Copy ONNX file ``src`` to ``dst`` with ``change(proto)`` applied and the old seal kept."""
    proto = onnx.load(str(src))
    change(proto)
    onnx.save(proto, str(dst))
    return dst


def _onnx_prop(proto, key: str, edit) -> None:
    for p in proto.metadata_props:
        if p.key == key:
            p.value = edit(p.value)


def _flip_weight(proto) -> None:
    init = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
    raw = bytearray(init.raw_data)
    raw[len(raw) // 2 : len(raw) // 2 + 8] = np.random.default_rng(0).bytes(8)
    init.raw_data = bytes(raw)


def _first_digit_changed(text: str, after: str) -> str:
    """``text`` with the first digit after ``after`` replaced by another digit."""
    i = text.index(after) + len(after)
    while not text[i].isdigit():
        i += 1
    return text[:i] + ("7" if text[i] != "7" else "3") + text[i + 1 :]


@pytest.fixture(scope="module")
def files(ip_crop_path, tmp_path_factory, edit_checkpoint_meta):
    """Every file the cases refer to, by placeholder name."""
    d = tmp_path_factory.mktemp("bad_inputs")
    crop = d / "ip_crop.npz"
    shutil.copy(ip_crop_path, crop)
    run = d / "run"
    exp = d / "exp"
    args = [
        "train-student",
        "--student",
        "blm_test",
        "--dataset",
        str(crop),
        "--epochs",
        "1",
        "--out",
        str(run),
        "--no-progress",
    ]
    main(args)
    fmts = ["--onnx", "--c"] if c_compiler()[0] else ["--onnx"]
    main(["export", str(run), *fmts, "-o", str(exp), "--eval-size", "64"])
    ck, onnx_path = run / "best.safetensors", exp / "blm_test.onnx"
    f = {"crop": crop, "run": run, "ckpt": ck, "onnx": onnx_path, "tmp": d, "ro": READ_ONLY}
    f["file"] = d / "a_file.txt"
    f["file"].write_text("not a folder\n")
    f["text_onnx"] = d / "text.onnx"
    f["text_onnx"].write_text("this is not a model\n")
    f["trunc_onnx"] = d / "truncated.onnx"
    f["trunc_onnx"].write_bytes(onnx_path.read_bytes()[: onnx_path.stat().st_size // 3])
    f["empty_onnx"] = d / "empty.onnx"
    f["empty_onnx"].write_bytes(b"")
    f["pp_onnx"] = _edit_onnx(
        onnx_path,
        d / "pp.onnx",
        lambda m: _onnx_prop(m, "preprocessing", lambda v: _first_digit_changed(v, '"mean":')),
    )
    f["cls_onnx"] = _edit_onnx(
        onnx_path,
        d / "cls.onnx",
        lambda m: _onnx_prop(m, "classes", lambda v: v.replace('"id":2', '"id":9', 1)),
    )
    f["w_onnx"] = _edit_onnx(onnx_path, d / "weights.onnx", _flip_weight)
    f["pp_ckpt"] = edit_checkpoint_meta(
        ck,
        d / "pp.safetensors",
        lambda m: m["preprocessing"]["mean"].__setitem__(0, m["preprocessing"]["mean"][0] + 1),
    )
    f["split_ckpt"] = edit_checkpoint_meta(
        ck, d / "split.safetensors", lambda m: m["split"].__setitem__("seed", 7)
    )
    f["cfg_ckpt"] = edit_checkpoint_meta(
        ck, d / "cfg.safetensors", lambda m: m["model"]["config"].__setitem__("num_classes", 3)
    )
    f["seal_ckpt"] = edit_checkpoint_meta(
        ck, d / "seal.safetensors", lambda m: m.__setitem__("integrity", "none")
    )
    f["trunc_ckpt"] = d / "truncated.safetensors"
    f["trunc_ckpt"].write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    f["text_ckpt"] = d / "text.safetensors"
    f["text_ckpt"].write_text("{}\n")
    flipped = bytearray(ck.read_bytes())
    flipped[-9] ^= 0x5A
    f["w_ckpt"] = d / "weights.safetensors"
    f["w_ckpt"].write_bytes(bytes(flipped))
    f["bin_c"] = d / "binary.c"
    f["bin_c"].write_bytes(bytes(range(256)) * 4)
    f["plain_c"] = d / "plain.c"
    f["plain_c"].write_text("int main(void) { return 0; }\n")
    if c_compiler()[0]:
        c = (exp / "blm_test.c").read_text()
        f["c"] = exp / "blm_test.c"
        f["lp_c"] = d / "lp.c"
        f["lp_c"].write_text(c.replace("#define BLM_LP 64", "#define BLM_LP 16"))
        f["order_c"] = d / "order.c"
        f["order_c"].write_text(
            re.sub(r"(static const int blm_order\[\d+\] = \{\n    )\d+", r"\g<1>99999999", c)
        )
        f["order_resealed_c"] = d / "order_resealed.c"
        f["order_resealed_c"].write_text(seal_c_source(f["order_c"].read_text()))
        f["meta_c"] = d / "meta.c"
        f["meta_c"].write_text(c.replace('"bands": 200', '"bands": 201'))
        f["bands_resealed_c"] = d / "bands_resealed.c"
        f["bands_resealed_c"].write_text(seal_c_source(f["meta_c"].read_text()))
        f["unsealed_c"] = d / "unsealed.c"
        f["unsealed_c"].write_text(c[: c.rindex("/* BLMKD-SEAL")])
        f["weight_c"] = d / "weight_c.c"
        f["weight_c"].write_text(_first_digit_changed(c, "static const float blm_head_b"))
    # compare: a run whose best.json sidecar was edited after training
    edited = d / "edited_run"
    shutil.copytree(run, edited)
    side = json.loads((edited / "best.json").read_text())
    side["metrics"]["test"]["oa"] = 0.99
    (edited / "best.json").write_text(json.dumps(side))
    f["edited_run"] = edited
    f["empty_dir"] = d / "empty_dir"
    f["empty_dir"].mkdir()
    f["bad_toml"] = d / "targets.toml"
    f["bad_toml"].write_text("[targets.x\nnot toml")
    f["names_short"] = d / "names_short.txt"
    f["names_short"].write_text("only one\n")
    f["names_empty"] = d / "names_empty.txt"
    f["names_empty"].write_text("")
    return f


# (id, argv with {placeholders}, regex the error line must match); the exit code is 2 unless given.
CASES: list[tuple] = [
    # tracebacks in the field, now one line each
    ("export into a read-only folder", ["export", "{ckpt}", "-o", "{ro}"], r"not writable"),
    ("export --out is a file", ["export", "{ckpt}", "-o", "{file}"], r"is a file"),
    ("export --out below a file", ["export", "{ckpt}", "-o", "{file}/sub"], r"is a file"),
    ("bench --report read-only", ["bench", "{onnx}", "--report", "{ro}"], r"--report .* not writable"),
    ("bench --report is a file", ["bench", "{onnx}", "--report", "{file}"], r"--report .* is a file"),
    ("bench first model not ONNX", ["bench", "{text_onnx}", "{trunc_onnx}"], r"not a readable ONNX model"),
    ("bench truncated ONNX", ["bench", "{trunc_onnx}"], r"truncated|not a readable ONNX"),
    ("bench empty ONNX", ["bench", "{empty_onnx}"], r"not an ONNX model|not a readable ONNX"),
    ("bench binary .c", ["bench", "{bin_c}"], r"binary file"),
    ("bench plain .c", ["bench", "{plain_c}"], r"not a blmkd C export"),
    ("bench --threads -3", ["bench", "{onnx}", "--threads", "-3"], r"--threads must be ≥ 1"),
    (
        "train-teacher --device tpu",
        ["train-teacher", "-d", "{crop}", "--device", "tpu", "--out", "{tmp}/t"],
        r"tpu",
    ),
    (
        "train-student --device tpu",
        ["train-student", "--student", "blm_test", "-d", "{crop}", "--device", "tpu", "--out", "{tmp}/t"],
        r"tpu",
    ),
    ("bench --device tpu", ["bench", "{onnx}", "--device", "tpu"], r"--device must be cpu or cuda"),
    (
        "predict --device tpu",
        ["predict", "{ckpt}", "--scene", "{crop}", "--out", "{tmp}/m.npy", "--device", "tpu"],
        r"tpu",
    ),
    ("train --lr nan", ["train-teacher", "--lr", "nan"], r"--lr must be > 0, got nan"),
    ("train --weight-decay -1", ["train-teacher", "--weight-decay", "-1"], r"--weight-decay must be ≥ 0"),
    (
        "resume with another model",
        [
            "train-teacher",
            "--model",
            "ssa_mamba_test",
            "-d",
            "{crop}",
            "--epochs",
            "1",
            "--ema",
            "0",
            "--out",
            "{run}",
            "--resume",
            "--no-progress",
        ],
        r"--resume refused: the run trains model 'blm_test', not 'ssa_mamba_test'",
    ),
    # silent acceptances, now refused
    ("--fill nan", ["split", "{crop}", "--fill", "nan"], r"--fill must be a finite number"),
    ("--patience -1", ["train-teacher", "--patience", "-1"], r"--patience must be ≥ 0"),
    ("--lr-warmup -3", ["train-student", "--lr-warmup", "-3"], r"--lr-warmup must be ≥ 0"),
    (
        "--seeds 0,,1",
        ["train-teacher", "-d", "{crop}", "--seeds", "0,,1", "--out", "{tmp}/s"],
        r"--seeds .* without empty items",
    ),
    ("--seeds ,", ["train-teacher", "-d", "{crop}", "--seeds", ",", "--out", "{tmp}/s"], r"--seeds"),
    ("--seeds empty", ["train-student", "-d", "{crop}", "--seeds", "", "--out", "{tmp}/s"], r"--seeds"),
    (
        "--seeds letters",
        ["train-teacher", "-d", "{crop}", "--seeds", "a,b", "--out", "{tmp}/s"],
        r"--seeds must be comma-separated integers",
    ),
    (
        "--seeds negative",
        ["train-student", "-d", "{crop}", "--seeds", "1,-2", "--out", "{tmp}/s"],
        r"--seeds must be non-negative",
    ),
    (
        "predict --batch 0",
        ["predict", "{ckpt}", "--scene", "{crop}", "--out", "{tmp}/m.npy", "--batch", "0"],
        r"--batch must be ≥ 1",
    ),
    (
        "bench: every artifact refused",
        ["bench", "{order_c}", "--dataset", "{crop}", "--runs", "3", "--batch", "1"],
        r"no artifact could be benchmarked",
    ),
    # tampered artifacts: what changed is named
    (
        "checkpoint preprocessing edited",
        ["evaluate", "{pp_ckpt}"],
        r"preprocessing changed since it was written",
    ),
    ("checkpoint split edited", ["evaluate", "{split_ckpt}"], r"split changed since it was written"),
    ("checkpoint config edited", ["evaluate", "{cfg_ckpt}"], r"model changed since it was written"),
    ("checkpoint seal replaced", ["evaluate", "{seal_ckpt}"], r"not a blmkd seal"),
    ("checkpoint weights flipped", ["evaluate", "{w_ckpt}"], r"weights changed|not a readable"),
    ("checkpoint truncated", ["evaluate", "{trunc_ckpt}"], r"not a readable safetensors"),
    ("checkpoint is text", ["evaluate", "{text_ckpt}"], r"not a readable safetensors"),
    ("checkpoint missing", ["evaluate", "{tmp}/nope.safetensors"], r"not found"),
    ("run folder without best", ["evaluate", "{empty_dir}"], r"without best.safetensors"),
    ("export a tampered checkpoint", ["export", "{pp_ckpt}", "-o", "{tmp}/e1"], r"preprocessing changed"),
    (
        "predict with a tampered checkpoint",
        ["predict", "{split_ckpt}", "--scene", "{crop}", "--out", "{tmp}/m.npy"],
        r"split changed",
    ),
    ("ONNX preprocessing edited", ["bench", "{pp_onnx}"], r"preprocessing changed since it was exported"),
    ("ONNX classes edited", ["bench", "{cls_onnx}"], r"classes changed since it was exported"),
    (
        "ONNX weights edited",
        ["predict", "{w_onnx}", "--scene", "{crop}", "--out", "{tmp}/m.npy"],
        r"graph and weights changed",
    ),
    (
        "ONNX preprocessing edited, predict",
        ["predict", "{pp_onnx}", "--scene", "{crop}", "--out", "{tmp}/m.npy"],
        r"preprocessing changed",
    ),
    (
        "C #define BLM_LP edited",
        ["predict", "{lp_c}", "--scene", "{crop}", "--out", "{tmp}/m.npy"],
        r"code and weights changed",
    ),
    (
        "C blm_order edited",
        ["predict", "{order_c}", "--scene", "{crop}", "--out", "{tmp}/m.npy"],
        r"code and weights changed",
    ),
    (
        "C blm_order edited and resealed",
        ["predict", "{order_resealed_c}", "--scene", "{crop}", "--out", "{tmp}/m.npy"],
        r"scan order is not a permutation",
    ),
    (
        "C metadata edited",
        ["predict", "{meta_c}", "--scene", "{crop}", "--out", "{tmp}/m.npy"],
        r"metadata changed",
    ),
    (
        "C bands edited and resealed",
        ["predict", "{bands_resealed_c}", "--scene", "{crop}", "--out", "{tmp}/m.npy"],
        r"compiled with bands 200 but its metadata says 201",
    ),
    (
        "C seal removed",
        ["predict", "{unsealed_c}", "--scene", "{crop}", "--out", "{tmp}/m.npy"],
        r"no BLMKD-SEAL",
    ),
    (
        "C weight edited",
        ["predict", "{weight_c}", "--scene", "{crop}", "--out", "{tmp}/m.npy"],
        r"code and weights changed",
    ),
    (
        "compare with an edited best.json",
        ["compare", "{edited_run}", "{run}"],
        r"best.json does not match the sealed metadata",
    ),
    # usage and names
    ("unknown command", ["trian"], r"No such command"),
    ("unknown option", ["train-teacher", "--lrr", "1"], r"No such option: --lrr"),
    ("option without value", ["train-teacher", "--lr"], r"requires an argument"),
    ("not a number", ["train-teacher", "--epochs", "ten"], r"--epochs"),
    ("missing argument", ["evaluate"], r"Missing argument"),
    ("predict without --scene", ["predict", "{ckpt}", "--out", "{tmp}/m.npy"], r"Missing option"),
    ("unknown teacher preset", ["train-teacher", "--model", "nope"], r"nope"),
    ("student preset as teacher", ["train-teacher", "--model", "blm_test"], r"student preset"),
    ("teacher preset as student", ["train-student", "--student", "ssa_mamba_test"], r"ssa_mamba_test"),
    ("unknown dataset", ["train-teacher", "-d", "no_such_scene", "--out", "{tmp}/t"], r"no_such_scene"),
    ("missing cube file", ["split", "{tmp}/missing.npy"], r"missing.npy"),
    ("unknown strategy", ["split", "{crop}", "--strategy", "random"], r"random"),
    ("fixed split without maps", ["split", "{crop}", "--strategy", "fixed"], r"map"),
    ("even patch", ["split", "{crop}", "--patch", "4"], r"odd|patch"),
    ("--amp fp8", ["train-teacher", "--amp", "fp8"], r"--amp must be one of"),
    ("--kd-loss bad", ["distill", "-t", "{run}", "--kd-loss", "l2", "--out", "{tmp}/d"], r"kd-loss|l2"),
    (
        "distill from a missing teacher",
        ["distill", "-t", "{tmp}/no_teacher", "--out", "{tmp}/d"],
        r"not found",
    ),
    (
        "distill from a tampered teacher",
        ["distill", "-t", "{pp_ckpt}", "--out", "{tmp}/d"],
        r"preprocessing changed",
    ),
    ("evaluate --set bad", ["evaluate", "{ckpt}", "--set", "all"], r"--set must be test, val or train"),
    ("evaluate --json read-only", ["evaluate", "{ckpt}", "--json", "{ro}/r.json"], r"not writable"),
    ("evaluate --json is a folder", ["evaluate", "{ckpt}", "--json", "{empty_dir}"], r"is a folder"),
    ("compare --metric bad", ["compare", "{run}", "{run}", "--metric", "f1"], r"metric|f1"),
    ("compare missing folder", ["compare", "{tmp}/none_a", "{run}"], r"not found"),
    ("compare folder without runs", ["compare", "{empty_dir}", "{run}"], r"no runs under"),
    ("models --family bad", ["models", "--family", "giant"], r"giant|family"),
    ("datasets info unknown", ["datasets", "info", "no_such_scene"], r"no_such_scene"),
    (
        "export --calibration bad",
        ["export", "{ckpt}", "--int8", "--calibration", "magic", "-o", "{tmp}/e2"],
        r"magic|calibration",
    ),
    (
        "export --trt --target bad",
        ["export", "{ckpt}", "--trt", "--target", "toaster", "-o", "{tmp}/e3"],
        r"toaster",
    ),
    (
        "export existing without --force",
        ["export", "{ckpt}", "--onnx", "-o", "{onnx_dir}"],
        r"already exists",
    ),
    ("export a teacher-less path", ["export", "{tmp}/nothing", "-o", "{tmp}/e4"], r"not found"),
    ("bench --batch 0", ["bench", "{onnx}", "--batch", "0"], r"--batch must be positive"),
    ("bench --batch letters", ["bench", "{onnx}", "--batch", "a,b"], r"--batch must be comma-separated"),
    ("bench --target unknown", ["bench", "{onnx}", "--target", "toaster"], r"toaster"),
    ("bench --targets-file missing", ["bench", "{onnx}", "--targets-file", "{tmp}/none.toml"], r"none.toml"),
    ("bench --targets-file bad TOML", ["bench", "{onnx}", "--targets-file", "{bad_toml}"], r"targets.toml"),
    ("bench unknown artifact type", ["bench", "{file}"], r"unknown artifact type|a_file.txt"),
    ("bench missing model", ["bench", "{tmp}/nope.onnx"], r"not found"),
    (
        "predict --out unknown suffix",
        ["predict", "{ckpt}", "--scene", "{crop}", "--out", "{tmp}/m.bmp"],
        r"\.bmp",
    ),
    (
        "predict --out read-only",
        ["predict", "{ckpt}", "--scene", "{crop}", "--out", "{ro}/m.npy"],
        r"not writable",
    ),
    (
        "predict --mode bad",
        ["predict", "{ckpt}", "--scene", "{crop}", "--out", "{tmp}/m.npy", "--mode", "fast"],
        r"fast|--mode",
    ),
    (
        "predict missing scene",
        ["predict", "{ckpt}", "--scene", "{tmp}/none.npy", "--out", "{tmp}/m.npy"],
        r"none.npy",
    ),
    ("train --out is a file", ["train-teacher", "-d", "{crop}", "--out", "{file}"], r"--out .* is a file"),
    ("train --out read-only", ["train-student", "-d", "{crop}", "--out", "{ro}"], r"--out .* not writable"),
    ("demo --out is a file", ["demo", "--out", "{file}"], r"--out .* is a file"),
    ("--class-names file too short", ["split", "{crop}", "--class-names", "{names_short}"], r"class names"),
    ("--class-names file empty", ["split", "{crop}", "--class-names", "{names_empty}"], r"class names"),
    ("--class-names missing file", ["split", "{crop}", "--class-names", "{tmp}/none.txt"], r"none.txt"),
]

C_ONLY = {"lp_c", "order_c", "order_resealed_c", "meta_c", "bands_resealed_c", "unsealed_c", "weight_c"}

# Arguments that make each command's own required arguments present, so that only the case's
# option is wrong.
BASE = {
    "split": ["split", "{crop}"],
    "models": ["models"],
    "train-teacher": ["train-teacher", "-d", "{crop}", "--out", "{tmp}/t"],
    "evaluate": ["evaluate", "{ckpt}"],
    "distill": ["distill", "-t", "{run}", "--out", "{tmp}/d"],
    "train-student": ["train-student", "-d", "{crop}", "--out", "{tmp}/s"],
    "export": ["export", "{ckpt}", "-o", "{tmp}/e"],
    "bench": ["bench", "{onnx}"],
    "predict": ["predict", "{ckpt}", "--scene", "{crop}", "--out", "{tmp}/m.npy"],
    "demo": ["demo", "--out", "{tmp}/demo"],
    "info": ["datasets", "info", "{crop}"],
    "baseline": ["baseline", "-d", "{crop}", "--out", "{tmp}/b"],
}


def _bad_values(opt: str, kind: type) -> list[str]:
    low, low_open, high, high_open = NUMERIC_BOUNDS[opt]
    vals = []
    if kind is float:
        vals += ["nan", "inf"]
    if low is not None:
        vals.append(str(low) if low_open else str(low - 1 if kind is int else low - 0.5))
    if high is not None:
        vals.append(str(high) if high_open else str(high + 1 if kind is int else high + 0.5))
    return vals


def _numeric_cases() -> list[tuple]:
    return [
        (f"{cmd} {opt} {v}", [*BASE[cmd], opt, v], re.escape(opt) + r" must be")
        for cmd, opt, _, kind in numeric_options(app)
        for v in _bad_values(opt, kind)
    ]


_HAND = {tuple(c[1]) for c in CASES}
ALL_CASES = CASES + [c for c in _numeric_cases() if tuple(c[1]) not in _HAND]


def test_every_numeric_option_has_bounds():
    """A new numeric option cannot slip in unchecked: each needs an entry in NUMERIC_BOUNDS."""
    missing = sorted({f"{cmd} {opt}" for cmd, opt, _, _ in numeric_options(app) if opt not in NUMERIC_BOUNDS})
    assert not missing, missing
    unchecked = sorted(
        {f"{cmd} {opt}" for cmd, opt, info, _ in numeric_options(app) if info.callback is None}
    )
    assert not unchecked, unchecked


def test_enough_distinct_bad_inputs():
    argvs = [tuple(c[1]) for c in ALL_CASES]
    assert len(set(argvs)) == len(argvs), "duplicate cases"
    assert len(ALL_CASES) >= 150, len(ALL_CASES)


@pytest.mark.parametrize("case", ALL_CASES, ids=[c[0] for c in ALL_CASES])
def test_bad_input_is_one_line_error(case, files, capsys, monkeypatch):
    name, argv, pattern, *code = case
    expected = code[0] if code else 2
    needs = set(re.findall(r"\{(\w+)\}", " ".join(argv)))
    if needs & C_ONLY and c_compiler()[0] is None:
        pytest.skip(c_compiler()[1])
    monkeypatch.setenv("BLMKD_NATIVE_DIR", str(files["tmp"] / "native"))
    monkeypatch.delenv("BLMKD_DEBUG", raising=False)
    fmt = {**{k: str(v) for k, v in files.items()}, "onnx_dir": str(files["onnx"].parent)}
    args = [a.format(**fmt) for a in argv]

    def too_slow(*_):  # bad input must be refused before any long work starts
        raise TimeoutError(f"{name}: still running after {SECONDS_PER_CASE} s")

    old = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(SECONDS_PER_CASE)
    try:
        with pytest.raises(SystemExit) as exc:
            main(args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    out, err = capsys.readouterr()
    assert exc.value.code == expected, (name, exc.value.code, err, out[-2000:])
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("note: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), (name, err)
    assert re.search(pattern, lines[0]), (name, lines[0])
    assert "Traceback" not in err + out


def test_debug_shows_the_traceback(files, monkeypatch):
    """BLMKD_DEBUG=1 lets the exception through, with its traceback, for bug reports."""
    from blmkd.errors import BlmkdError

    monkeypatch.setenv("BLMKD_DEBUG", "1")
    with pytest.raises(BlmkdError, match="preprocessing changed"):
        main(["evaluate", str(files["pp_ckpt"])])
