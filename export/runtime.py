"""Run any blmkd artifact the same way: ``open_artifact(path).run(x) -> logits``.

* ``.safetensors`` checkpoints run in PyTorch (CPU, or CUDA where asked);
* ``.onnx`` files run in ONNX Runtime (the CUDA execution provider where available, else CPU);
* ``.engine`` / ``.plan`` files run in TensorRT (imported lazily; needs a CUDA GPU);
* ``.c`` files (C exports of byte students) are compiled with the system C compiler and called
  through ``ctypes`` (:class:`blmkd.export.c_export.CRunner`).

Every runner carries ``.meta``, the facts the artifact was exported with (classes with their
original ids and names, bands, patch size, preprocessing, input kind, precision, source checkpoint
hash, accuracy at export ...): read from the ONNX ``metadata_props``, the engine's JSON sidecar, the
C file's metadata comment or the checkpoint itself, so that a benchmark or a deployment knows what it is running.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from blmkd.errors import ExportError, ModelError

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan")
CHECKPOINT_SUFFIXES = (".safetensors",)
C_SUFFIXES = (".c",)


def artifact_meta(ck) -> dict[str, Any]:
    """The facts every export of checkpoint ``ck`` carries (see :mod:`blmkd.export.onnx_export`)."""
    from blmkd.checkpoint import file_sha256
    from blmkd.version import __version__

    m = ck.meta
    data = m.get("data", {})
    cfg = m["model"]["config"]
    return {
        "format": "blmkd-export/1",
        "model": ck.model_name,
        "family": m["model"].get("family", "unknown"),
        "input_kind": m["model"].get("input_kind", "float"),
        "bands": int(cfg["bands"]),
        "num_classes": int(cfg["num_classes"]),
        "patch_size": int(data.get("patch_size") or data.get("options", {}).get("patch", 0)),
        "classes": [{"index": c["index"], "id": c["id"], "name": c["name"]} for c in data.get("classes", [])],
        "dataset": str(data.get("name", "")),
        "preprocessing": m.get("preprocessing", {}),
        "split": {k: v for k, v in m.get("split", {}).items() if k != "counts"},
        "checkpoint_test_oa": m.get("metrics", {}).get("test", {}).get("oa"),
        "source_checkpoint": ck.path.name,
        "source_sha256": file_sha256(ck.path),
        "blmkd_version": __version__,
    }


def onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The blmkd metadata of an ONNX file, checked against the file's seal.

    Raises:
        ExportError: not a readable ONNX file, or one whose seal does not hold.
    """
    from blmkd.export.onnx_export import load_verified, read_metadata

    return read_metadata(load_verified(path)[0])


_UNSEALED_NOTED: set[Path] = set()


def _note_unsealed(path: Path) -> None:
    import sys

    if path.resolve() not in _UNSEALED_NOTED:
        _UNSEALED_NOTED.add(path.resolve())
        print(
            f"note: {path.name} carries no blmkd seal; its weights and metadata are not verified",
            file=sys.stderr,
        )


class Runner:
    """Common interface of the runtimes: ``run(x)`` on ``(N, bands, P, P)`` patches → ``(N, K)`` FP32 logits."""

    name: str
    path: Path
    input_kind: str  # "uint8" (students) or "float" (teachers)
    meta: dict
    backend: str

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def _prepare(self, x) -> np.ndarray:
        x = np.asarray(x)
        want = (self.meta.get("bands"), self.meta.get("patch_size"), self.meta.get("patch_size"))
        if x.ndim != 4 or (None not in want and tuple(x.shape[1:]) != want):
            shape = "(N, {}, {}, {})".format(*want) if None not in want else "(N, bands, P, P)"
            raise ModelError(f"{self.name}: expected patches {shape}, got shape {tuple(x.shape)}")
        if self.input_kind == "uint8":
            if x.dtype != np.uint8:
                raise ModelError(f"{self.name} takes uint8 byte patches, got {x.dtype}")
        else:
            x = x.astype(np.float32, copy=False)
        return np.ascontiguousarray(x)

    def run(self, x) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path.name}, {self.backend}, input {self.input_kind})"


