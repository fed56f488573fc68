"""Open any blmkd artifact the same way: ``open_artifact(path).run(x) -> logits``.

* ``.safetensors`` checkpoints (or a run directory) run in PyTorch (CPU, or CUDA where asked);
* ``.onnx`` files run in ONNX Runtime (the CUDA execution provider where available, else CPU);
* ``.engine`` / ``.plan`` files run in TensorRT (imported lazily; needs a CUDA GPU);
* ``.c`` files (C exports of byte students) are compiled with the system C compiler and called
  through ``ctypes``.

:func:`open_runner` does the same for a device named on the command line (``cpu``, ``cuda:N``) and
checks first that the machine has it.
"""

from __future__ import annotations

import re
from pathlib import Path

from blmkd.bench.machine import cuda_status
from blmkd.errors import BlmkdError, ExportError, ModelError
from blmkd.inference.base import C_SUFFIXES, CHECKPOINT_SUFFIXES, ENGINE_SUFFIXES, ONNX_SUFFIXES, Runner
from blmkd.inference.c_runner import CRunner
from blmkd.inference.onnx_runner import OnnxRunner
from blmkd.inference.tensorrt_runner import TensorRTRunner
from blmkd.inference.torch_runner import TorchRunner


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
        return CRunner(p, **kwargs)
    known = ", ".join(CHECKPOINT_SUFFIXES + ONNX_SUFFIXES + ENGINE_SUFFIXES + C_SUFFIXES)
    raise ExportError(f"{p.name}: unknown artifact type {suffix or '(no suffix)'!r}; known: {known}")


def open_runner(path: str | Path, *, device: str = "cpu", threads: int | None = None):
    """A :class:`~blmkd.inference.base.Runner` on ``device``: PyTorch for checkpoints, ONNX Runtime
    with the matching execution provider for ONNX files, TensorRT for engines, the compiled library
    of a C export (CPU only).

    Raises:
        BlmkdError: a missing file, or a device this machine does not have.
    """
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model not found: {p}")
    if device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
        raise BlmkdError(f"--device must be cpu, cuda or cuda:N, not {device!r}")
    if device.startswith("cuda"):
        ok, why = cuda_status()
        if not ok:
            raise BlmkdError(f"--device cuda: {why}")
    if p.is_dir() or p.suffix.lower() in CHECKPOINT_SUFFIXES:
        return open_artifact(p, device=device)
    if p.suffix.lower() in C_SUFFIXES:
        if device.startswith("cuda"):
            raise BlmkdError(f"{p.name} is a C export; it runs on the CPU (--device cpu)")
        return open_artifact(p, threads=threads or 0)
    if p.suffix.lower() in ONNX_SUFFIXES:
        import onnxruntime as ort

        want = "CUDAExecutionProvider" if device.startswith("cuda") else "CPUExecutionProvider"
        if want not in ort.get_available_providers():
            raise BlmkdError(
                f"ONNX Runtime here has no {want} (it has {', '.join(ort.get_available_providers())})"
            )
        return open_artifact(p, providers=[want], threads=threads or 0)
    return open_artifact(p)
