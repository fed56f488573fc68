"""INT8 quantization: static QDQ calibrated on training patches, and the byte-input form.

Two INT8 files can be made from an FP32 graph. :func:`quantize_int8` (``--int8``) quantizes every
weight-bearing layer that stays accurate in 8 bits, as described below; it is the file TensorRT
builds INT8 engines from. :func:`quantize_byte_input` (``--int8-byte``, byte students only) quantizes
just the first layer, whose activations are the input bytes themselves, and leaves the rest in FP32:
no calibration and no extra nodes, for CPUs at small batches.

The FP32 graph goes through ``quant_pre_process`` (symbolic shape inference and ORT's graph
optimizations, so that the calibrator sees fused ops) and ``quantize_static`` with a
:class:`PatchReader` over TRAINING-split patches: the test pixels never touch the model before
they are used to judge it. The format is QDQ (QuantizeLinear/DequantizeLinear pairs around float
ops), which ONNX Runtime fuses into integer kernels on CPU and TensorRT reads as explicit
quantization.

What is quantized, and why:

* ``Conv``, ``Gemm`` and the ``MatMul`` nodes whose second operand (B) is a weight: the byte
  encoder, the projections written as ``x @ Wᵀ`` and the head. They hold most multiply-adds, and
  weights per output channel plus one activation scale per tensor represent them well.
* NOT the selective scan. Its ``Softplus`` (Δ), ``CumSum`` of log-decays, ``Exp`` of their
  differences and the activation-by-activation matmuls (``C·Bᵀ`` and ``(M ⊙ C·Bᵀ)·(Δ·x)``) stay in
  float: the decays span orders of magnitude (``exp(S_t − S_s)`` from 1 down to ~0) and one scale
  per tensor would round the long-range ones to zero, the cumulative sums lose their precision in
  any 8-bit grid, and these ops are a small share of the FLOPs. Measured on a trained ``blm_s``
  student: quantizing the ``(M ⊙ C·Bᵀ)·(Δ·x)`` matmul alone cost 6 OA points.
* NOT the projection that reads the scan's output (``out_proj``, found as the first weight-bearing
  node after the ``CumSum``): ``y = Σ_s exp(S_t − S_s)(C_t·B_s)Δ_s x_s``, gated, is heavy-tailed, and
  one activation scale per tensor cost 0.7 OA points on the trained ``blm_s``; in float the INT8
  model matched FP32 (−0.06 pp drop, 99.7% agreement).
* NOT a ``MatMul`` whose weight is the first operand (``W @ x``): ONNX Runtime's integer matmul
  kernels and TensorRT take per-channel weight scales only on B's output axis, so such a node would
  run as dequantize + float matmul, paying the Q/DQ cost for no integer kernel.

``quantize_static``'s own ``MatMulConstBOnly`` option is not honoured by its QDQ path, so the nodes
are chosen here (:func:`quantizable_nodes`) on the pre-processed graph and passed explicitly.

Activations and weights are symmetric signed int8 (zero point 0). That is what TensorRT's explicit
quantization accepts, so one INT8 file serves ONNX Runtime and TensorRT. Weights use 7 of the 8
bits (ORT's ``reduce_range``): on x86 CPUs without VNNI (AVX2 only, e.g. AMD Zen 3) ONNX Runtime's
int8 GEMM multiplies with ``VPMADDUBSW``, whose int16 sums of two u8·s8 products saturate once they
pass 32,767; a byte input (0..255) times a full-range weight (±127) does. Measured on an AVX2-only
EPYC (Zen 3): a trained ``blm_s`` with 8-bit weights agreed with FP32 on 67.8% of 2,048 test
patches (its byte encoder's first MatMul alone quantized: 68.5%), so the export check refused it;
with 7-bit weights 99.8%. On VNNI
CPUs and TensorRT the 7-bit grid costs a little resolution and nothing else, and a file exported on
one machine stays correct on the other. The default calibrator is
``percentile`` (99.999th): before ``out_proj`` was kept in float it lost 0.6 pp on the trained
student where MinMax and Entropy, stretched by a few outlier activations, lost 3.2 pp.
"""

from __future__ import annotations

import contextlib
import copy
import io
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from blmkd.errors import ExportError