class TorchRunner(Runner):
    """A checkpoint in PyTorch (the reference every export is checked against)."""

    backend = "pytorch"

    def __init__(self, path: str | Path, device: str = "cpu", cuda_graphs: bool = True):
        import torch

        from blmkd.checkpoint import load_checkpoint

        ck = load_checkpoint(path)
        self.path, self.name = ck.path, ck.path.name
        self.device = torch.device(device)
        self.model = ck.build_model().to(self.device).eval()
        self.input_kind = getattr(self.model, "input_kind", "float")
        self.meta = {**artifact_meta(ck), "precision": "fp32"}
        # On a GPU, small batches replay a captured CUDA graph: one launch instead of one per op.
        self.graphs = CudaGraphs(self.model) if cuda_graphs and self.device.type == "cuda" else None
        self.meta["cuda_graphs"] = self.graphs is not None

    def run(self, x) -> np.ndarray:
        import torch

        x = torch.from_numpy(self._prepare(x)).to(self.device)
        with torch.inference_mode():
            out = self.graphs(x) if self.graphs is not None else self.model(x)
            return out.float().cpu().numpy()


class CudaGraphs:
    """``model(x)`` on a CUDA device, replayed from a CUDA graph captured per input shape, dtype and
    autocast state for batches up to ``max_batch`` (bigger ones run eagerly, where launches are not
    the cost). A batch-1 student forward is a few dozen small kernels; as a graph it is one launch.

    The first call with a new shape warms the model up on a side stream (lazy buffers, cuBLAS
    workspaces), then captures; later calls copy the input into the captured one and replay. The
    returned tensor is the graph's own output: read it (``.cpu()``) before the next call.
    """

    def __init__(self, model, max_batch: int = 256):
        self.model, self.max_batch, self._graphs = model, max_batch, {}

    def __call__(self, x):
        import torch

        if x.shape[0] > self.max_batch:
            return self.model(x)
        key = (tuple(x.shape), x.dtype, torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda"))
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._graphs[key] = self._capture(x)
        static_in, static_out, graph = entry
        static_in.copy_(x)
        graph.replay()
        return static_out

    def _capture(self, x):
        import torch

        static_in = x.clone()
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self.model(static_in)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.model(static_in)
        return static_in, static_out, graph


#: ONNX Runtime graph rewrites turned off in every session blmkd opens. ``SkipLayerNormFusion``
#: merges a residual Add with the LayerNorm after it; on the students' narrow tokens (d_model 32)
#: the fused CPU kernel is several times slower than the two ops (profiled: 569 µs vs 195 µs per 64
#: patches in the INT8 graph, where quant_pre_process makes the pattern match). With it off, INT8
#: ``blm_s`` went from 0.93x/0.89x/1.10x of FP32 to 1.04x/1.06x/1.12x at batch 1/64/1024 (one thread,
#: side by side); FP32 was unchanged within noise.
ORT_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def ort_session(model, providers: list[str] | None = None, threads: int = 0, **options):
    """An ``onnxruntime.InferenceSession`` of ``model`` (path or bytes) with blmkd's settings:
    ``threads`` intra-op threads (0: ORT's default), quiet logging, :data:`ORT_DISABLED_OPTIMIZERS`;
    ``options`` set further ``SessionOptions`` attributes."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3  # ORT's warnings about unused initializers etc. are not ours to show
    for k, v in options.items():
        setattr(opts, k, v)
    src = str(model) if isinstance(model, (str, Path)) else model
    return ort.InferenceSession(
        src,
        opts,
        providers=providers or ["CPUExecutionProvider"],
        disabled_optimizers=list(ORT_DISABLED_OPTIMIZERS),
    )


class OnnxRunner(Runner):
    """An ONNX file in ONNX Runtime.

    Args:
        path: the ``.onnx`` file.
        providers: execution providers; default CUDA where ORT has it, then CPU.
        threads: ``intra_op_num_threads`` (0: ORT's default).
    """

    backend = "onnxruntime"

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int = 0):
        import onnxruntime as ort

        from blmkd.export.onnx_export import load_verified, read_metadata

        self.path = Path(path)
        self.name = self.path.name
        model, data, self.sealed = load_verified(self.path)
        if not self.sealed:
            _note_unsealed(self.path)
        if providers is None:
            avail = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail]
        try:
            # the verified bytes, not the path: what runs is what was checked
            self.session = ort_session(
                data if not _has_external_data(model) else self.path, providers, threads
            )
        except Exception as exc:  # ORT raises its own exception types
            raise ExportError(
                f"{self.name}: ONNX Runtime cannot load it ({str(exc).splitlines()[0]})"
            ) from None
        self.providers = self.session.get_providers()
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_kind = "uint8" if inp.type == "tensor(uint8)" else "float"
        self.meta = read_metadata(dict(self.session.get_modelmeta().custom_metadata_map))

    def run(self, x) -> np.ndarray:
        return self.session.run(None, {self.input_name: self._prepare(x)})[0].astype(np.float32, copy=False)


def _has_external_data(model) -> bool:
    from onnx.external_data_helper import uses_external_data

    return any(uses_external_data(t) for t in model.graph.initializer)


class TensorRTRunner(Runner):
    """A serialized TensorRT engine (needs ``tensorrt`` and a CUDA GPU; buffers via torch.cuda).

    The metadata comes from ``<engine>.json``, written beside the engine by the export or by the
    device script; the script's short record names its source ONNX, whose metadata fills in the rest.
    """

    backend = "tensorrt"

    def __init__(self, path: str | Path):
        import json

        from blmkd.export.tensorrt import tensorrt_status

        ok, reason = tensorrt_status()
        if not ok:
            raise ExportError(f"cannot run {Path(path).name}: {reason}")
        import tensorrt as trt
        import torch

        self.path = Path(path)
        self.name = self.path.name
        sidecar = self.path.with_name(self.path.name + ".json")
        self.meta = json.loads(sidecar.read_text()) if sidecar.exists() else {}
        source = self.path.with_name(str(self.meta.get("onnx", ""))) if self.meta.get("onnx") else None
        if source is not None and source.is_file() and "classes" not in self.meta:
            self.meta = {**onnx_metadata(source), **self.meta}
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self._logger).deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise ExportError(
                f"{self.name}: TensorRT cannot deserialize it (built for another GPU or TensorRT version?)"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.input_kind = (
            "uint8" if self.engine.get_tensor_dtype(self.input_name) == trt.DataType.UINT8 else "float"
        )
        self.max_batch = int(self.engine.get_tensor_profile_shape(self.input_name, 0)[2][0])
        self._torch = torch

    def run(self, x) -> np.ndarray:
        torch = self._torch
        x = self._prepare(x)
        outs = []
        stream = torch.cuda.current_stream()
        for i in range(0, len(x), self.max_batch):
            xt = torch.from_numpy(x[i : i + self.max_batch]).cuda()
            self.context.set_input_shape(self.input_name, tuple(xt.shape))
            y = torch.empty(
                tuple(self.context.get_tensor_shape(self.output_name)), dtype=torch.float32, device="cuda"
            )
            self.context.set_tensor_address(self.input_name, xt.data_ptr())
            self.context.set_tensor_address(self.output_name, y.data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise ExportError(f"{self.name}: TensorRT execution failed")
            outs.append(y)
        stream.synchronize()
        return torch.cat(outs).cpu().numpy() if outs else np.zeros((0, 0), np.float32)


def open_artifact(path: str | Path, **kwargs) -> Runner:
    """A :class:`Runner` for a checkpoint, an ONNX file, a TensorRT engine or a C export, by suffix.

    Keyword arguments go to the runner (``providers``/``threads`` for ONNX, ``device`` for PyTorch,
    ``threads`` for C).
    """
    p = Path(path)
    if p.is_dir():  # a run directory means its best checkpoint
        return TorchRunner(p, **kwargs)
    if not p.exists():
        raise ExportError(f"artifact not found: {p}")
    suffix = p.suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        return TorchRunner(p, **kwargs)
    if suffix in ONNX_SUFFIXES:
        return OnnxRunner(p, **kwargs)
    if suffix in ENGINE_SUFFIXES:
        return TensorRTRunner(p, **kwargs)
    if suffix in C_SUFFIXES:
        from blmkd.export.c_export import CRunner

        return CRunner(p, **kwargs)
    known = ", ".join(CHECKPOINT_SUFFIXES + ONNX_SUFFIXES + ENGINE_SUFFIXES + C_SUFFIXES)
    raise ExportError(f"{p.name}: unknown artifact type {suffix or '(no suffix)'!r}; known: {known}")
