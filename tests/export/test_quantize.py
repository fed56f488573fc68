"""INT8 calibration reads training patches only, and refuses to run without them."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest

from blmkd.errors import ExportError
from blmkd.export import export
from blmkd.export.quantize import PatchReader, calibration_coords


def test_calibration_uses_training_pixels_only(bundle):
    rows, cols = calibration_coords(bundle, 10_000)
    train, test = bundle.split.train, bundle.split.test
    assert len(rows) == int(train.sum()) and train[rows, cols].all() and not test[rows, cols].any()
    sub = calibration_coords(bundle, 50, seed=1)
    assert len(sub[0]) == 50 and train[sub].all()


def test_reader_feeds_equal_batches(bundle):
    rows, cols = calibration_coords(bundle, 10_000)
    reader = PatchReader(bundle.extractor("uint8"), rows, cols, "input", batch_size=64)
    shapes = []
    while (b := reader.get_next()) is not None:
        assert b["input"].dtype == np.uint8
        shapes.append(b["input"].shape)
    assert len(set(shapes)) == 1 and len(rows) - len(reader) < len(shapes)  # histogram calibrators stack them
    reader.rewind()
    assert reader.get_next() is not None


def test_no_training_pixels_is_an_error(bundle, student_ckpt, tmp_path, monkeypatch):
    empty = copy.copy(bundle)
    empty.split = SimpleNamespace(
        train=np.zeros_like(bundle.split.train), val=bundle.split.val, test=bundle.split.test
    )
    with pytest.raises(ExportError, match="needs training pixels"):
        calibration_coords(empty, 100)
    monkeypatch.setattr("blmkd.export.exporter.bundle_from_checkpoint", lambda ck, overrides=None: empty)
    with pytest.raises(ExportError, match="INT8 calibration needs training pixels"):
        export(student_ckpt, ["onnx-int8"], tmp_path, eval_size=32, log=lambda s: None)
    assert list(tmp_path.glob("*.onnx")) == []


def test_calib_size_zero_is_refused_before_any_work(student_ckpt, tmp_path):
    with pytest.raises(ExportError, match="--calib-size must be at least 1"):
        export(student_ckpt, ["onnx-int8"], tmp_path, calib_size=0)
    with pytest.raises(ExportError, match="at least one patch"):
        calibration_coords(None, 0)
