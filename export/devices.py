"""Deployment targets and the device scripts that build TensorRT engines on them.

A TensorRT engine is tied to the GPU (compute capability) and the TensorRT version it was built
with, so an engine for a Jetson is built on the Jetson. For every target the export writes a shell
script next to the ONNX files that runs ``trtexec`` with the right precision flags, shapes and
workspace, writes each engine's metadata JSON after a successful build, and ends with the
``blmkd bench`` line to time the engines there.

TensorRT >= 9 has strongly typed networks (``--stronglyTyped``): a QDQ model is then built exactly as
quantized, the rest in the ONNX's own types. JetPack 5 (Xavier) carries TensorRT 8.5, which builds a
QDQ model with ``--int8`` instead. UINT8 network inputs need TensorRT >= 8.5 and must feed a Cast
directly, which the students' graphs do.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from blmkd.errors import ExportError

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Target:
    """A device class an engine is built for."""

    name: str
    description: str
    compute_capability: str | None  # SM version, "8.7"; None: whatever GPU the script runs on
    software: str  # the JetPack / TensorRT the numbers below assume
    tensorrt_major: int  # TensorRT major version on the device (decides --stronglyTyped)
    workspace_mb: int  # builder workspace memory-pool limit
    batch_profile: tuple[int, int, int]  # min, opt, max batch of the optimization profile
    trtexec: str  # where trtexec usually lives there

    @property
    def strongly_typed(self) -> bool:
        return self.tensorrt_major >= 9

    @property
    def has_tf32(self) -> bool:
        # TF32 exists from Ampere (SM 8.0); an FP32 engine turns it off to stay FP32.
        return self.compute_capability is None or float(self.compute_capability) >= 8.0


_JETSON_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("jetson-orin-nano", "NVIDIA Jetson Orin Nano (4/8 GB)", "8.7", "JetPack 6.x, TensorRT 10.x", 10, 1024, (1, 1024, 4096), _JETSON_TRTEXEC),
        Target("jetson-orin-nx", "NVIDIA Jetson Orin NX (8/16 GB)", "8.7", "JetPack 6.x, TensorRT 10.x", 10, 2048, (1, 1024, 4096), _JETSON_TRTEXEC),
        Target("jetson-agx-orin", "NVIDIA Jetson AGX Orin (32/64 GB)", "8.7", "JetPack 6.x, TensorRT 10.x", 10, 4096, (1, 1024, 8192), _JETSON_TRTEXEC),
        Target("jetson-xavier-nx", "NVIDIA Jetson Xavier NX (8/16 GB)", "7.2", "JetPack 5.1.x, TensorRT 8.5", 8, 1024, (1, 512, 2048), _JETSON_TRTEXEC),
        Target("x86-cuda", "x86-64 server or desktop with a CUDA GPU", None, "TensorRT >= 10", 10, 4096, (1, 1024, 8192), "trtexec"),
    )
}  # fmt: skip


def get_target(name: str) -> Target:
    """The target called ``name``; an unknown name lists the known ones."""
    if name not in TARGETS:
        raise ExportError(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
    return TARGETS[name]


def engine_name(stem: str, precision: str) -> str:
    return f"{stem}.{precision}.engine"


def script_name(target: Target) -> str:
    return f"build_{target.name}.sh"


def onnx_source(stem: str, precision: str) -> str:
    """The ONNX an engine of ``precision`` is built from.

    FP32 and FP16 engines come from the FP32 ONNX (``--fp16`` lets TensorRT pick FP16 kernels layer
    by layer); an INT8 engine comes from the QDQ model (explicit quantization: the scales are in the
    graph, no calibration on the device).
    """
    return f"{stem}.int8.onnx" if precision == "int8" else f"{stem}.onnx"


def trtexec_flags(target: Target, precision: str) -> list[str]:
    """Precision flags of ``trtexec`` for ``precision`` on ``target``."""
    if precision == "fp32":
        return ["--noTF32"] if target.has_tf32 else []
    if precision == "fp16":
        return ["--fp16"]
    if precision == "int8":
        return ["--stronglyTyped"] if target.strongly_typed else ["--int8"]
    raise ValueError(f"unknown precision {precision!r}")


def shape_arg(input_name: str, batch: int, sample_shape: tuple[int, ...]) -> str:
    return f"{input_name}:" + "x".join(str(d) for d in (batch, *sample_shape))


def trtexec_command(
    target: Target,
    stem: str,
    precision: str,
    input_name: str,
    sample_shape: tuple[int, ...],
    batch_profile: tuple[int, int, int] | None = None,
    workspace_mb: int | None = None,
) -> list[str]:
    """The ``trtexec`` argv that builds ``stem.<precision>.engine`` on ``target``."""
    lo, opt, hi = batch_profile or target.batch_profile
    return [
        '"$TRTEXEC"',
        f"--onnx={onnx_source(stem, precision)}",
        f"--saveEngine={engine_name(stem, precision)}",
        *trtexec_flags(target, precision),
        f"--minShapes={shape_arg(input_name, lo, sample_shape)}",
        f"--optShapes={shape_arg(input_name, opt, sample_shape)}",
        f"--maxShapes={shape_arg(input_name, hi, sample_shape)}",
        f"--memPoolSize=workspace:{workspace_mb or target.workspace_mb}",  # MiB
    ]


def bench_command(stem: str, precision: str) -> str:
    return f"blmkd bench {engine_name(stem, precision)}"


def device_script(
    target: Target,
    stem: str,
    precisions: list[str],
    input_name: str,
    sample_shape: tuple[int, ...],
    engine_meta: dict[str, dict],
    *,
    batch_profile: tuple[int, int, int] | None = None,
    workspace_mb: int | None = None,
    header: str = "",
) -> str:
    """A bash script that builds one engine per precision on ``target`` and benchmarks them.

    Args:
        target: the device class.
        stem: file stem of the exported ONNX files (``blm_s`` for ``blm_s.onnx``).
        precisions: engine precisions, a subset of ``fp32``, ``fp16``, ``int8``.
        input_name: the ONNX input name.
        sample_shape: one sample's input shape, ``(bands, P, P)``.
        engine_meta: per precision, the JSON written beside the engine once it is built.
        batch_profile: (min, opt, max) batch, default the target's.
        workspace_mb: workspace pool limit in MiB, default the target's.
        header: comment lines about the source checkpoint.
    """
    for p in precisions:
        if p not in PRECISIONS:
            raise ValueError(f"unknown precision {p!r}")
    cc = f"compute capability {target.compute_capability}" if target.compute_capability else "the local GPU"
    lines = [
        "#!/usr/bin/env bash",
        f"# Build TensorRT engines for {target.description} ({target.name}: {cc}, {target.software}), then benchmark them.",
        "# Engines are tied to the GPU and the TensorRT version: run this script on the device itself.",
        *[f"# {h}" for h in header.splitlines() if h.strip()],
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        f'TRTEXEC="${{TRTEXEC:-{target.trtexec}}}"',
        'command -v "$TRTEXEC" >/dev/null 2>&1 || TRTEXEC=trtexec',
        'command -v "$TRTEXEC" >/dev/null 2>&1 || { echo "trtexec not found; set TRTEXEC=/path/to/trtexec" >&2; exit 1; }',
        "",
    ]
    for p in precisions:
        cmd = trtexec_command(target, stem, p, input_name, sample_shape, batch_profile, workspace_mb)
        meta = json.dumps({**engine_meta.get(p, {}), "built_with": "trtexec " + " ".join(cmd[1:])}, indent=1)
        lines += [
            f"echo '== {engine_name(stem, p)} ({p})'",
            " \\\n    ".join([cmd[0]] + [shlex.quote(a) for a in cmd[1:]]),
            f"cat > {shlex.quote(engine_name(stem, p) + '.json')} <<'BLMKD_META'",
            meta,
            "BLMKD_META",
            "",
        ]
    lines.append("# Throughput and latency on the device (the same command as on the workstation):")
    lines += [bench_command(stem, p) for p in precisions]
    return "\n".join(lines) + "\n"
