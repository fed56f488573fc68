"""Checkpoints in PyTorch: the reference every export is checked against, and CUDA-graph replay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from blmkd.checkpoint import file_sha256, load_checkpoint
from blmkd.inference.base import Runner
from blmkd.version import __version__


def artifact_meta(ck) -> dict[str, Any]:
    """The facts every export of checkpoint ``ck`` carries (see :mod:`blmkd.inference.onnx_meta`)."""
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


class TorchRunner(Runner):
    """A checkpoint in PyTorch (the reference every export is checked against)."""

    backend = "pytorch"

    def __init__(self, path: str | Path, device: str = "cpu", cuda_graphs: bool = True):
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
