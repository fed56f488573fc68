"""The table of export formats and the per-format validation of export options.

One :class:`ExportFormat` per format (Ultralytics keeps one export entry and one table of formats;
here each row is a dataclass, not a positional tuple of flags). Every option of
:func:`blmkd.export.export` belongs to the formats that list it in ``options``; an option given
for formats that do not take it is an error, not silently ignored. Options left at ``None`` take
the format's default from ``defaults``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from blmkd.errors import ExportError
from blmkd.export.cross_compile import get_c_target
from blmkd.export.devices import get_target

CALIBRATIONS = ("minmax", "entropy", "percentile")
MIN_OPSET, MAX_OPSET = 17, 20  # LayerNormalization needs 17; 20 is the TorchScript exporter's maximum


@dataclass(frozen=True)
class ExportFormat:
    """One row of the format table."""

    name: str  # key of `export(formats=[...])`
    flag: str  # CLI flag of `blmkd export`
    suffix: str  # appended to the model stem: blm_s + ".int8.onnx"
    precision: str  # "fp32" | "fp16" | "int8"; "as-onnx" for engines (one per ONNX precision)
    runtime: str  # what runs and checks the artifact
    devices: tuple[str, ...]  # where the artifact is meant to run
    options: frozenset[str]  # export options that apply to this format
    defaults: Mapping[str, Any] = field(default_factory=dict)  # values of options left at None
    description: str = ""


_ONNX_COMMON = frozenset({"opset", "simplify"})

FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat(
            name="onnx",
            flag="--onnx",
            suffix=".onnx",
            precision="fp32",
            runtime="onnxruntime",
            devices=("cpu", "cuda"),
            options=_ONNX_COMMON | {"atol"},
            defaults=MappingProxyType({"opset": 17, "simplify": True, "atol": 1e-3}),
            description="FP32 ONNX, dynamic batch, checked in ONNX Runtime against PyTorch",
        ),
        ExportFormat(
            name="onnx-fp16",
            flag="--fp16",
            suffix=".fp16.onnx",
            precision="fp16",
            runtime="onnxruntime",
            devices=("cuda", "cpu"),
            options=_ONNX_COMMON | {"atol"},
            # FP16 keeps ~3 significant digits: logits of magnitude ~10 move by a few 1e-2.
            defaults=MappingProxyType({"opset": 17, "simplify": True, "atol": 0.1}),
            description="FP16 weights and activations (SSM decay path in FP32), FP32/uint8 in, FP32 logits out",
        ),
        ExportFormat(
            name="onnx-int8",
            flag="--int8",
            suffix=".int8.onnx",
            precision="int8",
            runtime="onnxruntime",
            devices=("cpu", "cuda"),
            options=_ONNX_COMMON | {"calibration", "calib_size", "min_agreement", "max_oa_drop"},
            # INT8 is judged by decisions, not logits: argmax agreement with FP32 and the OA drop.
            defaults=MappingProxyType(
                {
                    "opset": 17,
                    "simplify": True,
                    "calibration": "percentile",
                    "calib_size": 1024,
                    "min_agreement": 0.9,
                    "max_oa_drop": 1.0,  # percentage points
                }
            ),
            description="static INT8 QDQ (ONNX Runtime calibration on training patches), explicit quantization for TensorRT",
        ),
        ExportFormat(
            name="onnx-int8-byte",
            flag="--int8-byte",
            suffix=".int8b.onnx",
            precision="int8",
            runtime="onnxruntime",
            devices=("cpu",),
            options=_ONNX_COMMON | {"min_agreement", "max_oa_drop"},
            # One layer's weights rounded, inputs exact: held to a tighter default than --int8.
            defaults=MappingProxyType(
                {"opset": 17, "simplify": True, "min_agreement": 0.98, "max_oa_drop": 0.5}
            ),
            description="byte students: the uint8 input straight into an integer first layer (int8 weights), the rest FP32; no calibration; ONNX Runtime on CPU",
        ),
        ExportFormat(
            name="c",
            flag="--c",
            suffix=".c",
            precision="fp32",
            runtime="c",
            devices=("cpu",),
            options=frozenset({"atol", "runner", "c_target"}),
            defaults=MappingProxyType({"atol": 1e-3, "runner": False, "c_target": None}),
            description="byte students: one dependency-free C99 file (weights inside), compiled here with the system C compiler and checked against PyTorch; --runner adds a standalone push-broom runner, --c-target cross-compiles both for another CPU and checks the logits there",
        ),
        ExportFormat(
            name="trt",
            flag="--trt",
            suffix=".engine",
            precision="as-onnx",
            runtime="tensorrt",
            devices=("cuda",),
            options=frozenset({"target", "build_engine", "workspace_mb", "batch_profile", "atol"}),
            defaults=MappingProxyType(
                {
                    "target": "x86-cuda",
                    "build_engine": False,
                    "workspace_mb": None,
                    "batch_profile": None,
                    "atol": None,
                }
            ),
            description="TensorRT engine per ONNX precision, plus a build script for the target device",
        ),
    )
}

# How each option is spelled on the command line (error messages speak the user's language).
OPTION_FLAGS = {
    "opset": "--opset",
    "simplify": "--simplify/--no-simplify",
    "atol": "--atol",
    "calibration": "--calibration",
    "calib_size": "--calib-size",
    "min_agreement": "--min-agreement",
    "max_oa_drop": "--max-oa-drop",
    "target": "--target",
    "build_engine": "--build-engine",
    "workspace_mb": "--workspace",
    "batch_profile": "--batch-profile",
    "runner": "--runner",
    "c_target": "--c-target",
}


def _check_batch_profile(v: Any) -> None:
    if len(tuple(v)) != 3 or not 1 <= v[0] <= v[1] <= v[2]:
        raise ExportError(f"--batch-profile must be MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX, got {tuple(v)}")


def _check_target(v: Any) -> None:
    get_target(v)  # raises with the list of known targets


def _check_c_target(v: Any) -> None:
    get_c_target(v)  # raises with the list of known C targets


def _require(cond: Callable[[Any], bool], msg: str) -> Callable[[Any], None]:
    def check(v: Any) -> None:
        if not cond(v):
            raise ExportError(msg.format(v=v))

    return check


_VALIDATORS: dict[str, Callable[[Any], None]] = {
    "opset": _require(
        lambda v: MIN_OPSET <= int(v) <= MAX_OPSET, f"--opset must be {MIN_OPSET}..{MAX_OPSET}, got {{v}}"
    ),
    "atol": _require(lambda v: v >= 0, "--atol must be >= 0, got {v}"),
    "calibration": _require(
        lambda v: v in CALIBRATIONS, f"--calibration must be one of {', '.join(CALIBRATIONS)}, not {{v!r}}"
    ),
    "calib_size": _require(
        lambda v: int(v) >= 1, "--calib-size must be at least 1 (INT8 needs calibration patches), got {v}"
    ),
    "min_agreement": _require(lambda v: 0 <= v <= 1, "--min-agreement must lie in [0, 1], got {v}"),
    "max_oa_drop": _require(lambda v: v >= 0, "--max-oa-drop (percentage points) must be >= 0, got {v}"),
    "workspace_mb": _require(lambda v: int(v) >= 1, "--workspace (MiB) must be at least 1, got {v}"),
    "batch_profile": _check_batch_profile,
    "target": _check_target,
    "c_target": _check_c_target,
}


def get_format(name: str) -> ExportFormat:
    """The format called ``name`` (or its CLI flag); unknown names list the known ones."""
    key = name.strip().lower()
    for f in FORMATS.values():
        if key in (f.name, f.flag, f.flag.lstrip("-")):
            return f
    raise ExportError(f"unknown export format {name!r}; known: {', '.join(FORMATS)}")


def resolve_formats(names: Iterable[str] | str | None) -> list[ExportFormat]:
    """Formats in table order, without duplicates; none given means ``onnx``."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    picked = {get_format(n).name for n in (names or ["onnx"])}
    return [f for f in FORMATS.values() if f.name in picked]


def validate_options(formats: list[ExportFormat], options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Check the given options against the requested formats; return each format's full option set.

    Args:
        formats: the requested formats.
        options: option name -> value, ``None`` meaning "not given" (take the format default).

    Returns:
        ``{format name: {option: value}}`` for every option the format takes.

    Raises:
        ExportError: an unknown option, an option none of the requested formats takes, or a bad value.
    """
    given = {k: v for k, v in options.items() if v is not None}
    names = ", ".join(f.name for f in formats)
    for key, value in given.items():
        if key not in OPTION_FLAGS:
            raise ExportError(f"unknown export option {key!r}; known: {', '.join(OPTION_FLAGS)}")
        if not any(key in f.options for f in formats):
            takers = [f.flag for f in FORMATS.values() if key in f.options]
            raise ExportError(
                f"{OPTION_FLAGS[key]} does not apply to the requested format(s) {names}; it is used by {', '.join(takers)}"
            )
        if key in _VALIDATORS:
            _VALIDATORS[key](value)
    return {f.name: {k: given.get(k, f.defaults.get(k)) for k in f.options} for f in formats}
