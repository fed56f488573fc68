"""Re-evaluation on another split: the model's own training and validation pixels never count as test
pixels, and the leakage is measured against the pixels the model was trained on."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from blmkd.checkpoint import load_checkpoint
from blmkd.cli import main
from blmkd.data import load_scene
from blmkd.data.splits import compute_leakage, make_split


@pytest.fixture(scope="module")
def trained(ip_crop_path, tmp_path_factory):
    """A real checkpoint: the tiny teacher, one epoch on the Indian Pines crop (10% split, seed 0)."""
    out = tmp_path_factory.mktemp("heldout") / "run"
    main(["train-teacher", "--model", "ssa_mamba_test", "--dataset", str(ip_crop_path), "--epochs", "1", "--batch", "128",
          "--out", str(out), "--no-progress"])  # fmt: skip
    return out


def _evaluate(run, tmp_path, *args) -> dict:
    js = tmp_path / "rep.json"
    main(["evaluate", str(run), "--json", str(js), *args])
    return json.loads(js.read_text())


def test_own_split_is_unchanged(trained, tmp_path, ip_crop_path):
    rep = _evaluate(trained, tmp_path)
    scene = load_scene(str(ip_crop_path))
    own = make_split(scene, "ratio", 0.1, 0.05, 0, 7)
    assert rep["held_out"]["own_split"] is True and rep["held_out"]["removed"] == {"train": 0, "val": 0}
    assert rep["held_out"]["pixels"] == int(own.test.sum()) == sum(c["support"] for c in rep["per_class"])
    assert rep["leakage"] == pytest.approx(own.leakage)


def test_another_random_split_drops_the_models_pixels(trained, tmp_path, ip_crop_path, capsys):
    scene = load_scene(str(ip_crop_path))
    own = make_split(scene, "ratio", 0.1, 0.05, 0, 7)
    new = make_split(scene, "ratio", 0.3, 0.05, 1, 7)
    overlap_train, overlap_val = int((new.test & own.train).sum()), int((new.test & own.val).sum())
    assert overlap_train > 0 and overlap_val > 0  # the new split's test set holds pixels the model trained on
    rep = _evaluate(trained, tmp_path, "--train", "0.3", "--seed", "1")
    held = rep["held_out"]
    assert held["own_split"] is False
    assert held["removed"] == {"train": overlap_train, "val": overlap_val}
    left = new.test & ~own.train & ~own.val
    assert held["pixels"] == int(left.sum()) == sum(c["support"] for c in rep["per_class"])
    # leakage against the model's training pixels, not the new split's
    assert rep["leakage"] == pytest.approx(compute_leakage(own.train, left, 7))
    assert rep["leakage"] != pytest.approx(new.leakage)
    assert held["leakage_train_val"] == pytest.approx(compute_leakage(own.train | own.val, left, 7))
    assert "training and" in capsys.readouterr().out


def test_disjoint_reevaluation_reports_the_models_leakage(trained, tmp_path, ip_crop_path):
    """The case that used to print "leakage 0.000": a disjoint split has no leakage of its own, but
    a model trained on a random split has training pixels inside most of its test windows."""
    scene = load_scene(str(ip_crop_path))
    own = make_split(scene, "ratio", 0.1, 0.05, 0, 7)
    new = make_split(scene, "disjoint", 0.3, 0.05, 0, 7, allow_small=False)
    assert new.leakage == 0.0
    rep = _evaluate(trained, tmp_path, "--strategy", "disjoint", "--train", "0.3")
    left = new.test & ~own.train & ~own.val
    assert rep["held_out"]["removed"]["train"] == int((new.test & own.train).sum()) > 0
    assert rep["leakage"] == pytest.approx(compute_leakage(own.train, left, 7)) and rep["leakage"] > 0.5


def test_refuses_when_the_models_pixels_cannot_be_rebuilt(ip_crop_path, tmp_path, capsys):
    """A model trained on a file that is gone, evaluated on a scene whose ground truth differs: its
    training pixels are unknown, so the evaluation is refused in one line."""
    copy = tmp_path / "copy.npz"
    shutil.copy(ip_crop_path, copy)
    run = tmp_path / "run"
    main(["train-teacher", "--model", "ssa_mamba_test", "--dataset", str(copy), "--epochs", "1", "--batch", "256",
          "--out", str(run), "--no-progress"])  # fmt: skip
    assert load_checkpoint(run).meta["split"]["digest"]
    with np.load(copy) as z:
        cube, gt = z["cube"], z["gt"].copy()
    r, c = np.argwhere(gt == 3)[0]
    gt[r, c] = 0  # the same cube with one pixel's label gone: the model's split cannot be remade on it
    other = tmp_path / "other.npz"
    np.savez(other, cube=cube, gt=gt)
    copy.unlink()
    with pytest.raises(SystemExit) as e:
        main(["evaluate", str(run), "--dataset", str(other), "--seed", "3"])
    assert e.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "error: cannot rebuild the pixels best.safetensors was trained on"
    )
