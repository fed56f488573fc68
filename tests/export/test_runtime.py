"""open_artifact: one interface over checkpoints, ONNX files and TensorRT engines."""

from __future__ import annotations

import numpy as np
import pytest

from blmkd.errors import ExportError, ModelError
from blmkd.inference.artifacts import open_artifact
from blmkd.inference.tensorrt_runner import tensorrt_status


def test_checkpoint_runner_matches_onnx(student_ckpt, student_exports, bundle):
    arts, _ = student_exports
    rows, cols, _ = bundle.coords("test")
    x = bundle.extractor("uint8").gather(rows[:16], cols[:16]).numpy()
    pt, ox = open_artifact(student_ckpt.path), open_artifact(arts["onnx"].path)
    assert pt.backend == "pytorch" and ox.backend == "onnxruntime"
    assert pt.input_kind == ox.input_kind == "uint8"
    assert np.abs(pt.run(x) - ox.run(x)).max() <= 1e-3
    assert pt.meta["classes"] == ox.meta["classes"] and pt.meta["preprocessing"] == ox.meta["preprocessing"]
    assert pt.size_bytes == student_ckpt.path.stat().st_size and ox.name == "blm_test.onnx"
    assert open_artifact(student_ckpt.path.parent).name == "best.safetensors"  # a run directory
    with pytest.raises(ModelError, match="takes uint8 byte patches"):
        ox.run(x.astype(np.float32))


def test_unknown_or_missing_artifacts(tmp_path):
    (tmp_path / "model.tflite").write_bytes(b"x")
    with pytest.raises(ExportError, match="unknown artifact type '.tflite'"):
        open_artifact(tmp_path / "model.tflite")
    with pytest.raises(ExportError, match="artifact not found"):
        open_artifact(tmp_path / "nope.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(ExportError, match="not a readable ONNX model"):
        open_artifact(tmp_path / "bad.onnx")


@pytest.mark.skipif(tensorrt_status()[0], reason="TensorRT and a GPU are present")
def test_engine_without_tensorrt_says_why(tmp_path):
    (tmp_path / "m.engine").write_bytes(b"x")
    with pytest.raises(ExportError, match="cannot run m.engine: (TensorRT is not installed|.*no CUDA GPU)"):
        open_artifact(tmp_path / "m.engine")
