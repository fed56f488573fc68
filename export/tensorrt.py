"""TensorRT engines from the exported ONNX files (``tensorrt`` is imported lazily; extra ``trt``).

The network comes from TensorRT's ONNX parser. Precision follows :mod:`blmkd.export.devices`:
an FP32 engine turns TF32 off, an FP16 engine sets ``BuilderFlag.FP16`` on the FP32 graph, an INT8
engine is built from the QDQ model (explicit quantization: the scales are in the graph), as a
strongly typed network where TensorRT has ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` (>= 9),
else with ``BuilderFlag.INT8``. One optimization profile spans the min/opt/max batch; the
workspace memory pool is capped.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from blmkd.errors import ExportError
from blmkd.export.checks import Artifact, compare, criterion, human_size
from blmkd.export.devices import Target, device_script, engine_name, onnx_source, script_name
from blmkd.export.formats import FORMATS
from blmkd.export.onnx_export import INPUT_NAME
from blmkd.inference.tensorrt_runner import TensorRTRunner, tensorrt_status
from blmkd.io import atomic_write_bytes, atomic_write_json, atomic_write_text

#: The ONNX export each engine precision is built from, and the format whose options judge it.
ENGINE_SOURCE = {"fp32": "onnx", "fp16": "onnx", "int8": "onnx-int8"}
PRECISION_FORMAT = {"fp32": "onnx", "fp16": "onnx-fp16", "int8": "onnx-int8"}


def local_compute_capability() -> str | None:
    try:
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


def write_tensorrt(
    tgt: Target, stem, precisions, onnx_paths, meta, opts, ev, ref, labels, out: Path, log
) -> list[Artifact]:
    """The device script always; engines where TensorRT and a matching GPU are here."""
    o = opts["trt"]
    profile = tuple(o["batch_profile"] or tgt.batch_profile)
    workspace = int(o["workspace_mb"] or tgt.workspace_mb)
    sample_shape = (meta["bands"], meta["patch_size"], meta["patch_size"])
    # The device script writes a short JSON per engine; the runtime completes it from the source ONNX.
    engine_meta = {
        p: {
            "model": stem,
            "precision": p,
            "target": tgt.name,
            "onnx": onnx_source(stem, p),
            "source_sha256": meta["source_sha256"],
        }
        for p in precisions
    }
    header = f"From {meta['source_checkpoint']} (sha256 {meta['source_sha256'][:16]}…), {meta['model']}, blmkd {meta['blmkd_version']}."
    script = device_script(tgt, stem, precisions, INPUT_NAME, sample_shape, engine_meta,
                           batch_profile=profile, workspace_mb=workspace, header=header)  # fmt: skip
    spath = out / script_name(tgt)
    atomic_write_text(spath, script)
    os.chmod(spath, 0o755)
    log(
        f"trt: wrote {spath.name} (trtexec builds of {', '.join(precisions)} for {tgt.name}, then `blmkd bench`)"
    )
    arts = [
        Artifact("trt", "script", spath, None, spath.stat().st_size, note=f"device script for {tgt.name}")
    ]

    ok, reason = tensorrt_status()
    here = local_compute_capability()
    if ok and tgt.compute_capability not in (None, here):
        ok, reason = False, f"this GPU is SM {here}, {tgt.name} is SM {tgt.compute_capability}"
    if not ok:
        msg = f"TensorRT engine not built here ({reason}); build it on the {tgt.name} with {spath.name}"
        if o["build_engine"]:
            raise ExportError(msg)
        log(f"trt: {msg}")
        arts[0].note = f"engine to build on the {tgt.name}"
        return arts

    for p in precisions:
        epath = out / engine_name(stem, p)
        src = onnx_paths[ENGINE_SOURCE[p]]
        log(f"trt: building {epath.name} from {src.name} ({reason})")
        info = build_engine(
            src,
            epath,
            p,
            input_name=INPUT_NAME,
            sample_shape=sample_shape,
            batch_profile=profile,
            workspace_mb=workspace,
        )
        fmt_opts = (
            opts[PRECISION_FORMAT[p]]
            if PRECISION_FORMAT[p] in opts
            else FORMATS[PRECISION_FORMAT[p]].defaults
        )
        try:
            chk = compare(
                ev.logits(TensorRTRunner(epath).run),
                ref,
                labels,
                criterion(fmt_opts, p, o["atol"]),
            )
        except Exception:
            epath.unlink(missing_ok=True)
            raise
        log(f"trt: {epath.name} {human_size(epath.stat().st_size)}; {chk.line()}")
        if not chk.passed:
            epath.unlink(missing_ok=True)
            raise ExportError(
                f"TensorRT {p} engine failed its check against PyTorch ({chk.criterion}); engine removed"
            )
        atomic_write_json(
            epath.with_name(epath.name + ".json"),
            {**meta, **engine_meta[p], **info, "test_oa": chk.oa, "check": chk.to_dict()},
        )
        arts.append(Artifact("trt", "engine", epath, p, epath.stat().st_size, chk))
    return arts
