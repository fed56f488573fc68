"""Quantize and export: ONNX (FP32, FP16, INT8), TensorRT engines and device scripts.

One entry, :func:`export`, driven by the table of formats in :mod:`blmkd.export.formats`; every
artifact is checked against PyTorch in its own runtime before it is reported done, and
:func:`open_artifact` runs any of them (checkpoint, ONNX, engine) behind one interface::

    from blmkd.export import export, open_artifact
    arts = export("runs/student", formats=["onnx", "onnx-fp16", "onnx-int8"])
    logits = open_artifact(arts[-1].path).run(patches_uint8)
"""

from blmkd.export.exporter import Artifact, Check, export
from blmkd.export.formats import FORMATS, ExportFormat, get_format
from blmkd.export.runtime import Runner, open_artifact
from blmkd.export.targets import TARGETS, Target, get_target

__all__ = [
    "FORMATS",
    "TARGETS",
    "Artifact",
    "Check",
    "ExportFormat",
    "Runner",
    "Target",
    "export",
    "get_format",
    "get_target",
    "open_artifact",
]
