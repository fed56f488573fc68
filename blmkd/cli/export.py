"""`blmkd export`: ONNX (FP32/FP16/INT8), C source, TensorRT engines and device scripts from a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

import blmkd.api as api
from blmkd.cli.common import console


def export_cmd(
    checkpoint: Annotated[
        Path, typer.Argument(help="Checkpoint file or run directory (uses its best.safetensors).")
    ],
    onnx: Annotated[
        bool, typer.Option("--onnx", help="FP32 ONNX (the default when no format is given).")
    ] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="FP16 ONNX (FP32/uint8 in, FP32 logits out).")] = False,
    int8: Annotated[
        bool, typer.Option("--int8", help="Static INT8 QDQ ONNX, calibrated on training patches.")
    ] = False,
    int8_byte: Annotated[
        bool,
        typer.Option(
            "--int8-byte",
            help="Byte students, CPU: the uint8 input straight into an integer first layer, the rest FP32 (no calibration).",
        ),
    ] = False,
    c: Annotated[
        bool,
        typer.Option(
            "--c",
            help="Byte students: one dependency-free C99 file with the weights inside (compiled here with cc to check it; lowest batch-1 latency on a CPU).",
        ),
    ] = False,
    runner: Annotated[
        bool,
        typer.Option(
            "--runner",
            help="With --c: also <model>_runner.c, a standalone program (cc -O3) that classifies a raw BIL/BIP/BSQ cube or a push-broom stream line by line (see docs/edge.md).",
        ),
    ] = False,
    c_target: Annotated[
        str | None,
        typer.Option(
            "--c-target",
            help="With --c: also build for this CPU with its cross compiler ($CC or <triple>-gcc) and check the logits there (qemu where needed): aarch64, cortex-a78ae (Jetson Orin), cortex-a57, cortex-a72, x86-64-v3.",
        ),
    ] = None,
    trt: Annotated[
        bool,
        typer.Option("--trt", help="TensorRT engine per requested precision + a build script for --target."),
    ] = False,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            help="Device for --trt: jetson-orin-nano, jetson-orin-nx, jetson-agx-orin, jetson-xavier-nx, x86-cuda (default).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder (default: export/ beside the checkpoint)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing outputs.")] = False,
    calibration: Annotated[
        str | None,
        typer.Option("--calibration", help="INT8 calibrator: minmax | entropy | percentile (default)."),
    ] = None,
    calib_size: Annotated[
        int | None,
        typer.Option("--calib-size", help="INT8: training patches to calibrate on (default 1024)."),
    ] = None,
    build_engine: Annotated[
        bool,
        typer.Option("--build-engine", help="--trt: fail unless the engine can be built on this machine."),
    ] = False,
    atol: Annotated[
        float | None,
        typer.Option("--atol", help="Max |logit difference| vs PyTorch for FP32/FP16 (default 1e-3 / 0.1)."),
    ] = None,
    min_agreement: Annotated[
        float | None,
        typer.Option(
            "--min-agreement",
            help="INT8: least argmax agreement with PyTorch (default 0.9; --int8-byte 0.98).",
        ),
    ] = None,
    max_oa_drop: Annotated[
        float | None,
        typer.Option(
            "--max-oa-drop", help="INT8: largest OA drop vs PyTorch in points (default 1.0; --int8-byte 0.5)."
        ),
    ] = None,
    eval_size: Annotated[
        int | None,
        typer.Option("--eval-size", help="Check on a sample of this many test patches (default: all)."),
    ] = None,
) -> None:
    """Export a checkpoint and check every artifact against PyTorch on the test patches.

    Each file is compared with the checkpoint in its own runtime (max |Δlogit|, argmax agreement,
    OA); one that fails its tolerance is not written. --trt always writes a trtexec build script
    for the target device; engines are built here only where TensorRT and a matching GPU exist.
    """
    formats = [name for name, on in (("onnx", onnx), ("onnx-fp16", fp16), ("onnx-int8", int8),
               ("onnx-int8-byte", int8_byte), ("c", c), ("trt", trt)) if on]  # fmt: skip
    cfg = api.ExportConfig(force=force, target=target, build_engine=build_engine or None, calibration=calibration,
                           calib_size=calib_size, atol=atol, min_agreement=min_agreement, max_oa_drop=max_oa_drop,
                           eval_size=eval_size, runner=runner or None, c_target=c_target)  # fmt: skip
    with console.status("exporting and checking against PyTorch ..."):
        artifacts = api.export(checkpoint, formats, out, cfg,
                               log=lambda s: console.print(s, markup=False, highlight=False))  # fmt: skip
    console.print(_table(artifacts))


def _table(artifacts):
    t = Table(title="exported")
    for col in ("format", "file", "size", "max |Δlogit|", "agreement %", "OA %", "ΔOA pp", "note"):
        t.add_column(col, justify="left" if col in ("format", "file", "note") else "right")
    for a in artifacts:
        c = a.check
        cells = ["", "", "", ""]
        if c is not None:
            cells = [
                f"{c.max_abs_diff:.2e}",
                f"{100 * c.agreement:.2f}",
                f"{100 * c.oa:.2f}",
                f"{-c.oa_drop_pp:+.2f}",
            ]
        t.add_row(a.format, a.path.name, f"{a.size_bytes / 1024:.1f} KiB", *cells, a.note)
    return t


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
