"""The format table, the per-format option validation and the device targets (no model needed)."""

from __future__ import annotations

import pytest

from blmkd.errors import ExportError
from blmkd.export import FORMATS, TARGETS, get_format, get_target
from blmkd.export.formats import resolve_formats, validate_options


def test_table_has_one_row_per_format_with_unique_suffixes():
    assert list(FORMATS) == ["onnx", "onnx-fp16", "onnx-int8", "onnx-int8-byte", "c", "trt"]
    suffixes = [f.suffix for f in FORMATS.values()]
    assert len(set(suffixes)) == len(suffixes)
    for f in FORMATS.values():
        assert f.flag.startswith("--") and f.devices
        assert set(f.defaults) <= f.options  # a default only for an option the format takes


def test_formats_resolve_by_name_or_flag_in_table_order():
    assert [f.name for f in resolve_formats(["--trt", "int8", "onnx"])] == ["onnx", "onnx-int8", "trt"]
    assert [f.name for f in resolve_formats(None)] == ["onnx"]
    assert get_format("--fp16").name == "onnx-fp16"


def test_unknown_format_lists_the_known_ones():
    with pytest.raises(
        ExportError,
        match="unknown export format 'tflite'; known: onnx, onnx-fp16, onnx-int8, onnx-int8-byte, c, trt",
    ):
        resolve_formats(["tflite"])


def test_options_fill_per_format_defaults():
    fmts = resolve_formats(["onnx", "onnx-int8"])
    opts = validate_options(fmts, {"calibration": "entropy", "atol": None})
    assert opts["onnx-int8"]["calibration"] == "entropy"
    assert opts["onnx"]["atol"] == FORMATS["onnx"].defaults["atol"]
    assert "calibration" not in opts["onnx"]


@pytest.mark.parametrize(
    ("formats", "options", "message"),
    [
        (["onnx"], {"calibration": "minmax"}, "--calibration does not apply to the requested format"),
        (["onnx"], {"target": "jetson-orin-nano"}, "--target does not apply"),
        (["onnx-int8"], {"build_engine": True}, "--build-engine does not apply"),
        (["onnx-int8"], {"calib_size": 0}, "--calib-size must be at least 1"),
        (["onnx-int8"], {"calibration": "kl"}, "--calibration must be one of minmax, entropy, percentile"),
        (["onnx-int8-byte"], {"calibration": "minmax"}, "--calibration does not apply"),
        (["onnx"], {"opset": 13}, "--opset must be 17..20"),
        (["onnx-fp16"], {"atol": -1}, "--atol must be >= 0"),
        (["trt"], {"target": "jetson-tx2"}, "unknown target 'jetson-tx2'; known: jetson-orin-nano"),
        (["trt"], {"batch_profile": (4, 2, 8)}, "MIN,OPT,MAX"),
        (["onnx"], {"colour": "red"}, "unknown export option 'colour'"),
    ],
)
def test_bad_options_are_one_line_errors(formats, options, message):
    with pytest.raises(ExportError, match=message) as err:
        validate_options(resolve_formats(formats), options)
    assert "\n" not in str(err.value)


def test_targets_know_their_gpus():
    orin = get_target("jetson-orin-nano")
    assert orin.compute_capability == "8.7" and orin.tensorrt_major == 10 and orin.strongly_typed
    xavier = get_target("jetson-xavier-nx")
    assert xavier.compute_capability == "7.2" and not xavier.strongly_typed and not xavier.has_tf32
    assert set(TARGETS) >= {"jetson-orin-nano", "jetson-agx-orin", "jetson-xavier-nx", "x86-cuda"}
