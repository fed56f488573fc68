"""Checkpoints: round trip, no pickle, tamper/truncation detection, atomic writes."""

from __future__ import annotations

import pytest
import torch

from blmkd.checkpoint import load_checkpoint, save_checkpoint
from blmkd.errors import ModelError
from blmkd.models import create_model


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = create_model("ssa_mamba_test", bands=12, num_classes=3).eval()
    path = save_checkpoint(
        tmp_path / "m.safetensors", model, {"data": {"classes": []}, "metrics": {"val_oa": 0.5}}
    )
    return model, path


def test_round_trip_gives_identical_logits(saved):
    model, path = saved
    x = torch.randn(4, 12, 7, 7)
    ck = load_checkpoint(path)
    rebuilt = ck.build_model()
    with torch.inference_mode():
        assert torch.equal(model(x), rebuilt(x))
    assert ck.meta["model"]["name"] == "ssa_mamba_test"
    assert ck.meta["metrics"]["val_oa"] == 0.5
    assert "torch" in ck.meta["versions"]
    assert path.with_suffix(".json").exists()


def test_run_directory_resolves_to_best(saved, tmp_path):
    _, path = saved
    path.rename(tmp_path / "best.safetensors")
    assert load_checkpoint(tmp_path).path.name == "best.safetensors"


def test_tampered_checkpoint_is_refused(saved):
    _, path = saved
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # flip bits inside the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="weights changed since it was written"):
        load_checkpoint(path)


def test_truncated_checkpoint_is_refused(saved):
    _, path = saved
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelError, match="not a readable"):
        load_checkpoint(path)


def test_plain_safetensors_without_metadata_is_refused(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(p))
    with pytest.raises(ModelError, match="without blmkd metadata"):
        load_checkpoint(p)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_interrupted_write_keeps_old_file(saved, monkeypatch):
    model, path = saved
    before = path.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("blmkd.checkpoint.save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, {})
    assert path.read_bytes() == before
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temporary file left behind"


def test_optimizer_state_round_trip(tmp_path):
    model = create_model("ssa_mamba_test", bands=12, num_classes=3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 12, 7, 7)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "last.safetensors", model, {}, optimizer=opt)
    st = load_checkpoint(tmp_path / "last.safetensors").optimizer_state()
    ref = opt.state_dict()
    assert st["param_groups"][0]["lr"] == ref["param_groups"][0]["lr"]
    for pid, s in ref["state"].items():
        assert torch.equal(st["state"][pid]["exp_avg"], s["exp_avg"])
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt2.load_state_dict(st)  # loads without error
