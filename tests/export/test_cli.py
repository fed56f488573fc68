"""`blmkd export` end to end through the root app, and its one-line error exits."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from blmkd.cli import app, main
from blmkd.inference.artifacts import open_artifact
from blmkd.inference.tensorrt_runner import tensorrt_status

runner = CliRunner(env={"COLUMNS": "200"})


def test_export_fp16_int8_end_to_end(student_ckpt, tmp_path):
    out = tmp_path / "exp"
    args = ["export", str(student_ckpt.path.parent), "--fp16", "--int8", "--int8-byte", "--out", str(out),
            "--calibration", "minmax", "--calib-size", "64", "--eval-size", "128", "--max-oa-drop", "3"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert sorted(p.name for p in out.iterdir()) == [
        "blm_test.fp16.onnx",
        "blm_test.int8.onnx",
        "blm_test.int8b.onnx",
    ]
    assert "onnx-int8: calibrating (minmax) on 64 training patches" in result.output
    assert "argmax agreement" in result.output and "exported" in result.output
    q = open_artifact(out / "blm_test.int8.onnx").meta["quantization"]
    assert q["method"] == "minmax" and q["calibration_patches"] == 64
    assert open_artifact(out / "blm_test.int8b.onnx").meta["quantization"]["calibration"] == "none"


def test_default_format_is_onnx(student_ckpt, tmp_path):
    result = runner.invoke(app, ["export", str(student_ckpt.path), "-o", str(tmp_path), "--eval-size", "32"])
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir()] == ["blm_test.onnx"]


@pytest.mark.skipif(tensorrt_status()[0], reason="TensorRT and a GPU are present")
def test_trt_for_jetson_without_tensorrt_exits_zero(student_ckpt, tmp_path):
    result = runner.invoke(app, ["export", str(student_ckpt.path), "--trt", "--fp16", "--target", "jetson-orin-nano",
                                 "-o", str(tmp_path), "--eval-size", "32"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {p.name for p in tmp_path.iterdir()} == {
        "blm_test.onnx",
        "blm_test.fp16.onnx",
        "build_jetson-orin-nano.sh",
    }
    assert (
        "engine not built here" in result.output
        and "engine to build on the jetson-orin-nano" in result.output
    )
    assert "--fp16" in (tmp_path / "build_jetson-orin-nano.sh").read_text()


def _error_exit(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code != 0 and err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_errors_are_one_line(student_ckpt, tmp_path, capsys):
    ck = str(student_ckpt.path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    assert "not a readable safetensors checkpoint" in _error_exit(capsys, ["export", str(bad)])
    assert "checkpoint not found" in _error_exit(capsys, ["export", str(tmp_path / "none.safetensors")])
    err = _error_exit(capsys, ["export", ck, "--trt", "--target", "jetson-nope", "-o", str(tmp_path)])
    assert "unknown target 'jetson-nope'; known: jetson-orin-nano" in err
    assert "--calib-size must be ≥ 1, got 0" in _error_exit(
        capsys, ["export", ck, "--int8", "--calib-size", "0"]
    )
    assert "--calibration does not apply" in _error_exit(capsys, ["export", ck, "--calibration", "entropy"])
    assert "--target does not apply" in _error_exit(capsys, ["export", ck, "--target", "jetson-orin-nano"])
    (tmp_path / "blm_test.onnx").write_bytes(b"x")
    assert "already exists; pass --force" in _error_exit(capsys, ["export", ck, "-o", str(tmp_path)])


@pytest.mark.skipif(tensorrt_status()[0], reason="TensorRT and a GPU are present")
def test_build_engine_without_tensorrt_exits_nonzero(student_ckpt, tmp_path, capsys):
    err = _error_exit(
        capsys,
        [
            "export",
            str(student_ckpt.path),
            "--trt",
            "--build-engine",
            "-o",
            str(tmp_path),
            "--eval-size",
            "32",
        ],
    )
    assert "TensorRT engine not built here" in err
    assert (tmp_path / "blm_test.onnx").exists() and (tmp_path / "build_x86-cuda.sh").exists()
