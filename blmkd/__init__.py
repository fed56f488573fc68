"""blmkd: hyperspectral image classifiers from the lab to the edge.

Pipeline: SSA-Mamba teacher -> byte-latent Mamba student (adaptive knowledge distillation)
-> quantization (INT8/FP16) -> ONNX / TensorRT export -> benchmarks and edge reports.
"""

from blmkd.version import __version__

__all__ = ["__version__"]
