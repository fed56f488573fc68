"""TensorRT engines from the exported ONNX files (``tensorrt`` is imported lazily; extra ``trt``).

The network comes from TensorRT's ONNX parser. Precision follows :mod:`blmkd.export.targets`:
an FP32 engine turns TF32 off, an FP16 engine sets ``BuilderFlag.FP16`` on the FP32 graph, an INT8
engine is built from the QDQ model (explicit quantization: the scales are in the graph), as a
strongly typed network where TensorRT has ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` (>= 9),
else with ``BuilderFlag.INT8``. One optimization profile spans the min/opt/max batch; the
workspace memory pool is capped.
"""

from __future__ import annotations

import time
from pathlib import Path

from blmkd.errors import ExportError
from blmkd.io import atomic_write_bytes


def tensorrt_status() -> tuple[bool, str]:
    """(usable, why): TensorRT importable and a CUDA GPU present."""
    try:
        import tensorrt as trt
    except ImportError:
        return False, "TensorRT is not installed (pip install 'blmkd[trt]' on a CUDA machine)"
    try:
        import torch

        if not torch.cuda.is_available():
            return False, f"TensorRT {trt.__version__} is installed but there is no CUDA GPU"
        major, minor = torch.cuda.get_device_capability()
        return True, f"TensorRT {trt.__version__} on {torch.cuda.get_device_name()} (SM {major}.{minor})"
    except Exception as exc:  # a broken CUDA install shows up here in many forms
        return False, f"CUDA is not usable ({type(exc).__name__}: {exc})"


def local_compute_capability() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return "{}.{}".format(*torch.cuda.get_device_capability())
    except Exception:  # no usable CUDA: no local GPU to compare with
        pass
    return None


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    precision: str,
    *,
    input_name: str,
    sample_shape: tuple[int, ...],
    batch_profile: tuple[int, int, int],
    workspace_mb: int,
) -> dict:
    """Build and write a serialized engine (atomically); return what was built, for its JSON.

    Args:
        onnx_path: the ONNX to parse (FP32 for fp32/fp16 engines, the QDQ model for int8).
        engine_path: where the engine goes.
        precision: ``fp32``, ``fp16`` or ``int8``.
        input_name: the network input the optimization profile shapes.
        sample_shape: one sample's shape ``(bands, P, P)``.
        batch_profile: (min, opt, max) batch.
        workspace_mb: workspace memory-pool limit in MiB.
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    creation = trt.NetworkDefinitionCreationFlag
    strongly_typed = precision == "int8" and hasattr(creation, "STRONGLY_TYPED")
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10 and hasattr(creation, "EXPLICIT_BATCH"):
        flags |= 1 << int(creation.EXPLICIT_BATCH)  # implicit batch is gone in 10, explicit is the default
    if strongly_typed:
        flags |= 1 << int(creation.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {Path(onnx_path).name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    builder_flags = []
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # an FP32 engine computes in FP32
    elif precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        builder_flags.append("FP16")
    elif precision == "int8" and not strongly_typed:
        config.set_flag(
            trt.BuilderFlag.INT8
        )  # explicit quantization: no calibrator, the scales are in the graph
        builder_flags.append("INT8")
    lo, opt, hi = batch_profile
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (lo, *sample_shape), (opt, *sample_shape), (hi, *sample_shape))
    config.add_optimization_profile(profile)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(
            f"TensorRT could not build a {precision} engine from {Path(onnx_path).name} (see its log above)"
        )
    atomic_write_bytes(engine_path, bytes(serialized))
    import torch

    return {
        "tensorrt": trt.__version__,
        "gpu": torch.cuda.get_device_name(),
        "compute_capability": local_compute_capability(),
        "precision": precision,
        "strongly_typed": strongly_typed,
        "builder_flags": builder_flags,
        "batch_profile": {"min": lo, "opt": opt, "max": hi},
        "workspace_mb": int(workspace_mb),
        "onnx": Path(onnx_path).name,
        "build_s": round(time.perf_counter() - t0, 2),
    }
