"""C exports built for other CPUs (``--c-target``): cross-compiled, run under qemu, checked against PyTorch.

The aarch64 tests need ``aarch64-linux-gnu-gcc`` (Debian ``gcc-aarch64-linux-gnu``,
``libc6-dev-arm64-cross``) and ``qemu-aarch64`` (``qemu-user``); ``.ci/run`` installs them where it
can, and elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blmkd.bundle import bundle_from_checkpoint
from blmkd.errors import ExportError
from blmkd.export import export
from blmkd.export.cross_compile import C_TARGETS, cross_compiler, emulator, get_c_target, run_on_target
from blmkd.inference.c_build import c_compiler, read_c_metadata

AARCH64 = get_c_target("aarch64")
_why = cross_compiler(AARCH64)[1] or emulator(AARCH64)[1]
needs_aarch64 = pytest.mark.skipif(
    c_compiler()[0] is None or cross_compiler(AARCH64)[0] is None or emulator(AARCH64)[0] is None,
    reason=c_compiler()[1] or _why or "toolchain present",
)


@pytest.fixture(autouse=True)
def _native_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("BLMKD_NATIVE_DIR", str(tmp_path_factory.getbasetemp() / "native"))


def _elf_machine(path) -> int:
    """e_machine of an ELF file (183: AArch64, 62: x86-64)."""
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF"
    return int.from_bytes(head[18:20], "little")


@needs_aarch64
def test_aarch64_export_checked_under_qemu(student_ckpt, tmp_path):
    lines: list[str] = []
    arts = export(
        student_ckpt, ["c"], tmp_path, c_target="aarch64", runner=True, eval_size=150, log=lines.append
    )
    names = sorted(a.path.name for a in arts)
    assert names == ["blm_test-aarch64.so", "blm_test.c", "blm_test_runner-aarch64", "blm_test_runner.c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no temporary left behind
    assert _elf_machine(tmp_path / "blm_test-aarch64.so") == 183
    assert _elf_machine(tmp_path / "blm_test_runner-aarch64") == 183
    assert any("built for aarch64" in ln and "run under qemu-aarch64" in ln for ln in lines), lines
    t = read_c_metadata(tmp_path / "blm_test.c")["targets"]["aarch64"]
    assert (
        t["ran"] == "qemu-aarch64" and t["build"] == "matmul=vector vw=4 mr=4"
    )  # NEON: 4 rows of 4 q registers
    assert t["check"]["passed"] and t["check"]["max_abs_diff"] <= 1e-3 and t["check"]["agreement"] == 1.0


@needs_aarch64
@pytest.mark.parametrize("target", ["aarch64", "cortex-a78ae"])
def test_aarch64_logits_equal_pytorch_on_indian_pines(student_ckpt, tmp_path, target):
    """The exported student, cross-compiled, run under qemu on real Indian Pines test patches."""
    (art,) = export(student_ckpt, ["c"], tmp_path, eval_size=16, log=lambda s: None)
    b = bundle_from_checkpoint(student_ckpt)
    rows, cols, _ = b.coords("test")
    x = b.extractor("uint8").gather(rows[:200], cols[:200]).numpy()
    model = student_ckpt.build_model().eval()
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    tr = run_on_target(art.path, target, x)
    assert tr.runner == "qemu-aarch64" and tr.flags[-1] == list(C_TARGETS[target].flags)[-1]
    assert np.abs(tr.logits - ref).max() <= 1e-3
    assert (tr.logits.argmax(1) == ref.argmax(1)).all()


def test_unknown_c_target_is_refused(student_ckpt, tmp_path):
    with pytest.raises(ExportError, match=r"unknown --c-target 'sparc'; known: aarch64, cortex-a78ae"):
        export(student_ckpt, ["c"], tmp_path, c_target="sparc", log=lambda s: None)
    with pytest.raises(
        ExportError, match=r"--c-target does not apply to the requested format\(s\) onnx; it is used by --c"
    ):
        export(student_ckpt, ["onnx"], tmp_path, c_target="aarch64", log=lambda s: None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(c_compiler()[0] is None, reason=c_compiler()[1] or "C compiler present")
def test_missing_cross_compiler_is_a_one_line_error(student_ckpt, tmp_path, monkeypatch):
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cc").symlink_to(shutil.which(c_compiler()[0]))  # a host compiler and nothing else
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CC", raising=False)
    out = tmp_path / "out"
    with pytest.raises(
        ExportError,
        match=r"--c-target: no C compiler for aarch64 \(aarch64-linux-gnu-gcc not found.*apt-get install gcc-aarch64-linux-gnu",
    ):
        export(student_ckpt, ["c"], out, c_target="aarch64", log=lambda s: None)
    assert not out.exists()  # refused before anything was written


@needs_aarch64
def test_cross_compiler_as_cc_is_a_one_line_error_on_the_host(tmp_path, monkeypatch):
    """$CC set to the aarch64 compiler builds a library this machine cannot load: said in one line."""
    import platform

    if platform.machine() == "aarch64":
        pytest.skip("this host is aarch64")
    from blmkd.export.c_export import c_source
    from blmkd.inference.c_build import seal_c_source
    from blmkd.inference.c_runner import CRunner
    from blmkd.students.blm import BLMConfig, BLMStudent

    model = BLMStudent(BLMConfig(bands=20, num_classes=3, enc_hidden=4, d_model=4, d_state=2)).eval()
    src = tmp_path / "m.c"
    src.write_text(
        seal_c_source(c_source(model, 3, {"model": "test", "bands": 20, "patch_size": 3, "num_classes": 3}))
    )
    monkeypatch.setenv("CC", "aarch64-linux-gnu-gcc")
    monkeypatch.setenv("BLMKD_CFLAGS", "-O2 -std=c99")
    with pytest.raises(
        ExportError, match=r"m.c: cannot load the library aarch64-linux-gnu-gcc built .*--c-target"
    ):
        CRunner(src)
