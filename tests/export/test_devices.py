"""Device scripts: trtexec builds with the right flags and shapes, and the bench line (no TensorRT needed)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from blmkd.export.devices import device_script, get_target, trtexec_command


def _script(target: str, precisions=("fp32", "fp16", "int8")) -> str:
    meta = {p: {"precision": p, "onnx": f"blm_s.{p}.onnx"} for p in precisions}
    return device_script(
        get_target(target),
        "blm_s",
        list(precisions),
        "input",
        (200, 7, 7),
        meta,
        header="from best.safetensors",
    )


def test_orin_nano_script_builds_each_precision_with_its_flags():
    s = _script("jetson-orin-nano")
    assert s.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in s
    assert "/usr/src/tensorrt/bin/trtexec" in s  # JetPack's location, overridable with TRTEXEC=
    args = [line.strip(" \\") for line in s.splitlines() if line.startswith("    --")]  # trtexec arguments
    for shape in (
        "--minShapes=input:1x200x7x7",
        "--optShapes=input:1024x200x7x7",
        "--maxShapes=input:4096x200x7x7",
    ):
        assert args.count(shape) == 3
    assert args.count("--memPoolSize=workspace:1024") == 3
    fp16 = s[s.index("blm_s.fp16.engine (fp16)") : s.index("blm_s.int8.engine (int8)")]
    assert "--onnx=blm_s.onnx" in fp16 and "--fp16" in fp16 and "--saveEngine=blm_s.fp16.engine" in fp16
    int8 = s[s.index("blm_s.int8.engine (int8)") :]
    assert (
        "--onnx=blm_s.int8.onnx" in int8
        and "--stronglyTyped" in int8
        and "--int8" not in int8.split("BLMKD_META")[0]
    )
    assert "--noTF32" in s  # the FP32 engine stays FP32 on Ampere-class GPUs
    assert "blmkd bench blm_s.int8.engine" in s and "blmkd bench blm_s.fp16.engine" in s
    assert "cat > blm_s.int8.engine.json" in s  # metadata written only after a successful build


def test_xavier_has_no_strongly_typed_mode_and_uses_int8():
    s = _script("jetson-xavier-nx", ("int8",))
    assert "--int8" in s and "--stronglyTyped" not in s and "--noTF32" not in s
    assert "--maxShapes=input:2048x200x7x7" in s and "TensorRT 8.5" in s


def test_custom_profile_and_workspace():
    cmd = trtexec_command(get_target("x86-cuda"), "m", "fp16", "input", (30, 9, 9), (2, 8, 64), 512)
    assert "--minShapes=input:2x30x9x9" in cmd and "--maxShapes=input:64x30x9x9" in cmd
    assert "--memPoolSize=workspace:512" in cmd and cmd[0] == '"$TRTEXEC"'


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_script_is_valid_bash(tmp_path):
    path = tmp_path / "build.sh"
    path.write_text(_script("jetson-agx-orin"))
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
