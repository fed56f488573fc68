"""The C export of byte students: generated source, compiled here, against PyTorch.

Tests that compile are skipped, with the reason, where this machine has no C compiler.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from blmkd.bundle import bundle_from_checkpoint
from blmkd.cli import app
from blmkd.errors import ExportError, ModelError
from blmkd.export import export
from blmkd.export.c_export import c_source, with_metadata
from blmkd.inference.artifacts import open_artifact
from blmkd.inference.c_build import (
    c_compiler,
    check_c_export,
    compile_c,
    native_dir,
    read_c_metadata,
    seal_c_source,
    verify_c_source,
)
from blmkd.inference.c_runner import CRunner
from blmkd.students.blm import BLMConfig, BLMStudent

needs_cc = pytest.mark.skipif(c_compiler()[0] is None, reason=c_compiler()[1] or "C compiler present")
cli = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture(autouse=True)
def _native_cache(tmp_path_factory, monkeypatch):
    """Compiled libraries go to a folder of this test run, not the user's ~/.cache."""
    monkeypatch.setenv("BLMKD_NATIVE_DIR", str(tmp_path_factory.getbasetemp() / "native"))


def _random_student(seed: int, **cfg) -> BLMStudent:
    """A student with every weight moved off its initialisation, and a per-band dequantization."""
    torch.manual_seed(seed)
    m = BLMStudent(BLMConfig(**cfg)).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("A_log"):
                p.add_(0.3 * torch.randn_like(p))
            else:
                p.add_(0.2 * torch.randn_like(p))
        m.set_dequant(torch.rand(m.config.bands) * 0.02 + 0.005, torch.randn(m.config.bands))
    return m


def _meta(model, patch: int, **extra) -> dict:
    return {"model": "test", "bands": model.config.bands, "patch_size": patch,
            "num_classes": model.config.num_classes, **extra}  # fmt: skip


CONFIGS = [
    # name, patch, config: every feature the kernel has a branch or a size for
    ("blm_test sizes", 7, dict(bands=200, num_classes=16, enc_hidden=8, d_model=8, d_state=4, n_heads=2, d_conv=3)),
    ("raster, centre+mean, odd bands", 5, dict(bands=37, num_classes=5, enc_hidden=12, d_model=12, d_state=6,
                                                n_heads=3, pool="center_mean", scan="raster")),
    ("two layers, 4 heads, P 9", 9, dict(bands=64, num_classes=9, enc_hidden=20, d_model=16, d_state=8, n_heads=4,
                                         n_layers=2, d_conv=4)),
    ("blm_t sizes, P 3", 3, dict(bands=30, num_classes=3, enc_hidden=24, d_model=24, d_state=8, n_heads=2)),
    ("centre weight 0.3, P 1", 1, dict(bands=20, num_classes=4, enc_hidden=8, d_model=8, d_state=4, n_heads=2,
                                       centre_weight=0.3)),
    ("centre weight 0.8, P 15", 15, dict(bands=16, num_classes=5, enc_hidden=8, d_model=8, d_state=4, n_heads=2,
                                         centre_weight=0.8)),
]  # fmt: skip


def _small_export(tmp_path, seed: int, name: str = "m.c", edit=lambda s: s, **meta) -> Path:
    """A C file of a random ``blm_test``-sized student for 5×5 patches (``edit`` applied to its text)."""
    model = _random_student(seed, **CONFIGS[0][2])
    src = tmp_path / name
    src.write_text(seal_c_source(edit(c_source(model, 5, _meta(model, 5, **meta)))))
    return src


