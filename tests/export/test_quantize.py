"""INT8 calibration reads training patches only, and refuses to run without them."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest

from blmkd.errors import ExportError
from blmkd.export import export
from blmkd.export.quantize import PatchReader, calibration_coords


def test_calibration_uses_training_pixels_only(bundle):
    rows, cols = calibration_coords(bundle, 10_000)
    train, test = bundle.split.train, bundle.split.test
    assert len(rows) == int(train.sum()) and train[rows, cols].all() and not test[rows, cols].any()
    sub = calibration_coords(bundle, 50, seed=1)
    assert len(sub[0]) == 50 and train[sub].all()


def test_reader_feeds_equal_batches(bundle):
    rows, cols = calibration_coords(bundle, 10_000)
    reader = PatchReader(bundle.extractor("uint8"), rows, cols, "input", batch_size=64)
    shapes = []
    while (b := reader.get_next()) is not None:
        assert b["input"].dtype == np.uint8
        shapes.append(b["input"].shape)
    assert len(set(shapes)) == 1 and len(rows) - len(reader) < len(shapes)  # histogram calibrators stack them
    reader.rewind()
    assert reader.get_next() is not None


def test_no_training_pixels_is_an_error(bundle, student_ckpt, tmp_path, monkeypatch):
    empty = copy.copy(bundle)
    empty.split = SimpleNamespace(
        train=np.zeros_like(bundle.split.train), val=bundle.split.val, test=bundle.split.test
    )
    with pytest.raises(ExportError, match="needs training pixels"):
        calibration_coords(empty, 100)
    monkeypatch.setattr("blmkd.export.exporter.bundle_from_checkpoint", lambda ck, overrides=None: empty)
    with pytest.raises(ExportError, match="INT8 calibration needs training pixels"):
        export(student_ckpt, ["onnx-int8"], tmp_path, eval_size=32, log=lambda s: None)
    assert list(tmp_path.glob("*.onnx")) == []


def test_calib_size_zero_is_refused_before_any_work(student_ckpt, tmp_path):
    with pytest.raises(ExportError, match="--calib-size must be at least 1"):
        export(student_ckpt, ["onnx-int8"], tmp_path, calib_size=0)
    with pytest.raises(ExportError, match="at least one patch"):
        calibration_coords(None, 0)


def _optimized_ops(path, tmp_path) -> list[str]:
    """Op types of the graph ONNX Runtime actually runs (after its fusions), one CPU thread."""
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]


def test_byte_input_int8_feeds_the_raw_bytes_to_an_integer_gemm(student_exports, tmp_path):
    import onnx
    from onnx import TensorProto, numpy_helper

    arts, lines = student_exports
    art = arts["onnx-int8-byte"]
    m = onnx.load(str(art.path))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    (inp,) = m.graph.input
    assert inp.type.tensor_type.elem_type == TensorProto.UINT8
    assert not any(n.op_type == "Cast" for n in m.graph.node)  # no uint8 → float copy of the input
    dq = [n for n in m.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) == 2
    x_dq = next(n for n in dq if inits[n.input[1]].ndim == 0)
    assert (
        inits[x_dq.input[1]] == 1.0 and inits[x_dq.input[2]] == 0 and inits[x_dq.input[2]].dtype == np.uint8
    )
    w_dq = next(n for n in dq if n is not x_dq)
    wq = inits[w_dq.input[0]]
    assert (
        wq.dtype == np.int8 and np.abs(wq).max() == 63
    )  # 7-bit range, the largest weight of a channel at ±63
    assert inits[w_dq.input[1]].shape == (wq.shape[1],)  # one scale per output channel
    ops = _optimized_ops(art.path, tmp_path)
    assert "MatMulIntegerToFloat" in ops and "Cast" not in ops
    assert art.check.passed and art.check.agreement >= 0.98
    assert any(line.startswith("onnx-int8-byte:") and "argmax agreement" in line for line in lines)
    # `blmkd bench` tells the two INT8 files apart.
    from blmkd.bench.jobs import Job, format_label
    from blmkd.inference.artifacts import open_artifact

    labels = [
        format_label(open_artifact(arts[f].path), Job(arts[f].path, "onnx", "cpu"))
        for f in ("onnx-int8", "onnx-int8-byte")
    ]
    assert labels == ["ONNX INT8", "ONNX INT8 byte-input"]


def test_byte_input_int8_equals_fp32_with_the_rounded_weights(student_exports, bundle):
    """The rewrite changes nothing but the first layer's weights: the FP32 graph given the same
    rounded weights gives the same logits."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from blmkd.export.quantize import quantize_byte_input

    arts, _ = student_exports
    fp32 = onnx.load(str(arts["onnx"].path))
    q, record = quantize_byte_input(fp32)
    assert record["calibration"] == "none" and len(record["quantized_nodes"]) == 1
    qi = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    mm = next(n for n in fp32.graph.node if n.name == record["quantized_nodes"][0])
    w_name = mm.input[1]
    p = f"{w_name}_byte_input"
    rounded = qi[f"{p}_wq"].astype(np.float32) * qi[f"{p}_w_scale"]
    w = next(t for t in fp32.graph.initializer if t.name == w_name)
    assert np.abs(rounded - numpy_helper.to_array(w)).max() > 0  # the weights were rounded ...
    w.CopyFrom(numpy_helper.from_array(rounded, w_name))
    rows, cols, _ = bundle.coords("test")
    x = bundle.extractor("uint8").gather(rows[:64], cols[:64]).numpy()

    def run(model):
        s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return s.run(None, {s.get_inputs()[0].name: x})[0]

    assert np.abs(run(q) - run(fp32)).max() < 1e-3  # ... and nothing else changed


def test_byte_input_int8_refuses_float_input_models(teacher_ckpt, tmp_path):
    with pytest.raises(ExportError, match="needs a model with a uint8 input; 'input' is float") as err:
        export(teacher_ckpt, ["onnx-int8-byte"], tmp_path, eval_size=16, log=lambda s: None)
    assert "\n" not in str(err.value) and list(tmp_path.glob("*.onnx")) == []