# Quantized op types: the weight-bearing layers (see the module docstring for what stays float).
OP_TYPES_TO_QUANTIZE = ("Conv", "MatMul", "Gemm")


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name → the nodes that read it."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return consumers


def _scan_output_projections(model: onnx.ModelProto, weights: set[str]) -> set[str]:
    """The first weight-bearing node on every path out of a ``CumSum`` (the scan's output projection)."""
    consumers = _consumers(model.graph)
    found: set[str] = set()
    seen: set[str] = set()
    frontier = [n for n in model.graph.node if n.op_type == "CumSum"]
    while frontier:
        n = frontier.pop()
        for o in n.output:
            for c in consumers.get(o, []):
                if c.name in seen:
                    continue
                seen.add(c.name)
                if c.op_type in OP_TYPES_TO_QUANTIZE and any(i in weights for i in c.input):
                    found.add(c.name)  # stop here: what follows reads the projected features
                else:
                    frontier.append(c)
    return found


def quantizable_nodes(model: onnx.ModelProto) -> tuple[list[str], dict[str, str]]:
    """Names of the nodes to quantize, and why each other candidate is left in float."""
    weights = {i.name for i in model.graph.initializer}
    weights |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    scan_out = _scan_output_projections(model, weights)
    chosen, skipped = [], {}
    for n in model.graph.node:
        if n.op_type not in OP_TYPES_TO_QUANTIZE:
            continue
        a_const = n.input[0] in weights
        b_const = len(n.input) > 1 and n.input[1] in weights
        if n.name in scan_out:
            skipped[n.name] = "reads the selective scan's output (heavy-tailed)"
        elif n.op_type != "MatMul" or (b_const and not a_const):
            chosen.append(n.name)
        elif a_const:
            skipped[n.name] = "weight is operand A (no per-channel integer kernel)"
        else:
            skipped[n.name] = "activation x activation (selective scan)"
    return chosen, skipped


