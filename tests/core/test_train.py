"""The shared training loop and the train/evaluate CLI on real Indian Pines (tiny presets)."""

from __future__ import annotations

import json

import pytest
import torch

from blmkd.checkpoint import load_checkpoint
from blmkd.cli import main
from blmkd.errors import TrainingError
from blmkd.models import create_model
from blmkd.training.config import TrainConfig, ce_objective, class_balance_weights
from blmkd.training.evaluation import apply_variants, dihedral, predict_logits, predict_tta
from blmkd.training.loop import fit


def _teacher(bundle):
    torch.manual_seed(0)
    return create_model("ssa_mamba_test", bands=bundle.scene.bands, num_classes=bundle.scene.num_classes)


def test_dihedral_variants_are_the_8_symmetries():
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    outs = {tuple(dihedral(x, v).flatten().tolist()) for v in range(8)}
    assert len(outs) == 8
    v = torch.tensor([0, 3, 5])
    xs = torch.randn(3, 2, 5, 5)
    got = apply_variants(xs, v)
    for i, vi in enumerate(v.tolist()):
        assert torch.equal(got[i], dihedral(xs[i : i + 1], vi)[0])


def test_tta_averages_the_probabilities_of_the_8_views(ip_bundle):
    model = _teacher(ip_bundle)
    rows, cols, _ = ip_bundle.coords("test")
    rows, cols = rows[:40], cols[:40]
    ext = ip_bundle.extractor("float")
    got = predict_tta(model, ext, rows, cols, batch_size=16)
    views = torch.stack([predict_logits(model, ext, rows, cols, variant=v).softmax(1) for v in range(8)])
    assert torch.allclose(got, views.mean(0), atol=1e-6)
    assert torch.allclose(got.sum(1), torch.ones(40), atol=1e-5)
    # an untrained network is not dihedral-invariant: the views really differ
    assert (views - views[0]).abs().max() > 1e-4


def test_fit_writes_checkpoints_log_and_resumes(ip_bundle, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=128, patience=0)
    res = fit(_teacher(ip_bundle), ip_bundle, cfg, tmp_path, progress=False)
    assert res.epochs_run == 1
    for name in ("best.safetensors", "best.json", "last.safetensors", "metrics.jsonl"):
        assert (tmp_path / name).exists()
    best = load_checkpoint(tmp_path)
    assert best.meta["split"]["strategy"] == "ratio"
    assert best.meta["data"]["num_classes"] == 10
    assert [c["id"] for c in best.meta["data"]["classes"]] == [2, 3, 4, 5, 6, 10, 11, 12, 15, 16]
    assert best.meta["metrics"]["test"]["oa"] == pytest.approx(res.test["oa"])  # the result is what was saved
    # resume continues from the saved epoch, it does not start over
    cfg2 = TrainConfig(epochs=2, batch_size=128, patience=0)
    res2 = fit(_teacher(ip_bundle), ip_bundle, cfg2, tmp_path, resume=True, progress=False)
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    assert res2.epochs_run == 2
    assert load_checkpoint(tmp_path / "last.safetensors").meta["train_state"]["epoch"] == 2


def test_nan_loss_stops_with_epoch_and_keeps_last_good(ip_bundle, tmp_path):
    calls = {"n": 0}

    def objective(model, x, y, idx, variants, epoch):
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        if epoch == 2:
            loss = loss * float("nan")
        calls["n"] += 1
        return loss, logits, {}

    with pytest.raises(
        TrainingError, match="at epoch 2; training stopped, the checkpoint of epoch 1 is kept in .*last"
    ):
        fit(_teacher(ip_bundle), ip_bundle, TrainConfig(epochs=3, batch_size=256, patience=0), tmp_path,
            objective=objective, progress=False)  # fmt: skip
    last = load_checkpoint(tmp_path / "last.safetensors")
    assert last.meta["train_state"]["epoch"] == 1
    # a NaN in the first epoch leaves no checkpoint, and the message does not claim one
    with pytest.raises(TrainingError, match="at epoch 1; training stopped, no checkpoint was written"):
        fit(_teacher(ip_bundle), ip_bundle, TrainConfig(epochs=3, batch_size=256, patience=0), tmp_path / "first",
            objective=lambda m, x, y, i, v, e: objective(m, x, y, i, v, 2), progress=False)  # fmt: skip
    assert not (tmp_path / "first" / "last.safetensors").exists()


