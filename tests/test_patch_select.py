"""``--patch auto``: P chosen on validation pixels only, ties to the smaller P, disjoint splits refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from blmkd.bundle import DataOptions, prepare_data
from blmkd.checkpoint import load_checkpoint
from blmkd.cli import app, main
from blmkd.data import make_synthetic_scene
from blmkd.errors import DataError
from blmkd.models import create_model
from blmkd.training.config import TrainConfig
from blmkd.training.patch_select import PatchTrial, candidate_bundle, choose, select_patch

cli = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def scene_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("scene") / "s.npy"
    make_synthetic_scene(24, 24, 12, 3, seed=5, lines=1, out=path)
    return path


def _opts(path, **kw):
    return DataOptions(dataset=str(path), gt=str(path.with_name("s_gt.npy")), patch=1, val=0.2, **kw)


def _trial(p, oa):
    return PatchTrial(p, oa, 0.5, 3, 0.1)


def test_choose_highest_val_oa():
    p, why = choose([_trial(1, 0.80), _trial(3, 0.90), _trial(5, 0.85)], val_pixels=100)
    assert p == 3 and "highest validation OA 90.00% on 100 validation pixels" in why


def test_ties_within_one_validation_pixel_go_to_the_smaller_p():
    trials = [_trial(7, 0.90), _trial(3, 0.895), _trial(5, 0.90), _trial(1, 0.88)]
    p, why = choose(trials, val_pixels=200)  # one pixel = 0.005: P 3, 5 and 7 are tied
    assert p == 3 and "tied within one pixel with P = 5, 7" in why
    assert choose(trials, val_pixels=1000)[0] == 5  # one pixel = 0.001: only 5 and 7 tie


def test_candidate_runs_never_see_test_pixels(scene_path):
    bundle = prepare_data(_opts(scene_path))
    b = candidate_bundle(bundle, 5)
    assert b.patch_size == 5 and bundle.patch_size == 1
    np.testing.assert_array_equal(b.split.test, bundle.split.val)  # scored on validation pixels
    assert not (b.split.test & bundle.split.test).any()
    assert bundle.split.test.sum() > 0  # the original is untouched


def test_select_patch_end_to_end(scene_path):
    bundle = prepare_data(_opts(scene_path))
    lines = []
    cfg = TrainConfig(epochs=4, batch_size=32, lr=1e-2, warmup_epochs=0, augment=False)
    choice = select_patch(
        bundle,
        lambda b: create_model("blm_test", b.scene.bands, b.scene.num_classes),
        cfg,
        candidates=(1, 3, 31),  # 31 > 24: skipped
        say=lines.append,
    )
    assert [t.patch for t in choice.trials] == [1, 3] and choice.epochs == 4
    best = max(t.val_oa for t in choice.trials)
    chosen = next(t for t in choice.trials if t.patch == choice.patch)
    assert best - chosen.val_oa <= 1.0 / choice.val_pixels + 1e-9
    assert choice.val_pixels == int(bundle.split.val.sum())
    assert choice.split["digest"] == bundle.split.spec["digest"]
    assert len(lines) == 4 and lines[-1] == choice.reason
    table = choice.lines()
    assert table[0].split()[:2] == ["P", "val"] and sum("<- chosen" in ln for ln in table) == 1


def test_disjoint_split_is_refused(scene_path):
    bundle = prepare_data(_opts(scene_path, strategy="disjoint", train=0.2))
    with pytest.raises(DataError, match="disjoint"):
        select_patch(bundle, lambda b: None, TrainConfig(epochs=1))


@pytest.mark.parametrize("cands", [(2, 3), (0,), (3.5,)])
def test_bad_candidates_are_refused(scene_path, cands):
    bundle = prepare_data(_opts(scene_path))
    with pytest.raises(DataError, match="positive odd"):
        select_patch(bundle, lambda b: None, TrainConfig(epochs=1), candidates=cands)


def _data_args(path):
    return ["-d", str(path), "--gt", str(path.with_name("s_gt.npy")), "--val", "0.2"]


def test_cli_train_student_patch_auto_records_the_choice(scene_path, tmp_path):
    out = tmp_path / "run"
    args = ["train-student", "-s", "blm_test", *_data_args(scene_path), "--epochs", "5", "--patch", "auto",
            "--centre-weight", "0.25", "--no-progress", "-o", str(out)]  # fmt: skip
    res = cli.invoke(app, args)
    assert res.exit_code == 0, res.output
    record = json.loads((out / "patch_select.json").read_text())
    ck = load_checkpoint(out)
    assert ck.meta["data"]["patch_size"] == record["patch"]  # the run used the chosen P
    assert [t["patch"] for t in record["trials"]] == [1, 3, 5, 7, 9, 11]
    assert ck.config["centre_weight"] == 0.25
    assert "--patch auto: 6 candidates" in res.output and record["reason"] in res.output


@pytest.mark.parametrize(
    "extra,msg",
    [
        (["--patch", "auto", "--strategy", "disjoint", "--train", "0.2"], "disjoint"),
        (["--patch", "big"], "--patch must be an odd integer or 'auto'"),
        (["--patch", "0"], "--patch must be >= 1"),
    ],
)
def test_cli_patch_errors_are_one_line(scene_path, tmp_path, extra, msg, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train-teacher", "-m", "ssa_mamba_test", *_data_args(scene_path), "--epochs", "1",
              "--no-progress", "-o", str(tmp_path / "t"), *extra])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert exc.value.code != 0 and err.startswith("error: ") and msg in err and "\n" not in err


def test_cli_centre_weight_out_of_range_is_refused(scene_path, tmp_path):
    res = cli.invoke(
        app, ["train-student", *_data_args(scene_path), "--centre-weight", "1.5", "-o", str(tmp_path)]
    )
    assert res.exit_code != 0 and "--centre-weight must be" in str(res.exception) + res.output
