"""TensorRT: `--trt` without TensorRT writes ONNX + device script; engines build where TensorRT and a GPU exist."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blmkd.errors import ExportError
from blmkd.export import export
from blmkd.inference.artifacts import open_artifact
from blmkd.inference.tensorrt_runner import tensorrt_status

HAVE_TRT, TRT_REASON = tensorrt_status()


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT and a GPU are present: the engine would be built")
def test_trt_without_tensorrt_writes_onnx_and_script(student_ckpt, tmp_path):
    lines: list[str] = []
    arts = export(student_ckpt, ["trt"], tmp_path, target="jetson-orin-nano", eval_size=64, log=lines.append)
    assert [(a.format, a.kind) for a in arts] == [("onnx", "onnx"), ("trt", "script")]
    script = tmp_path / "build_jetson-orin-nano.sh"
    assert script.stat().st_mode & 0o111 and "--saveEngine=blm_test.fp32.engine" in script.read_text()
    assert any("engine not built here" in line and "build_jetson-orin-nano.sh" in line for line in lines)
    assert not list(tmp_path.glob("*.engine"))


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT and a GPU are present: the engine would be built")
def test_build_engine_demanded_without_tensorrt_fails(student_ckpt, tmp_path):
    with pytest.raises(ExportError, match="TensorRT engine not built here") as err:
        export(
            student_ckpt, ["onnx-int8", "trt"], tmp_path, build_engine=True, eval_size=64, log=lambda s: None
        )
    assert "\n" not in str(err.value)
    assert (tmp_path / "blm_test.int8.onnx").exists() and (tmp_path / "build_x86-cuda.sh").exists()


@pytest.mark.trt
@pytest.mark.cuda
@pytest.mark.skipif(not HAVE_TRT, reason=TRT_REASON)
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_builds_and_matches_pytorch(student_ckpt, bundle, tmp_path, precision):
    fmt = {"fp32": "onnx", "fp16": "onnx-fp16", "int8": "onnx-int8"}[precision]
    arts = export(
        student_ckpt, [fmt, "trt"], tmp_path, target="x86-cuda", batch_profile=(1, 64, 512), log=print
    )
    (engine,) = [a for a in arts if a.kind == "engine"]
    assert engine.path.name == f"blm_test.{precision}.engine" and engine.check.passed
    info = json.loads((tmp_path / f"blm_test.{precision}.engine.json").read_text())
    assert info["precision"] == precision and info["batch_profile"] == {"min": 1, "opt": 64, "max": 512}
    r = open_artifact(engine.path)
    rows, cols, _ = bundle.coords("test")
    x = bundle.extractor("uint8").gather(rows[:600], cols[:600]).numpy()  # above max batch: chunked
    assert r.run(x).shape == (600, 16) and r.meta["classes"][0]["name"] == "Alfalfa"
    assert np.isfinite(r.run(x[:1])).all()