def test_cli_train_teacher_and_evaluate(ip_crop_path, tmp_path, capsys):
    out = tmp_path / "run"
    main(["train-teacher", "--model", "ssa_mamba_test", "--dataset", str(ip_crop_path), "--epochs", "1", "--batch", "128",
          "--out", str(out), "--no-progress"])  # fmt: skip
    assert (out / "best.safetensors").exists()
    assert load_checkpoint(out).meta["training"]["ema"] == 0.99  # teachers average their weights by default
    main(["evaluate", str(out), "--json", str(tmp_path / "rep.json")])
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep["set"] == "test" and len(rep["per_class"]) == 10
    # the checkpoint rebuilt from its file, on the split it records: what training measured
    recorded = load_checkpoint(out).meta["metrics"]["test"]
    assert (rep["oa"], rep["aa"], rep["kappa"]) == pytest.approx(
        (recorded["oa"], recorded["aa"], recorded["kappa"])
    )
    text = capsys.readouterr().out
    assert "OA" in text and "confusion" in text
    main(["evaluate", str(out), "--tta", "--json", str(tmp_path / "tta.json")])
    tta = json.loads((tmp_path / "tta.json").read_text())
    assert tta["tta"] is True and rep["tta"] is False and 0 <= tta["oa"] <= 1
    assert "8-view TTA" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train-teacher", "--model", "no_such_model", "--epochs", "1", "--out", str(tmp_path)])
    assert e.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "no_such_model" in err[0]
    with pytest.raises(SystemExit):
        main(["evaluate", str(tmp_path / "missing.safetensors")])
    assert capsys.readouterr().err.strip().startswith("error: checkpoint not found")


def test_checkpoint_dataset_mismatch(ip_bundle, tmp_path, capsys):
    import numpy as np

    fit(
        _teacher(ip_bundle),
        ip_bundle,
        TrainConfig(epochs=1, batch_size=256, patience=0),
        tmp_path / "r",
        progress=False,
    )
    cube = np.random.default_rng(0).random((20, 20, 50)).astype("float32")
    gt = np.zeros((20, 20), dtype="uint8")
    gt[:10] = 1
    gt[10:] = 2
    np.savez(tmp_path / "other.npz", cube=cube, gt=gt)
    with pytest.raises(SystemExit):
        main(["evaluate", str(tmp_path / "r"), "--dataset", str(tmp_path / "other.npz")])
    assert "bands" in capsys.readouterr().err


def test_weight_ema_update_is_the_warmed_up_moving_average():
    from blmkd.training.ema import WeightEMA

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = WeightEMA(net, decay=0.5)
    start = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net[1].num_batches_tracked += 7
    ema.update()  # n = 1: d = min(0.5, 2/11)
    d = 2 / 11
    assert torch.allclose(ema.module[0].weight, d * start + (1 - d) * net[0].weight)
    assert int(ema.module[1].num_batches_tracked) == 7  # integer buffers are copied
    assert not any(p.requires_grad for p in ema.module.parameters())
    for _ in range(50):
        ema.update()  # d reaches the cap 0.5 and the average converges to the fixed weights
    assert torch.allclose(ema.module[0].weight, net[0].weight, atol=1e-6)


