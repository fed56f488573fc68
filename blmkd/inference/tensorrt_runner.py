"""Serialized TensorRT engines (``tensorrt`` is imported lazily: the optional extra ``trt``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from blmkd.errors import ExportError
from blmkd.inference.base import Runner
from blmkd.inference.onnx_meta import onnx_metadata


def tensorrt_status() -> tuple[bool, str]:
    """(usable, why): TensorRT importable and a CUDA GPU present."""
    try:
        import tensorrt as trt
    except ImportError:
        return False, "TensorRT is not installed (pip install 'blmkd[trt]' on a CUDA machine)"
    try:
        if not torch.cuda.is_available():
            return False, f"TensorRT {trt.__version__} is installed but there is no CUDA GPU"
        major, minor = torch.cuda.get_device_capability()
        return True, f"TensorRT {trt.__version__} on {torch.cuda.get_device_name()} (SM {major}.{minor})"
    except Exception as exc:  # a broken CUDA install shows up here in many forms
        return False, f"CUDA is not usable ({type(exc).__name__}: {exc})"


class TensorRTRunner(Runner):
    """A serialized TensorRT engine (needs ``tensorrt`` and a CUDA GPU; buffers via torch.cuda).

    The metadata comes from ``<engine>.json``, written beside the engine by the export or by the
    device script; the script's short record names its source ONNX, whose metadata fills in the rest.
    """

    backend = "tensorrt"

    def __init__(self, path: str | Path):
        ok, reason = tensorrt_status()
        if not ok:
            raise ExportError(f"cannot run {Path(path).name}: {reason}")
        import tensorrt as trt

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

    def run(self, x) -> np.ndarray:
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
