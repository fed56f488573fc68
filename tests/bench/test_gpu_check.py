"""``benchmarks/gpu_check.py --smoke --device cpu``: the GPU check's every part, tiny, on the CPU.

The GPU check is run by hand whenever a CUDA GPU is at hand; this keeps each code path it calls
(the CLI's --device/--amp training, distillation, export, the map path, bench) exercised on every
commit, so the script cannot rot in between.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(ROOT / "benchmarks"))
from seed_reference import seed_file  # noqa: E402


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_part_on_the_cpu(tmp_path):
    parts = ["cuda_tests", "teacher_infer", "teacher_train", "distill", "student", "bench_cli"]
    if not seed_file().exists():
        parts.remove("teacher_infer")  # the paper's reference code is read from the seed text beside the repo
    p = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--device", "cpu", "--out", str(tmp_path), "--parts", ",".join(parts)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    failed = {k: v.get("error") for k, v in report["parts"].items() if v["status"] != "ok"}
    assert p.returncode == 0 and not failed, (failed, p.stdout[-2000:])
    assert list(report["parts"]) == parts
    f = {k: v["figures"] for k, v in report["parts"].items()}
    if "teacher_infer" in f:  # the same network as the paper's code, weights mapped across
        assert f["teacher_infer"]["max_abs_dlogit_fp32_vs_seed"] < 1e-4
    assert f["teacher_train"]["best_bf16_patches_per_s"] > 0
    assert f["distill"]["teacher_amp"] == f["distill"]["student_amp"] == "bf16"
    assert 0.0 < f["distill"]["student_test_oa"] <= 1.0 and f["distill"]["onnx"]
    assert f["student"]["map"]["crop_agreement_vs_cpu"] == 1.0
    assert f["student"]["indian_pines_map"]["differing_pixels"] == 0
    assert f["bench_cli"]["rows"] and all(r["status"] == "ok" for r in f["bench_cli"]["rows"])
    md = (tmp_path / "gpu_check.md").read_text()
    assert "smoke run" in md and all(f"## {k}" in md for k in parts)