@needs_cc
@pytest.mark.parametrize("name,patch,cfg", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_c_equals_pytorch(name, patch, cfg, tmp_path):
    model = _random_student(len(name), **cfg)
    src = tmp_path / "m.c"
    src.write_text(seal_c_source(c_source(model, patch, _meta(model, patch))))
    x = torch.randint(0, 256, (130, model.config.bands, patch, patch), dtype=torch.uint8)
    with torch.inference_mode():
        ref = model(x).numpy()
    assert np.abs(ref).max() > 0.5  # logits that a wrong kernel could not match by accident
    r = CRunner(src, threads=2)  # 130 patches: two threads of 65
    out = r.run(x.numpy())
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(r.run(x[:1].numpy()), ref[:1], rtol=1e-4, atol=1e-4)  # batch 1, this thread
    assert (r.bands, r.patch, r.num_classes) == (cfg["bands"], patch, cfg["num_classes"])
    assert r.scan_order == model.scan_order(patch)
    # the whole-scene split: per-pixel features of every pixel, then windows of them in scan order
    n, L = x.shape[0], patch * patch
    feats = r.pixel_features(x.numpy().transpose(0, 2, 3, 1).reshape(n * L, -1))  # (n·L, ·) × 3, raster
    windows = [np.ascontiguousarray(f.reshape(n, L, -1)[:, list(r.scan_order)]) for f in feats]
    np.testing.assert_allclose(r.run_tokens(*windows), ref, rtol=1e-4, atol=1e-4)


BUILDS = [
    # extra -D, what blm_build() must report: the vector-extension matmul (GCC/Clang), its portable
    # C99 loop, and the obvious triple-loop reference, each built for this CPU and for plain AVX2
    ("", r"matmul=vector vw=\d+ mr=\d+"),
    ("-DBLM_PORTABLE", r"matmul=c99 mr=\d+"),
    ("-DBLM_REFERENCE", r"matmul=reference"),
]


@needs_cc
@pytest.mark.parametrize("arch", ["-march=native", "-march=x86-64-v3", ""], ids=["native", "avx2", "generic"])
@pytest.mark.parametrize("define,build", BUILDS, ids=["vector", "portable", "reference"])
def test_every_matmul_path_equals_pytorch(define, build, arch, tmp_path, monkeypatch):
    """The fast paths and their references, on configurations with and without a remainder row block."""
    import platform

    from blmkd.inference.c_build import BASE_CFLAGS

    if arch == "-march=x86-64-v3" and platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86-64-v3 (AVX2) builds need an x86-64 compiler")
    monkeypatch.setenv("BLMKD_CFLAGS", " ".join([*BASE_CFLAGS, arch, define]))
    for name, patch, cfg in (CONFIGS[0], CONFIGS[2]):
        model = _random_student(len(name), **cfg)
        src = tmp_path / f"m{patch}.c"
        src.write_text(seal_c_source(c_source(model, patch, _meta(model, patch))))
        x = torch.randint(0, 256, (20, model.config.bands, patch, patch), dtype=torch.uint8)
        with torch.inference_mode():
            ref = model(x).numpy()
        r = CRunner(src, threads=1)
        assert re.fullmatch(build, r.build) and r.build in r.providers[0]
        if define == "" and arch == "-march=x86-64-v3":
            assert r.build == "matmul=vector vw=8 mr=6"  # AVX2: 6 rows of 2 ymm accumulators
        np.testing.assert_allclose(r.run(x.numpy()), ref, rtol=1e-4, atol=1e-4)
        n, L = x.shape[0], patch * patch
        feats = r.pixel_features(x.numpy().transpose(0, 2, 3, 1).reshape(n * L, -1))
        windows = [np.ascontiguousarray(f.reshape(n, L, -1)[:, list(r.scan_order)]) for f in feats]
        np.testing.assert_allclose(r.run_tokens(*windows), ref, rtol=1e-4, atol=1e-4)


def test_gates_vectorize_under_strict_ieee(tmp_path):
    """GCC vectorizes every loop of the portable kernel without -ffast-math (the reason the exp, log
    and softplus select on bits): none is left 'not vectorized: control flow in loop'."""
    import shutil
    import subprocess

    from blmkd.inference.c_build import BASE_CFLAGS

    gcc = shutil.which("gcc")
    if (
        gcc is None
        or "gcc" not in subprocess.run([gcc, "--version"], capture_output=True, text=True).stdout.lower()
    ):
        pytest.skip("needs GCC (its -fopt-info report)")
    src = _small_export(tmp_path, 6)
    res = subprocess.run([gcc, *BASE_CFLAGS, "-march=x86-64-v3" if _x86() else "-O3", "-fopt-info-vec-all",
                          "-DBLM_PORTABLE", "-c", str(src), "-o", str(tmp_path / "m.o")], capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "loop vectorized" in res.stderr
    assert "control flow in loop" not in res.stderr, [
        ln for ln in res.stderr.splitlines() if "control flow" in ln
    ]


def _x86() -> bool:
    import platform

    return platform.machine() in ("x86_64", "AMD64")


@needs_cc
def test_export_c_checked_against_pytorch(student_ckpt, tmp_path):
    lines: list[str] = []
    (art,) = export(student_ckpt, ["c"], tmp_path, log=lines.append)
    assert art.format == "c" and art.kind == "c" and art.path == tmp_path / "blm_test.c"
    assert art.check.passed and art.check.max_abs_diff < 1e-4 and art.check.agreement == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["blm_test.c"]  # no temporary left behind
    assert any(ln.startswith("c: blm_test.c") and "compiled with" in ln for ln in lines)
    meta = read_c_metadata(art.path)
    assert meta["export_format"] == "c" and meta["precision"] == "fp32"
    assert meta["max_abs_diff"] == pytest.approx(art.check.max_abs_diff)
    assert meta["source_sha256"] and len(meta["classes"]) == 16
    runner = open_artifact(art.path)
    assert isinstance(runner, CRunner)
    b = bundle_from_checkpoint(student_ckpt)
    rows, cols, _ = b.coords("test")
    x = b.extractor("uint8").gather(rows[:50], cols[:50]).numpy()
    np.testing.assert_allclose(runner.run(x), open_artifact(student_ckpt.path).run(x), atol=1e-4)


def test_teacher_has_no_c_export(teacher_ckpt, tmp_path):
    with pytest.raises(ModelError, match="--c covers the byte-latent Mamba students"):
        export(teacher_ckpt, ["c"], tmp_path, log=lambda s: None)
    assert list(tmp_path.iterdir()) == []


def test_no_compiler_is_a_one_line_error(student_ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "blmkd-no-such-compiler")
    with pytest.raises(ExportError, match=r"--c: no C compiler found \(\$CC=blmkd-no-such-compiler\)"):
        export(student_ckpt, ["onnx", "c"], tmp_path, log=lambda s: None)
    assert list(tmp_path.iterdir()) == []  # checked before anything is written


@needs_cc
def test_compile_error_names_the_compiler_line(tmp_path, monkeypatch):
    src = _small_export(tmp_path, 3)
    monkeypatch.setenv("BLMKD_CFLAGS", "-O2 -fblmkd-no-such-flag")
    with pytest.raises(
        ExportError,
        match=r"m.c: the C compiler failed \(\S+ -O2 -fblmkd-no-such-flag\): .*error.*blmkd-no-such-flag",
    ):
        CRunner(src)


@needs_cc
@pytest.mark.parametrize(
    "edit,match",
    [
        (
            lambda s: s.replace(
                "static const float blm_enc1_b", "int evil(void) { return 1; }\nstatic const float blm_enc1_b"
            ),
            r"line \d+ is not generated data \('int evil",
        ),
        (
            lambda s: s.replace("#define BLM_D ", '#define BLM_D system("x") + '),
            r"line \d+ is not generated data",
        ),
        (
            lambda s: s.replace('"model": "test"', '"model": "*/ int x; /*"'),
            r"line 3 is not generated data \(./\* BLMKD-META",
        ),
        (lambda s: s.replace("return 0;", "return 1;"), r"its kernel differs"),
    ],
    ids=["function", "define", "comment end", "kernel"],
)
def test_only_unmodified_exports_compile(tmp_path, edit, match):
    """Running a C export compiles and loads it: code from a file is refused, as pickles are."""
    src = _small_export(tmp_path, 4, "tampered.c", edit)
    with pytest.raises(ExportError, match=match):
        CRunner(src)
    assert not list(native_dir().glob("tampered-*")), "compiled before it was checked"


@needs_cc
def test_library_cached_by_source(tmp_path):
    src = _small_export(tmp_path, 0)
    lib = compile_c(src)
    mtime = lib.stat().st_mtime_ns
    assert compile_c(src) == lib and lib.stat().st_mtime_ns == mtime  # reused, not rebuilt
    src.write_text(seal_c_source(with_metadata(src.read_text(), {"model": "changed"})))
    assert compile_c(src) != lib  # another source, another library


def test_metadata_round_trip_survives_comment_end(tmp_path):
    classes = [{"index": 0, "id": 3, "name": "a */ b"}]
    src = _small_export(tmp_path, 1, classes=classes)
    assert read_c_metadata(src)["classes"] == classes
    check_c_export(
        verify_c_source(src.read_text(), "m.c"), "m.c"
    )  # the escaped "*/" keeps the file data-only
    plain = tmp_path / "plain.c"
    plain.write_text("int main(void) { return 0; }\n")
    with pytest.raises(ExportError, match="not a blmkd C export"):
        read_c_metadata(plain)


@needs_cc
def test_runner_rejects_wrong_inputs(tmp_path):
    r = CRunner(_small_export(tmp_path, 2))
    with pytest.raises(ModelError, match="takes uint8 byte patches"):
        r.run(np.zeros((1, 200, 5, 5), np.float32))
    with pytest.raises(ModelError, match=r"expected patches \(N, 200, 5, 5\)"):
        r.run(np.zeros((1, 200, 7, 7), np.uint8))
    r.meta = {}  # without the metadata's sizes the library's own still guard the buffers
    with pytest.raises(ModelError, match=r"expected patches \(N, 200, 5, 5\)"):
        r.run(np.zeros((1, 200, 7, 7), np.uint8))
    with pytest.raises(ModelError, match=r"expected windows \(2, 25, 16\), got \(2, 25, 8\)"):
        r.run_tokens(*(np.zeros((2, 25, w), np.float32) for w in (8, 8, 16)))
    with pytest.raises(ModelError, match=r"expected pixels \(n, 200\)"):
        r.pixel_features(np.zeros((3, 199), np.uint8))


@needs_cc
def test_stack_is_sized_for_the_kernel(tmp_path):
    r = CRunner(_small_export(tmp_path, 5))
    assert 0 < r.stack_bytes < 1 << 20
    import threading

    before = threading.stack_size()
    with r.thread_stack():
        assert threading.stack_size() >= 2 * r.stack_bytes
    assert threading.stack_size() == before
    big = BLMStudent(BLMConfig(bands=1000, num_classes=2, enc_hidden=4, d_model=4, d_state=2)).eval()
    src = tmp_path / "big.c"
    src.write_text(
        seal_c_source(c_source(big, 31, _meta(big, 31)))
    )  # 961 tokens × 1000 bands of float scratch
    with pytest.raises(ModelError, match=r"needs ~\d+ MiB of stack .* use its ONNX export"):
        CRunner(src)


@needs_cc
def test_cli_export_c_then_bench(student_ckpt, tmp_path):
    out = tmp_path / "exp"
    res = cli.invoke(
        app, ["export", str(student_ckpt.path), "--c", "--onnx", "-o", str(out), "--eval-size", "64"]
    )
    assert res.exit_code == 0, (res.output, res.exception)
    assert sorted(p.name for p in out.iterdir()) == ["blm_test.c", "blm_test.onnx"]
    res = cli.invoke(app, ["bench", str(out / "blm_test.c"), str(out / "blm_test.onnx"), "--runs", "20",
                           "--batch", "1,130", "--report", str(tmp_path / "rep")])  # fmt: skip
    assert res.exit_code == 0, (res.output, res.exception)
    assert "blm_test · C FP32" in res.output
    import json

    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    rows = {r["format"]: r for r in rep["rows"]}
    c, o = rows["C FP32"], rows["ONNX FP32"]
    assert c["status"] == "ok" and c["backend"] == "c"
    assert c["oa"] == pytest.approx(o["oa"]) and c["agreement"] == 1.0
    assert c["map"]["pixels"] == 145 * 145 and c["map"]["px_s"] > 0


def test_bench_on_cuda_skips_c_rows(tmp_path):
    from blmkd.bench.jobs import plan_jobs

    p = tmp_path / "m.c"
    p.write_text("/* BLMKD-META {} */\n")
    (job,) = plan_jobs([p], "cuda")
    assert job.kind == "c" and "runs on the CPU" in job.skip