_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def calibration_coords(bundle, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of up to ``size`` training pixels: a seeded uniform sample of the training
    split (which is itself stratified per class). Test pixels are never used for calibration.

    Raises:
        ExportError: ``size`` < 1, or the split has no training pixels.
    """
    if size < 1:
        raise ExportError(f"INT8 calibration needs at least one patch (calibration size {size})")
    rows, cols, _ = bundle.coords("train")
    if len(rows) == 0:
        raise ExportError("INT8 calibration needs training pixels, and the split has none")
    if len(rows) > size:
        pick = np.sort(np.random.default_rng(seed).choice(len(rows), size, replace=False))
        rows, cols = rows[pick], cols[pick]
    return rows, cols


class PatchReader(CalibrationDataReader):
    """``CalibrationDataReader`` that feeds patches from an extractor in batches.

    Args:
        extractor: a :class:`blmkd.data.patches.PatchExtractor` (uint8 for students, float for teachers).
        rows, cols: the pixels to feed (training pixels: see :func:`calibration_coords`).
        input_name: the graph's input name.
        batch_size: patches per ``get_next``.
    """

    def __init__(self, extractor, rows, cols, input_name: str, batch_size: int = 128):
        rows, cols = np.asarray(rows), np.asarray(cols)
        # ORT's histogram calibrators (entropy, percentile) stack the batches, so they must all have
        # one size: split into ceil(N / batch_size) equal batches and drop the < n_batches leftover.
        n_batches = max(1, -(-len(rows) // batch_size))
        self.batch_size = max(1, len(rows) // n_batches)
        keep = self.batch_size * n_batches if len(rows) else 0
        self.extractor, self.rows, self.cols = extractor, rows[:keep], cols[:keep]
        self.input_name = input_name
        self._it: Iterator | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(0, len(self.rows), self.batch_size):
            x = self.extractor.gather(self.rows[i : i + self.batch_size], self.cols[i : i + self.batch_size])
            yield {self.input_name: x.numpy()}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._it is None:
            self._it = self._batches()
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = None


def quantize_int8(
    model: onnx.ModelProto,
    reader: PatchReader,
    method: str = "percentile",
    *,
    per_channel: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[onnx.ModelProto, dict]:
    """Static QDQ INT8 copy of an FP32 model.

    Args:
        model: the FP32 model.
        reader: calibration patches (training split).
        method: ``minmax``, ``entropy`` or ``percentile`` (ORT's calibrators).
        per_channel: one weight scale per output channel.

    Returns:
        The quantized model and a JSON-ready record of how it was quantized.
    """
    if method not in _METHODS:
        raise ExportError(f"unknown calibration {method!r}; known: {', '.join(_METHODS)}")
    if len(reader) == 0:
        raise ExportError("INT8 calibration needs at least one patch, got none")
    with tempfile.TemporaryDirectory(prefix="blmkd-int8-") as tmp:
        src, pre, out = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        onnx.save(model, src)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        except Exception as exc:  # shape inference can fail on exotic graphs; quantize the raw one then
            log(f"warning: quant_pre_process failed ({type(exc).__name__}: {exc}); quantizing without it")
            pre = src
        chosen, skipped = quantizable_nodes(onnx.load(str(pre)))
        if not chosen:
            raise ExportError("the graph has no Conv/Gemm/MatMul-with-weights node to quantize")
        with contextlib.redirect_stdout(io.StringIO()):  # ORT's calibrators print progress lines
            quantize_static(
                str(pre),
                str(out),
                reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(OP_TYPES_TO_QUANTIZE),
                nodes_to_quantize=chosen,
                per_channel=per_channel,
                reduce_range=True,  # 7-bit weights: no int16 saturation on non-VNNI x86 (module docstring)
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, _METHODS[method]),
                extra_options={
                    "ActivationSymmetric": True,  # zero point 0: TensorRT's explicit quantization needs it
                    "WeightSymmetric": True,
                },
            )
        q = onnx.load(str(out))
    n_q = sum(n.op_type == "QuantizeLinear" for n in q.graph.node)
    if n_q == 0:
        raise ExportError("quantize_static inserted no QuantizeLinear node; nothing was quantized")
    record = {
        "method": method,
        "calibration_patches": len(reader),
        "calibration_split": "train",
        "per_channel": per_channel,
        "format": "QDQ",
        "activations": "int8 symmetric",
        "weights": "int8 symmetric, 7-bit range" + (", per channel" if per_channel else ""),
        "op_types": list(OP_TYPES_TO_QUANTIZE),
        "quantized_nodes": chosen,
        "float_nodes": skipped,
        "quantize_linear_nodes": n_q,
    }
    return q, record


# Ops that only move or view the bytes on their way to the first layer: valid on uint8 tensors.
_LAYOUT_OPS = ("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze")

#: Weight range of :func:`quantize_byte_input`: 7 bits, for the saturation reason in the module
#: docstring (bytes up to 255 times weights up to ±63 never overflow ``VPMADDUBSW``'s int16 sums).
BYTE_INPUT_WEIGHT_BITS = 7


def quantize_byte_input(
    model: onnx.ModelProto, bits: int = BYTE_INPUT_WEIGHT_BITS
) -> tuple[onnx.ModelProto, dict]:
    """INT8 copy of a byte-input model in which the raw input bytes feed an integer GEMM.

    A byte student's first layer reads ``Cast(uint8 → float)`` of its input (the per-band
    dequantization is folded into that layer's weights). Here the bytes themselves are the integer
    activations, exactly (``DequantizeLinear`` with scale 1 and zero point 0: no calibration, no
    rounding of the input), and the layer's weight is int8 with one scale per output channel; all
    later layers stay FP32. ONNX Runtime fuses the pattern into ``MatMulIntegerToFloat`` (u8·s8 →
    int32 → float, bias and scales applied in the kernel), so the file has fewer nodes than the
    FP32 one and no ``Cast``: the cheapest form of the student's largest layer at batch 1, where the
    static QDQ graph's extra quantize/dequantize nodes cost more than its integer kernels save.
    Standard ONNX ops only; TensorRT's explicit quantization takes int8 Q/DQ, not a uint8 input,
    so engines are built from :func:`quantize_int8`'s file instead.

    Args:
        model: the FP32 graph of a model with one uint8 input.
        bits: weight range, ``2..8`` (``±(2^(bits-1) − 1)``).

    Returns:
        The rewritten model and a JSON-ready record of what was quantized.

    Raises:
        ExportError: the input is not uint8, or it does not reach a MatMul with a constant 2-D
            weight through a single ``Cast`` and layout-only ops.
    """
    if not 2 <= bits <= 8:
        raise ExportError(f"weight bits must be in 2..8, got {bits}")
    m = copy.deepcopy(model)
    g = m.graph
    x = g.input[0]
    if x.type.tensor_type.elem_type != TensorProto.UINT8:
        raise ExportError(
            f"INT8 byte-input export needs a model with a uint8 input; {x.name!r} is "
            f"{TensorProto.DataType.Name(x.type.tensor_type.elem_type).lower()} (use --int8 for float-input models)"
        )
    inits = {t.name: t for t in g.initializer}
    consumers = _consumers(g)

    def only_consumer(name: str) -> onnx.NodeProto:
        cs = consumers.get(name, [])
        if len(cs) != 1:
            raise ExportError(
                f"the byte input feeds {len(cs)} nodes at {name!r}; INT8 byte-input export needs one path to the first layer"
            )
        return cs[0]

    cast = only_consumer(x.name)
    if cast.op_type != "Cast":
        raise ExportError(
            f"the uint8 input feeds a {cast.op_type}, not a Cast to float; cannot find the first layer"
        )
    chain, cur = [], cast.output[0]
    while (n := only_consumer(cur)).op_type in _LAYOUT_OPS and n.input[0] == cur:
        chain.append(n)
        cur = n.output[0]
    if (
        n.op_type != "MatMul"
        or n.input[0] != cur
        or n.input[1] not in inits
        or len(inits[n.input[1]].dims) != 2
    ):
        raise ExportError(
            f"the byte input reaches {n.op_type} {n.name!r} before a MatMul with a 2-D weight; nothing to quantize"
        )
    matmul, w_name = n, n.input[1]

    w = numpy_helper.to_array(inits[w_name]).astype(np.float64)  # (K, N)
    qmax = 2 ** (bits - 1) - 1
    scale = np.abs(w).max(axis=0) / qmax  # (N,) one per output channel
    scale[scale == 0] = 1.0
    wq = np.clip(np.round(w / scale), -qmax, qmax).astype(np.int8)  # (K, N)

    # Rewire: input → layout ops (now on bytes) → DequantizeLinear(scale 1) → MatMul(·, DQ(wq)).
    u8 = x.name
    if chain:
        chain[0].input[0] = x.name
        u8 = chain[-1].output[0] = f"{cur}_uint8"
    p = f"{w_name}_byte_input"
    dq_x = helper.make_node(
        "DequantizeLinear", [u8, f"{p}_x_scale", f"{p}_x_zero_point"], [cur], name=f"{p}_dq_x"
    )
    dq_w = helper.make_node(
        "DequantizeLinear",
        [f"{p}_wq", f"{p}_w_scale", f"{p}_w_zero_point"],
        [f"{p}_w"],
        name=f"{p}_dq_w",
        axis=1,
    )
    matmul.input[1] = f"{p}_w"
    g.initializer.extend([
        numpy_helper.from_array(np.array(1.0, np.float32), f"{p}_x_scale"),
        numpy_helper.from_array(np.array(0, np.uint8), f"{p}_x_zero_point"),
        numpy_helper.from_array(wq, f"{p}_wq"),
        numpy_helper.from_array(scale.astype(np.float32), f"{p}_w_scale"),
        numpy_helper.from_array(np.zeros(wq.shape[1], np.int8), f"{p}_w_zero_point"),
    ])  # fmt: skip
    if len(consumers.get(w_name, [])) == 1:
        g.initializer.remove(inits[w_name])
    nodes = [nd for nd in g.node if nd is not cast]
    at = nodes.index(matmul)
    nodes[at:at] = [dq_w, dq_x]
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]  # the layout ops' outputs are uint8 now; re-inferred
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    record = {
        "format": "QDQ, byte input",
        "quantized_nodes": [matmul.name],
        "activations": "the uint8 input bytes, exact (scale 1, zero point 0)",
        "weights": f"int8 symmetric, {bits}-bit range, per output channel",
        "calibration": "none",
        "float_nodes": "all others",
    }
    return m, record
