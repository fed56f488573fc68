"""Train → ONNX → C end to end at the extremes of P: 1 (the spectrum alone) and 15 (a wide window)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from blmkd.checkpoint import load_checkpoint
from blmkd.cli import app
from blmkd.data import make_synthetic_scene
from blmkd.inference import open_artifact
from blmkd.inference.c_build import c_compiler

cli = CliRunner(env={"COLUMNS": "200"})
needs_cc = pytest.mark.skipif(c_compiler()[0] is None, reason=c_compiler()[1] or "C compiler present")


@pytest.fixture(autouse=True)
def _native_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("BLMKD_NATIVE_DIR", str(tmp_path_factory.getbasetemp() / "native"))


@pytest.fixture(scope="module")
def scene_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("scene") / "s.npy"
    make_synthetic_scene(24, 24, 10, 3, seed=9, lines=1, out=path)
    return path


@needs_cc
@pytest.mark.parametrize("patch,centre", [(1, "0"), (15, "0.6")])
def test_train_export_onnx_and_c_at_patch(scene_path, tmp_path, patch, centre):
    run, exp = tmp_path / "run", tmp_path / "exp"
    res = cli.invoke(app, ["train-student", "-s", "blm_test", "-d", str(scene_path), "--gt",
                           str(scene_path.with_name("s_gt.npy")), "--patch", str(patch), "--centre-weight", centre,
                           "--epochs", "2", "--no-progress", "-o", str(run)])  # fmt: skip
    assert res.exit_code == 0, res.output
    ck = load_checkpoint(run)
    assert ck.meta["data"]["patch_size"] == patch and ck.config["centre_weight"] == float(centre)
    res = cli.invoke(app, ["export", str(run), "--onnx", "--c", "-o", str(exp), "--eval-size", "64"])
    assert res.exit_code == 0, res.output
    assert {p.suffix for p in exp.iterdir()} >= {".onnx", ".c"}
    x = np.random.default_rng(0).integers(0, 256, (9, 10, patch, patch), dtype=np.uint8)
    ref = open_artifact(run).run(x)
    assert ref.shape == (9, 4)  # 3 field classes + the line class
    for art in (next(exp.glob("*.onnx")), next(exp.glob("*.c"))):
        np.testing.assert_allclose(open_artifact(art).run(x), ref, rtol=1e-3, atol=1e-3)
