"""Model selection: equal validation OAs are told apart by the validation loss, and the run says why."""

from __future__ import annotations

import json
import math

import pytest
import torch

from blmkd.bundle import DataOptions, prepare_data
from blmkd.checkpoint import load_checkpoint
from blmkd.models import create_model
from blmkd.training.config import TrainConfig
from blmkd.training.loop import fit
from blmkd.training.summary import better, selection_facts


@pytest.fixture(scope="module")
def easy_bundle(tmp_path_factory):
    """A tiny synthetic scene of 4 quadrants with distinct noisy spectra: a tiny student reaches every
    validation pixel within a few epochs and keeps learning after, so many epochs tie at OA 1."""
    import numpy as np

    rng = np.random.default_rng(0)
    gt = np.zeros((20, 20), np.uint8)
    gt[:10, :10], gt[:10, 10:], gt[10:, :10], gt[10:, 10:] = 1, 2, 3, 4
    spectra = rng.random((5, 8)).astype(np.float32)  # (ids, bands)
    cube = spectra[gt] + 0.1 * rng.standard_normal((20, 20, 8)).astype(np.float32)  # (H, W, B)
    path = tmp_path_factory.mktemp("syn") / "easy.npz"
    np.savez(path, cube=cube, gt=gt)
    return prepare_data(DataOptions(dataset=str(path), train=0.1, val=0.1, patch=3))


def test_better_breaks_ties_by_loss_only():
    assert better(0.9, 5.0, 0.8, 0.1)  # higher OA wins whatever the loss
    assert not better(0.8, 0.01, 0.9, 5.0)
    assert better(0.9, 0.2, 0.9, 0.3)  # equal OA: lower loss wins
    assert not better(0.9, 0.3, 0.9, 0.3)  # equal both: the earlier epoch stays
    assert better(0.9, 0.3, 0.9, math.inf)  # a resumed run that recorded no loss


def test_selection_facts_say_which_epoch_and_why():
    rows = [{"epoch": 1, "val_oa": 0.5}, {"epoch": 2, "val_oa": 0.75}, {"epoch": 3, "val_oa": 0.75},
            {"epoch": 4, "val_oa": 0.75}, {"epoch": 5, "val_oa": 0.7}]  # fmt: skip
    f = selection_facts(rows, 4, 0.75, 0.0831, True)
    assert (f["epoch"], f["tied_epochs"], f["first_epoch_at_best_oa"], f["on"]) == (4, 2, 2, "validation")
    assert f["reason"] == "val OA 0.7500 (tied with 2 epochs), lowest val loss 0.0831"
    g = selection_facts(rows, 1, 0.5, 1.2, False)
    assert g["reason"] == "train OA 0.5000 (highest)" and g["tied_epochs"] == 0


def test_ties_in_val_oa_keep_the_lowest_loss_epoch_not_the_first(easy_bundle, tmp_path):
    torch.manual_seed(0)
    b = easy_bundle
    model = create_model("blm_test", bands=b.scene.bands, num_classes=b.scene.num_classes)
    model.set_dequant(*[torch.as_tensor(a) for a in b.prep.dequant_affine()])
    cfg = TrainConfig(epochs=12, batch_size=16, lr=1e-2, warmup_epochs=1, patience=0)
    res = fit(model, b, cfg, tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    top = max(r["val_oa"] for r in rows)
    tied = [r for r in rows if r["val_oa"] == top]
    assert len(tied) >= 3, f"the scene should give ties at the top OA: {[r['val_oa'] for r in rows]}"
    want = min(tied, key=lambda r: (r["val_loss"], r["epoch"]))
    assert res.best_epoch == want["epoch"]
    assert res.best_epoch > tied[0]["epoch"]  # not the first, under-trained epoch at that OA
    best = load_checkpoint(tmp_path)
    assert best.meta["train_state"]["best_epoch"] == res.best_epoch
    assert best.meta["metrics"]["epoch"] == res.best_epoch  # the weights are that epoch's
    sel = best.meta["metrics"]["selection"]
    assert sel == res.selection
    assert sel["epoch"] == res.best_epoch and sel["tied_epochs"] == len(tied) - 1
    assert sel["val_loss"] == pytest.approx(want["val_loss"])
    assert f"tied with {len(tied) - 1} epochs" in sel["reason"] and "lowest val loss" in sel["reason"]
    # the recorded validation loss is the mean cross-entropy of the kept weights on the validation pixels
    vr, vc, vy = b.coords("val")
    m = best.build_model()
    with torch.inference_mode():
        ce = torch.nn.functional.cross_entropy(
            m(b.extractor(m.input_kind).gather(vr, vc)), torch.as_tensor(vy)
        )
    assert float(ce) == pytest.approx(sel["val_loss"], rel=1e-4)


def test_resume_keeps_the_tie_break_state_and_reads_old_checkpoints(easy_bundle, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    b = easy_bundle

    def student():
        torch.manual_seed(0)
        m = create_model("blm_test", bands=b.scene.bands, num_classes=b.scene.num_classes)
        m.set_dequant(*[torch.as_tensor(a) for a in b.prep.dequant_affine()])
        return m

    fit(
        student(),
        b,
        TrainConfig(epochs=3, batch_size=16, lr=1e-2, warmup_epochs=1, patience=0),
        tmp_path,
        progress=False,
    )
    st = load_checkpoint(tmp_path / "last.safetensors").meta["train_state"]
    assert math.isfinite(st["best_val_loss"]) and st["best_val_loss"] > 0
    # A checkpoint written before the tie-break existed has no best_val_loss: it still resumes.
    last = tmp_path / "last.safetensors"
    with safe_open(str(last), framework="pt") as fh:
        meta = json.loads(fh.metadata()["blmkd"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    del meta["train_state"]["best_val_loss"]
    meta.pop("integrity", None)  # a checkpoint from before both the tie-break and the seal
    save_file(tensors, str(last), metadata={"blmkd": json.dumps(meta)})
    res = fit(student(), b, TrainConfig(epochs=5, batch_size=16, lr=1e-2, warmup_epochs=1, patience=0), tmp_path,
              resume=True, progress=False)  # fmt: skip
    assert res.epochs_run == 5
    st = load_checkpoint(tmp_path / "last.safetensors").meta["train_state"]
    assert st["epoch"] == 5 and math.isfinite(st["best_val_loss"])
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5] and all("val_loss" in r for r in rows)
