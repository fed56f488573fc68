"""The one export entry: a checkpoint in, checked artifacts out.

``export(ckpt, formats=["onnx", "onnx-fp16", "onnx-int8", "trt"])`` rebuilds the checkpoint's
model and data (same split, same preprocessing), exports the FP32 graph once and derives the
others from it. Like optimum-cli, every artifact is checked before it is reported done: it runs in
its own runtime on the real test patches and is compared with PyTorch (max |logit difference|,
argmax agreement, OA). The file is written to a temporary name and only renamed into place once
its check passes, so a failed export leaves nothing that looks valid.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import torch

from blmkd.bundle import bundle_from_checkpoint
from blmkd.checkpoint import Checkpoint, load_checkpoint
from blmkd.errors import ExportError
from blmkd.export.c_export import c_extra_paths, check_c_exportable, write_checked_c
from blmkd.export.checks import Artifact, EvalSet, compare, criterion, human_size
from blmkd.export.cross_compile import cross_compiler, get_c_target
from blmkd.export.devices import Target, engine_name, get_target, script_name
from blmkd.export.formats import FORMATS, resolve_formats, validate_options
from blmkd.export.onnx_export import (
    cast_uint8_inputs_first,
    check_model,
    simplify,
    ssm_decay_island,
    to_fp16,
    torch_to_onnx,
    uint8_input_feeds_cast,
)
from blmkd.export.quantize import PatchReader, calibration_coords, quantize_byte_input, quantize_int8
from blmkd.export.tensorrt import ENGINE_SOURCE, PRECISION_FORMAT, write_tensorrt
from blmkd.inference.c_build import c_compiler
from blmkd.inference.onnx_meta import set_metadata
from blmkd.inference.onnx_runner import OnnxRunner
from blmkd.inference.torch_runner import artifact_meta
from blmkd.io import atomic_path, check_writable_dir
from blmkd.runs import RunLock, clean_leftovers


def export(
    checkpoint,
    formats: list[str] | str | None = None,
    out_dir: str | Path | None = None,
    *,
    force: bool = False,
    target: str | None = None,
    build_engine: bool | None = None,
    calibration: str | None = None,
    calib_size: int | None = None,
    atol: float | None = None,
    opset: int | None = None,
    simplify: bool | None = None,
    min_agreement: float | None = None,
    max_oa_drop: float | None = None,
    workspace_mb: int | None = None,
    batch_profile: tuple[int, int, int] | None = None,
    eval_size: int | None = None,
    runner: bool | None = None,
    c_target: str | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> list[Artifact]:
    """Export a checkpoint to the requested formats and check every artifact.

    Args:
        checkpoint: a checkpoint path, run directory or :class:`blmkd.checkpoint.Checkpoint`.
        formats: names from :data:`blmkd.export.formats.FORMATS` (default ``["onnx"]``). ``trt``
            builds one engine per requested ONNX precision (FP32 if none) and writes the device
            script; FP32/FP16 engines are built from the FP32 ONNX, which is then written too.
        out_dir: output folder (default: ``export/`` beside the checkpoint).
        force: overwrite existing outputs.
        target: device for ``trt`` (see :data:`blmkd.export.devices.TARGETS`).
        build_engine: ``trt``: fail unless the engine can be built here.
        calibration, calib_size: ``onnx-int8`` calibrator and number of training patches.
        atol: max |Δlogit| for FP32/FP16 artifacts (defaults per format).
        opset, simplify: ONNX opset (>= 17) and onnxslim on/off.
        min_agreement, max_oa_drop: ``onnx-int8`` acceptance (argmax agreement, OA drop in pp).
        workspace_mb, batch_profile: ``trt`` builder workspace (MiB) and (min, opt, max) batch.
        eval_size: check on a seeded sample of this many test patches (default: all of them).
        runner: ``c``: also write ``<model>_runner.c``, the standalone push-broom runner (checked:
            built here with ``cc -O3`` and its map of the first scene lines equal to ``predict``'s).
        c_target: ``c``: also build for this CPU (:data:`blmkd.export.cross_compile.C_TARGETS`) with its
            cross compiler, run the test patches there (under qemu where the host differs) and check
            the logits like the host build's; writes ``<model>-<target>.so`` (and the runner's static
            executable ``<model>_runner-<target>``).
        seed: seed of the calibration and evaluation samples.
        log: where progress lines go.

    Returns:
        The written artifacts, in format-table order (device script and engines last).

    Raises:
        ExportError / ModelError: bad options, an unreadable checkpoint, existing outputs without
            ``force``, or an artifact that fails its check (that file is not written).
    """
    requested = resolve_formats(formats)
    names = {f.name for f in requested}
    engine_precisions: list[str] = []
    if "trt" in names:
        engine_precisions = [p for p, n in PRECISION_FORMAT.items() if n in names] or ["fp32"]
        names |= {ENGINE_SOURCE[p] for p in engine_precisions}  # engine sources are written too
    fmts = resolve_formats(sorted(names))
    opts = validate_options(
        fmts,
        dict(target=target, build_engine=build_engine, calibration=calibration, calib_size=calib_size, atol=atol,
             opset=opset, simplify=simplify, min_agreement=min_agreement, max_oa_drop=max_oa_drop,
             workspace_mb=workspace_mb, batch_profile=tuple(batch_profile) if batch_profile else None,
             runner=runner or None, c_target=c_target),
    )  # fmt: skip
    if eval_size is not None and eval_size < 1:
        raise ExportError(f"--eval-size must be at least 1, got {eval_size}")

    ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    stem = ck.model_name
    out = Path(out_dir) if out_dir is not None else ck.path.parent / "export"
    onnx_fmts = [f for f in fmts if f.runtime == "onnxruntime"]
    tgt: Target | None = get_target(opts["trt"]["target"]) if "trt" in opts else None
    c_fmt = FORMATS["c"] if "c" in names else None
    planned = [out / f"{stem}{f.suffix}" for f in onnx_fmts + ([c_fmt] if c_fmt else [])]
    if c_fmt is not None:
        planned += c_extra_paths(out, stem, opts["c"])
    if tgt is not None:
        planned.append(out / script_name(tgt))
        planned += [out / engine_name(stem, p) for p in engine_precisions]
    if not force:
        existing = [p for p in planned if p.exists()]
        if existing:
            raise ExportError(f"{existing[0]} already exists; pass --force to overwrite")
    check_writable_dir(out, "export folder")  # before the export and its checks, not after them

    # ---- model, data, reference ------------------------------------------------------------
    model = ck.build_model()
    input_kind = getattr(model, "input_kind", "float")
    if c_fmt is not None:
        check_c_exportable(model)  # before any other work: a teacher has no C export
        cc, why = c_compiler()
        if cc is None:
            raise ExportError(f"--c: {why} (the C file is compiled here to check it against PyTorch)")
        if opts["c"]["c_target"]:
            cross, why = cross_compiler(get_c_target(opts["c"]["c_target"]))
            if cross is None:
                raise ExportError(f"--c-target: {why}")
    bundle = bundle_from_checkpoint(ck)
    ev = EvalSet(bundle, input_kind, eval_size, seed)
    with torch.inference_mode():
        ref = ev.logits(lambda x: model(torch.from_numpy(x)).float().numpy())
    labels = ev.labels
    meta = artifact_meta(ck)
    log(
        f"{stem} ({input_kind} input, {meta['bands']} bands, {meta['patch_size']}×{meta['patch_size']} patches) "
        f"from {ck.path}: PyTorch OA {100 * float((ref.argmax(1) == labels).mean()):.2f}% on {len(ev)} test patches"
    )

    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):  # one export per folder at a time; what a killed one left is removed first
        clean_leftovers(out)
        artifacts: list[Artifact] = []
        onnx_paths: dict[str, Path] = {}
        if onnx_fmts:
            with tempfile.TemporaryDirectory(prefix="blmkd-export-") as tmp:
                base_opts = opts[onnx_fmts[0].name]
                fp32, simplified = _fp32_graph(
                    model, ev, Path(tmp), base_opts["opset"], base_opts["simplify"], log
                )
                for fmt in onnx_fmts:
                    o = opts[fmt.name]
                    extra: dict[str, Any] = {}
                    if fmt.precision == "fp32":
                        proto = fp32
                    elif fmt.precision == "fp16":
                        island = ssm_decay_island(fp32)
                        proto = to_fp16(fp32, island)
                        extra["fp32_nodes"] = sorted(island)
                    elif fmt.name == "onnx-int8-byte":
                        proto, extra["quantization"] = quantize_byte_input(fp32)
                    else:
                        rows, cols = calibration_coords(bundle, int(o["calib_size"]), seed)
                        reader = PatchReader(
                            bundle.extractor(input_kind), rows, cols, fp32.graph.input[0].name
                        )
                        log(f"{fmt.name}: calibrating ({o['calibration']}) on {len(rows)} training patches")
                        proto, extra["quantization"] = quantize_int8(fp32, reader, o["calibration"], log=log)
                    path = out / f"{stem}{fmt.suffix}"
                    art = _write_checked_onnx(
                        proto, path, fmt, {**meta, "precision": fmt.precision, "export_format": fmt.name, "opset": o["opset"], "simplified": simplified, **extra},
                        ev, ref, labels, criterion(o, fmt.precision), log,
                    )  # fmt: skip
                    artifacts.append(art)
                    onnx_paths[fmt.name] = path

        if c_fmt is not None:
            o = opts["c"]
            artifacts += write_checked_c(
                model, out / f"{stem}{c_fmt.suffix}", c_fmt,
                {**meta, "precision": c_fmt.precision, "export_format": c_fmt.name},
                ev, ref, labels, criterion(o, c_fmt.precision), log, o, bundle,
            )  # fmt: skip
        if tgt is not None:
            artifacts += write_tensorrt(
                tgt, stem, engine_precisions, onnx_paths, meta, opts, ev, ref, labels, out, log
            )
        return artifacts


def _fp32_graph(
    model, ev: EvalSet, tmp: Path, opset: int, do_simplify: bool, log
) -> tuple[onnx.ModelProto, str]:
    x = ev.extractor.gather(ev.rows[:2], ev.cols[:2]).numpy()
    path = tmp / "fp32.onnx"
    torch_to_onnx(model, torch.from_numpy(x), path, opset)
    proto = onnx.load(str(path))
    if do_simplify:
        proto, simplified = simplify(proto, log)
    else:
        simplified = "no: disabled"
    if not uint8_input_feeds_cast(proto) and cast_uint8_inputs_first(proto):
        log(
            "note: moved the uint8 → float Cast to the graph input (TensorRT needs UINT8 inputs to feed a Cast)"
        )
    return proto, simplified


def _write_checked_onnx(
    proto, path: Path, fmt, meta: dict, ev: EvalSet, ref, labels, criterion, log
) -> Artifact:
    """Save to a temporary name, check in ONNX Runtime (CPU), then rename into place."""
    set_metadata(proto, meta)
    check_model(proto)
    with atomic_path(path, suffix=".onnx") as tmp:
        onnx.save(proto, str(tmp))
        runner = OnnxRunner(tmp, providers=["CPUExecutionProvider"])
        chk = compare(ev.logits(runner.run), ref, labels, criterion)
        size = tmp.stat().st_size
        log(f"{fmt.name}: {path.name} {human_size(size)}; {chk.line()}")
        if not chk.passed:
            raise ExportError(
                f"{fmt.name} export failed its check against PyTorch ({chk.criterion}); {path.name} was not written. {chk.line()}"
            )
        set_metadata(
            proto,
            {
                "test_oa": chk.oa,
                "agreement": chk.agreement,
                "max_abs_diff": chk.max_abs_diff,
                "check": chk.to_dict(),
            },
        )
        onnx.save(proto, str(tmp))
    return Artifact(fmt.name, "onnx", path, fmt.precision, path.stat().st_size, chk)