def test_fit_with_ema_keeps_the_average_as_best_and_resumes(ip_bundle, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=128, patience=0, ema=0.9)
    fit(_teacher(ip_bundle), ip_bundle, cfg, tmp_path, progress=False)
    best, last = load_checkpoint(tmp_path), load_checkpoint(tmp_path / "last.safetensors")
    name = "head.weight" if "head.weight" in best.model_state() else next(iter(best.model_state()))
    # best holds the averaged weights, last the live ones plus the average for --resume
    assert not torch.equal(best.tensors[name], last.tensors[name])
    assert torch.equal(best.tensors[name], last.extra(f"ema.{name}"))
    steps = -(-len(ip_bundle.coords("train")[0]) // 128)
    assert last.meta["train_state"]["ema_updates"] == steps
    res = fit(_teacher(ip_bundle), ip_bundle, TrainConfig(epochs=2, batch_size=128, patience=0, ema=0.9), tmp_path,
              resume=True, progress=False)  # fmt: skip
    assert res.epochs_run == 2
    assert load_checkpoint(tmp_path / "last.safetensors").meta["train_state"]["ema_updates"] == 2 * steps
    # a run trained without --ema cannot be resumed with it
    fit(
        _teacher(ip_bundle),
        ip_bundle,
        TrainConfig(epochs=1, batch_size=256, patience=0),
        tmp_path / "plain",
        progress=False,
    )
    with pytest.raises(TrainingError, match="averaged weights"):
        fit(_teacher(ip_bundle), ip_bundle, TrainConfig(epochs=2, batch_size=256, patience=0, ema=0.9), tmp_path / "plain",
            resume=True, progress=False)  # fmt: skip


def test_cli_ema_and_label_smoothing_options(ip_crop_path, tmp_path, capsys):
    out = tmp_path / "run"
    main(["train-student", "--student", "blm_test", "--dataset", str(ip_crop_path), "--epochs", "1", "--batch", "128",
          "--ema", "0.9", "--label-smoothing", "0.1", "--out", str(out), "--no-progress"])  # fmt: skip
    training = load_checkpoint(out).meta["training"]
    assert training["ema"] == 0.9 and training["label_smoothing"] == 0.1
    for bad in (["--ema", "1.0"], ["--label-smoothing", "-0.1"]):
        with pytest.raises(SystemExit):
            main(["train-student", "--student", "blm_test", "--dataset", str(ip_crop_path), "--epochs", "1", *bad,
                  "--out", str(tmp_path / "bad"), "--no-progress"])  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and bad[0] in err[0]


def test_class_balance_weights_by_hand():
    labels = [0] * 5 + [1] * 143  # class 2 has no training pixel
    w = class_balance_weights(labels, 3, 0.9)
    e5, e143 = (1 - 0.9**5) / 0.1, (1 - 0.9**143) / 0.1  # effective numbers 4.0951 and ~10
    scale = 148 / (5 / e5 + 143 / e143)  # mean weight over the training pixels is 1
    torch.testing.assert_close(w, torch.tensor([scale / e5, scale / e143, 0.0]))
    assert w[0] / w[1] == pytest.approx(e143 / e5, rel=1e-6)  # ≈ 2.44: the small class weighs more
    assert (w[torch.tensor(labels)].mean()).item() == pytest.approx(1.0, rel=1e-6)
    torch.testing.assert_close(
        class_balance_weights(labels, 3, 0.0), torch.tensor([1.0, 1.0, 0.0])
    )  # β = 0: plain CE
    with pytest.raises(ValueError, match="β"):
        class_balance_weights(labels, 3, 1.0)


def test_weighted_ce_objective_is_the_weighted_mean():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 0, 1])
    w = torch.tensor([0.5, 2.0, 1.0])
    loss, logits, _ = ce_objective(class_weights=w)(model, x, y, None, None, 1)
    want = (w[y] * torch.nn.functional.cross_entropy(logits, y, reduction="none")).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    plain, _, _ = ce_objective()(model, x, y, None, None, 1)
    assert plain.item() != pytest.approx(loss.item(), rel=1e-3)
    ones, _, _ = ce_objective(class_weights=torch.ones(3))(model, x, y, None, None, 1)
    assert ones.item() == pytest.approx(plain.item(), rel=1e-6)


def test_cli_class_balance_is_recorded_and_checked(ip_crop_path, tmp_path, capsys):
    out = tmp_path / "cb"
    main(["train-student", "--student", "blm_test", "--dataset", str(ip_crop_path), "--epochs", "1", "--batch", "128",
          "--class-balance", "0.9", "--out", str(out), "--no-progress"])  # fmt: skip
    assert load_checkpoint(out).meta["training"]["class_balance"] == 0.9
    with pytest.raises(SystemExit):
        main(["train-student", "--student", "blm_test", "--dataset", str(ip_crop_path), "--epochs", "1",
              "--class-balance", "1", "--out", str(tmp_path / "bad"), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--class-balance must be in [0, 1)" in err[0]
