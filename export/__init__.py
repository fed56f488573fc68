"""Quantize and export: ONNX (FP32, FP16, INT8), TensorRT engines and device scripts.

One entry, :func:`export`, driven by the table of formats in :mod:`blmkd.export.formats`; every
artifact is checked against PyTorch in its own runtime before it is reported done, and
:func:`blmkd.inference.open_artifact` runs any of them (checkpoint, ONNX, engine, C) behind one
interface::

    from blmkd.export import export
    from blmkd.inference import open_artifact
    arts = export("runs/student", formats=["onnx", "onnx-fp16", "onnx-int8"])
    logits = open_artifact(arts[-1].path).run(patches_uint8)
"""

from blmkd.export.checks import Artifact, Check
from blmkd.export.devices import TARGETS, Target, get_target
from blmkd.export.exporter import export
from blmkd.export.formats import FORMATS, ExportFormat, get_format

__all__ = [
    "FORMATS",
    "TARGETS",
    "Artifact",
    "Check",
    "ExportFormat",
    "Target",
    "export",
    "get_format",
    "get_target",
]
