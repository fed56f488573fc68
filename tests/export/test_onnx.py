"""ONNX exports (FP32, FP16, INT8) round-trip through ONNX Runtime on real Indian Pines patches."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper

from blmkd.checkpoint import file_sha256
from blmkd.errors import ExportError, ModelError
from blmkd.export import export
from blmkd.inference.artifacts import open_artifact

# Stated tolerances against PyTorch: FP32 logits within 1e-3, FP16 within 0.1, INT8 decisions.
FP32_ATOL, FP16_ATOL, INT8_MIN_AGREEMENT = 1e-3, 0.1, 0.9


def _patches(bundle, input_kind, n=96):
    rows, cols, _ = bundle.coords("test")
    return bundle.extractor(input_kind).gather(rows[:n], cols[:n])


def _torch_logits(ckpt, x):
    with torch.inference_mode():
        return ckpt.build_model()(x).numpy()


@pytest.mark.parametrize("batch", [1, 7, 96])
def test_student_artifacts_round_trip_in_onnxruntime(student_ckpt, student_exports, bundle, batch):
    arts, _ = student_exports
    x = _patches(bundle, "uint8")[:batch]
    ref = _torch_logits(student_ckpt, x)
    fp32, fp16, int8 = (
        open_artifact(arts[k].path).run(x.numpy()) for k in ("onnx", "onnx-fp16", "onnx-int8")
    )
    assert fp32.shape == fp16.shape == int8.shape == (batch, bundle.scene.num_classes)
    assert fp32.dtype == fp16.dtype == int8.dtype == np.float32
    assert np.abs(fp32 - ref).max() <= FP32_ATOL
    assert np.abs(fp16 - ref).max() <= FP16_ATOL
    if batch > 1:
        assert (int8.argmax(1) == ref.argmax(1)).mean() >= INT8_MIN_AGREEMENT


def test_export_reports_every_check(student_exports, bundle):
    arts, lines = student_exports
    for fmt in ("onnx", "onnx-fp16", "onnx-int8"):
        c = arts[fmt].check
        assert (
            c.passed
            and c.pixels == int(bundle.split.test.sum())
            and arts[fmt].size_bytes == arts[fmt].path.stat().st_size
        )
        assert any(
            line.startswith(f"{fmt}:") and "argmax agreement" in line and "max|Δlogit|" in line
            for line in lines
        )
    assert arts["onnx"].check.max_abs_diff <= FP32_ATOL and arts["onnx"].check.agreement == 1.0
    assert arts["onnx-int8"].check.agreement >= INT8_MIN_AGREEMENT


def test_metadata_reads_back(student_ckpt, student_exports, bundle):
    arts, _ = student_exports
    meta = open_artifact(arts["onnx-int8"].path).meta
    ck = student_ckpt.meta
    assert meta["model"] == "blm_test" and meta["family"] == "student" and meta["input_kind"] == "uint8"
    assert meta["bands"] == 200 and meta["patch_size"] == 7 and meta["num_classes"] == 16
    assert meta["classes"][0] == {"index": 0, "id": 1, "name": "Alfalfa"} and len(meta["classes"]) == 16
    assert meta["preprocessing"] == ck["preprocessing"]
    assert meta["source_sha256"] == file_sha256(student_ckpt.path)
    assert meta["checkpoint_test_oa"] == pytest.approx(ck["metrics"]["test"]["oa"])
    assert meta["test_oa"] == pytest.approx(arts["onnx-int8"].check.oa)
    assert meta["precision"] == "int8" and meta["blmkd_version"]
    q = meta["quantization"]
    assert q["calibration_split"] == "train" and q["method"] == "percentile" and q["per_channel"]
    assert 0.9 * bundle.split.train.sum() < q["calibration_patches"] <= bundle.split.train.sum()
    assert open_artifact(arts["onnx"].path).meta["simplified"].startswith("onnxslim")


def test_graph_contract(student_exports):
    arts, _ = student_exports
    for fmt in ("onnx", "onnx-fp16", "onnx-int8"):
        m = onnx.load(str(arts[fmt].path))
        onnx.checker.check_model(m, full_check=True)
        assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
        (inp,) = m.graph.input
        assert inp.type.tensor_type.elem_type == TensorProto.UINT8  # students take bytes
        assert inp.type.tensor_type.shape.dim[0].dim_param  # dynamic batch
        assert m.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
        # TensorRT takes a UINT8 input only straight into a Cast.
        assert all(n.op_type == "Cast" for n in m.graph.node if inp.name in n.input)


def test_fp16_keeps_the_ssm_decays_in_fp32(student_exports):
    arts, _ = student_exports
    m = onnx.shape_inference.infer_shapes(onnx.load(str(arts["onnx-fp16"].path)))
    types = {
        v.name: v.type.tensor_type.elem_type for v in (*m.graph.value_info, *m.graph.input, *m.graph.output)
    }
    cumsums = [n for n in m.graph.node if n.op_type == "CumSum"]
    assert cumsums and all(types[n.input[0]] == TensorProto.FLOAT for n in cumsums)
    halves = [i for i in m.graph.initializer if i.data_type == TensorProto.FLOAT16]
    assert halves, "no FP16 weights"
    # Inside the island, Softplus → … → CumSum → … → Exp, each node reads the FP32 output of the one
    # before it, never an FP16 copy cast back (what a per-node block list in a converter would do).
    island = set(open_artifact(arts["onnx-fp16"].path).meta["fp32_nodes"])
    assert {"Softplus", "CumSum", "Exp"} <= {n.op_type for n in m.graph.node if n.name in island}
    producer = {o: n for n in m.graph.node for o in n.output}

    def computed_by(tensor):
        n = producer.get(tensor)
        while n is not None and n.op_type == "Cast":
            n = producer.get(n.input[0])
        return n

    edges = 0
    for n in m.graph.node:
        if n.name not in island:
            continue
        for i in n.input:
            src = computed_by(i)
            if src is not None and src.name in island:
                assert producer[i] is src, f"{src.name} → {n.name} goes through a Cast"
                assert types[i] == TensorProto.FLOAT
                edges += 1
    assert edges >= len(island) - 1


def test_int8_leaves_the_selective_scan_in_float(student_exports):
    arts, _ = student_exports
    m = onnx.load(str(arts["onnx-int8"].path))
    producer = {o: n for n in m.graph.node for o in n.output}
    for n in m.graph.node:
        if n.op_type in ("CumSum", "Exp", "Softplus"):
            assert all(getattr(producer.get(i), "op_type", None) != "DequantizeLinear" for i in n.input), (
                n.name
            )
    matmuls = [n for n in m.graph.node if n.op_type == "MatMul"]
    dq_fed = [
        n
        for n in matmuls
        if all(getattr(producer.get(i), "op_type", None) == "DequantizeLinear" for i in n.input)
    ]
    assert dq_fed and len(dq_fed) < len(matmuls)  # weight matmuls quantized, the scan's are not
    assert sum(n.op_type == "QuantizeLinear" for n in m.graph.node) > 0


def test_int8_weights_use_seven_bits(student_exports):
    """7-bit weights: ORT's non-VNNI x86 kernels (VPMADDUBSW) sum two u8·s8 products in int16, and
    255·127·2 overflows it; 255·64·2 = 32,640 does not (export/quantize.py)."""
    arts, _ = student_exports
    m = onnx.load(str(arts["onnx-int8"].path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    weights = [
        inits[n.input[0]]
        for n in m.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].dtype == np.int8
    ]
    assert weights, "no int8 weights"
    assert all(np.abs(w.astype(int)).max() <= 64 for w in weights)
    assert max(np.abs(w).max() for w in weights) >= 60  # the 7-bit range is used, not a narrower one
    assert "7-bit" in open_artifact(arts["onnx-int8"].path).meta["quantization"]["weights"]


def test_teacher_round_trips_with_float_input(teacher_ckpt, bundle, tmp_path):
    arts = export(teacher_ckpt, ["onnx", "onnx-fp16"], tmp_path, log=lambda s: None)
    x = _patches(bundle, "float", 32)
    ref = _torch_logits(teacher_ckpt, x)
    for a, atol in zip(arts, (FP32_ATOL, FP16_ATOL)):
        r = open_artifact(a.path)
        assert r.input_kind == "float" and r.meta["family"] == "teacher"
        assert np.abs(r.run(x.numpy()) - ref).max() <= atol
    with pytest.raises(ModelError, match=r"expected patches \(N, 200, 7, 7\), got shape \(32, 3, 7, 7\)"):
        open_artifact(arts[0].path).run(x.numpy()[:, :3])  # wrong bands


def test_tolerance_failure_leaves_no_file(student_ckpt, tmp_path):
    with pytest.raises(
        ExportError, match=r"onnx-fp16 export failed its check.*max\|Δlogit\| <= 0: FAILED"
    ) as err:
        export(student_ckpt, ["onnx-fp16"], tmp_path, atol=0.0, log=lambda s: None)
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def test_perturbed_outputs_fail_the_fp32_check(student_ckpt, tmp_path, monkeypatch):
    from blmkd.inference.onnx_runner import OnnxRunner

    run = OnnxRunner.run
    monkeypatch.setattr(OnnxRunner, "run", lambda self, x: run(self, x) + np.float32(0.01))
    with pytest.raises(ExportError, match="onnx export failed its check"):
        export(student_ckpt, ["onnx"], tmp_path, log=lambda s: None)
    assert not any(p.suffix == ".onnx" or p.name.startswith(".") for p in tmp_path.iterdir())


def test_existing_output_needs_force(student_ckpt, tmp_path):
    (tmp_path / "blm_test.onnx").write_bytes(b"old")
    with pytest.raises(ExportError, match="already exists; pass --force"):
        export(student_ckpt, ["onnx"], tmp_path, eval_size=64, log=lambda s: None)
    assert (tmp_path / "blm_test.onnx").read_bytes() == b"old"
    (art,) = export(student_ckpt, ["onnx"], tmp_path, eval_size=64, force=True, log=lambda s: None)
    assert art.check.pixels == 64 and open_artifact(art.path).meta["model"] == "blm_test"


def test_onnxslim_failure_falls_back_loudly(student_ckpt, tmp_path, monkeypatch):
    import onnxslim

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(onnxslim, "slim", broken)
    lines: list[str] = []
    (art,) = export(student_ckpt, ["onnx"], tmp_path, eval_size=64, log=lines.append)
    assert any("onnxslim failed (RuntimeError: boom)" in line for line in lines)
    assert open_artifact(art.path).meta["simplified"] == "no: RuntimeError: boom"
    assert art.check.passed


def test_unreadable_checkpoint_is_a_model_error(tmp_path):
    bad = tmp_path / "best.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a readable safetensors checkpoint"):
        export(bad, ["onnx"], tmp_path / "out")


def test_uint8_cast_moves_to_the_input():
    import onnxruntime as ort
    from onnx import helper

    from blmkd.export.onnx_export import cast_uint8_inputs_first, uint8_input_feeds_cast

    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [0, -1])
    g = helper.make_graph(
        [
            helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape"),
            helper.make_node("Cast", ["r"], ["f"], to=TensorProto.FLOAT, name="cast"),
            helper.make_node("Mul", ["f", "f"], ["y"], name="mul"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["n", 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 6])],
        [shape],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3) * 20
    before = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    assert not uint8_input_feeds_cast(m) and cast_uint8_inputs_first(m) and uint8_input_feeds_cast(m)
    onnx.checker.check_model(m, full_check=True)
    np.testing.assert_array_equal(ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0], before)
    assert [n.op_type for n in m.graph.node] == ["Cast", "Reshape", "Mul"]
