"""`blmkd datasets`, `blmkd datasets info` and `blmkd split`, through the root app."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from blmkd.cli import app, main

runner = CliRunner(env={"COLUMNS": "200"})


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_datasets_lists_the_registry():
    out = invoke("datasets")
    assert "indian_pines" in out and "embedded" in out
    assert "pavia_university" in out and "AVIRIS" in out


def test_datasets_info_indian_pines(tmp_path):
    out = invoke("datasets", "info", "indian_pines", "--json", str(tmp_path / "info.json"))
    assert "145 × 145 pixels × 200 bands" in out and "float32" in out
    assert "10249 of 21025" in out
    assert "Stone-Steel-Towers" in out and " 93 " in out
    facts = json.loads((tmp_path / "info.json").read_text())
    assert facts["shape"] == [145, 145, 200] and facts["value_range"][0] < facts["value_range"][1]
    assert facts["classes"][8] == {"index": 8, "id": 9, "name": "Oats", "count": 20}


def test_datasets_info_reads_files(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "cube.npy", rng.integers(0, 1000, (12, 10, 4)).astype(np.uint16))
    gt = np.zeros((12, 10), dtype=np.uint8)
    gt[:4], gt[8:] = 3, 7
    np.save(tmp_path / "gt.npy", gt)
    out = invoke("datasets", "info", str(tmp_path / "cube.npy"), "--gt", str(tmp_path / "gt.npy"))
    assert "12 × 10 pixels × 4 bands" in out and "uint16" in out and "class 7" in out


def test_split_per_class_with_json(tmp_path):
    path = tmp_path / "split.json"
    args = ["split", "indian_pines", "--strategy", "per-class", "--train", "30", "--allow-small"]
    out = invoke(*args, "--json", str(path))
    assert "leakage" in out and "Oats" in out
    rec = json.loads(path.read_text())
    assert rec["spec"]["strategy"] == "per-class" and rec["spec"]["train"] == 30
    train = {c["name"]: c["train"] for c in rec["classes"]}
    assert train["Oats"] == 10 and train["Woods"] == 30
    assert 0 < rec["leakage"] <= 1


def test_split_disjoint_has_no_leakage():
    out = invoke(
        "split", "indian_pines", "--strategy", "disjoint", "--train", "0.2", "--seed", "1", "--patch", "5"
    )
    assert "leakage   0.00%" in out and "buffer" in out


def test_split_fixed_from_maps(tmp_path):
    from blmkd.data import load_scene

    scene = load_scene("indian_pines")
    ids = np.asarray(scene.class_ids)[np.maximum(scene.labels, 0)] * (scene.labels >= 0)
    rng = np.random.default_rng(0)
    pick = rng.random(ids.shape) < 0.3
    np.save(tmp_path / "train.npy", np.where(pick, ids, 0))
    np.save(tmp_path / "test.npy", np.where(~pick, ids, 0))
    args = ["split", "indian_pines", "--strategy", "fixed", "--val", "0"]
    maps = ["--train-map", str(tmp_path / "train.npy"), "--test-map", str(tmp_path / "test.npy")]
    out = invoke(*args, *maps, "--json", str(tmp_path / "s.json"))
    assert "total" in out
    rec = json.loads((tmp_path / "s.json").read_text())
    assert rec["totals"]["train"] == int(((ids > 0) & pick).sum())
    assert rec["totals"]["test"] == int(((ids > 0) & ~pick).sum())


@pytest.mark.parametrize(
    "args, message",
    [
        (["split", "no_such_file.mat"], "error: file not found"),
        (
            ["split", "indian_pines", "--strategy", "per-class", "--train", "30"],
            "class 7 ('Grass-pasture-mowed') has 28",
        ),
        (["split", "indian_pines", "--patch", "147"], "error: patch size 147 is larger than the scene"),
        (["split", "indian_pines", "--strategy", "shuffled"], "unknown split strategy"),
        (["datasets", "info", "not_a_dataset"], "error: unknown dataset"),
    ],
)
def test_user_errors_are_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert message in err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
