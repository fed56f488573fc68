"""Run blmkd artifacts of every format, and classify whole scenes with them.

One interface for checkpoints (PyTorch), ONNX files (ONNX Runtime), TensorRT engines and C exports,
and the scene loop that tiles a cube through any of them::

    from blmkd.inference import open_artifact, open_classifier, predict_scene
    logits = open_artifact("blm_s.onnx").run(patches_uint8)  # (N, K)
    scene_map = predict_scene(open_classifier("blm_s.c"), cube)  # .pred (H, W) class indices

Modules: :mod:`~blmkd.inference.base` (the runner interface), one module per runtime
(``torch_runner``, ``onnx_runner``, ``tensorrt_runner``, ``c_runner`` with ``c_build``),
:mod:`~blmkd.inference.artifacts` (open by suffix), :mod:`~blmkd.inference.scene` (tiles and the
scene loop), :mod:`~blmkd.inference.classifier` (how a tile's windows are classified),
:mod:`~blmkd.inference.latent` (a student's latent image and its windows) and
:mod:`~blmkd.inference.maps` (writing maps).
"""

from blmkd.inference.artifacts import open_artifact, open_runner
from blmkd.inference.base import Runner
from blmkd.inference.classifier import MODES, SceneClassifier, open_classifier
from blmkd.inference.maps import write_map
from blmkd.inference.scene import SceneMap, predict_scene

__all__ = [
    "MODES",
    "Runner",
    "SceneClassifier",
    "SceneMap",
    "open_artifact",
    "open_classifier",
    "open_runner",
    "predict_scene",
    "write_map",
]
