"""Seals on checkpoints, legacy checkpoints, file modes, class names, and the small things around them."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from blmkd.checkpoint import load_checkpoint, save_checkpoint
from blmkd.data.scene import Scene, read_class_names, with_class_names
from blmkd.errors import DataError, ModelError
from blmkd.integrity import changed_parts, seal
from blmkd.models import create_model


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = create_model("ssa_mamba_test", bands=12, num_classes=3).eval()
    meta = {"data": {"classes": []}, "preprocessing": {"mean": [1.5, 2.5]}, "split": {"seed": 0}}
    return save_checkpoint(tmp_path / "m.safetensors", model, meta)


def test_seal_names_each_changed_part():
    s = seal({"a": b"1", "b": b"2"})
    assert changed_parts(s, {"a": b"1", "b": b"2"}) == []
    assert changed_parts(s, {"a": b"1", "b": b"3"}) == ["b"]
    assert changed_parts(s, {"a": b"1", "b": b"2", "c": b""}) == ["c"]
    assert changed_parts({**s, "parts": {"a": "0" * 64, "b": s["parts"]["b"]}}, {"a": b"1", "b": b"2"}) == [
        "seal"
    ]
    assert changed_parts("no seal", {}) is None


@pytest.mark.parametrize(
    "change,named",
    [
        (lambda m: m["preprocessing"]["mean"].__setitem__(0, 1.6), "preprocessing"),
        (lambda m: m["split"].__setitem__("seed", 1), "split"),
        (lambda m: m["model"]["config"].__setitem__("num_classes", 4), "model"),
        (lambda m: m.pop("data"), "data"),
    ],
    ids=["preprocessing", "split", "config", "removed section"],
)
def test_edited_metadata_is_refused_by_name(saved, change, named, edit_checkpoint_meta):
    edit_checkpoint_meta(saved, saved, change)
    with pytest.raises(ModelError, match=rf": {named} changed since it was written"):
        load_checkpoint(saved)


def test_legacy_checkpoint_loads_with_one_note(saved, capsys, edit_checkpoint_meta):
    """Files written before the seal (no "integrity") still load; their tensors are still checked."""
    edit_checkpoint_meta(saved, saved, lambda m: m.pop("integrity"))
    ck = load_checkpoint(saved)
    load_checkpoint(saved)
    err = capsys.readouterr().err
    assert err.count("predates sealed metadata") == 1 and ck.model_name == "ssa_mamba_test"
    data = bytearray(saved.read_bytes())
    data[-5] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="tensor checksum mismatch"):
        load_checkpoint(saved)


def test_files_get_the_users_umask(tmp_path):
    torch.manual_seed(0)
    model = create_model("ssa_mamba_test", bands=12, num_classes=3)
    old = os.umask(0o027)
    try:
        p = save_checkpoint(tmp_path / "m.safetensors", model, {})
    finally:
        os.umask(old)
    assert (p.stat().st_mode & 0o777) == 0o640
    assert (p.with_suffix(".json").stat().st_mode & 0o777) == 0o640


def _scene() -> Scene:
    labels = np.array([[0, 1], [2, -1]], np.int32)
    return Scene("s", np.zeros((2, 2, 3), np.float32), labels, [2, 5, 9], ["class 2", "class 5", "class 9"])


def test_class_names_from_a_file(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("# names\nCorn\n\nWheat\nSoy\n")
    by_id = tmp_path / "ids.txt"
    by_id.write_text("9: Soy\n2: Corn\n5: Wheat\n")
    sc = _scene()
    assert with_class_names(sc, read_class_names(plain)).class_names == ["Corn", "Wheat", "Soy"]
    assert with_class_names(sc, read_class_names(by_id)).class_names == ["Corn", "Wheat", "Soy"]
    assert sc.class_names == ["class 2", "class 5", "class 9"]  # the original is not mutated
    assert with_class_names(sc, {"2": "a", "5": "b", "9": "c"}).class_names == [
        "a",
        "b",
        "c",
    ]  # ids from JSON
    with pytest.raises(DataError, match="2 class names for 3 classes"):
        with_class_names(sc, ["a", "b"])
    with pytest.raises(DataError, match=r"ids \[7\] do not fit"):
        with_class_names(sc, {2: "a", 5: "b", 9: "c", 7: "d"})


def test_train_records_class_names(ip_crop_path, tmp_path):
    from blmkd.cli import main

    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"crop class {i}" for i in range(10)) + "\n")
    main(["train-student", "--student", "blm_test", "-d", str(ip_crop_path), "--class-names", str(names),
          "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress"])  # fmt: skip
    ck = load_checkpoint(tmp_path / "run")
    assert [c["name"] for c in ck.meta["data"]["classes"]] == [f"crop class {i}" for i in range(10)]
    from blmkd.bundle import bundle_from_checkpoint

    assert bundle_from_checkpoint(ck).scene.class_names[3] == "crop class 3"  # rebuilt without the file


def test_compare_follows_symlinked_runs(ip_crop_path, tmp_path):
    from blmkd.compare import collect_runs

    main_args = [
        "train-student",
        "--student",
        "blm_test",
        "-d",
        str(ip_crop_path),
        "--epochs",
        "1",
        "--no-progress",
    ]
    from blmkd.cli import main

    main([*main_args, "--seed", "1", "--out", str(tmp_path / "real" / "seed_1")])
    (tmp_path / "group").mkdir()
    (tmp_path / "group" / "seed_1").symlink_to(tmp_path / "real" / "seed_1", target_is_directory=True)
    (tmp_path / "group" / "loop").symlink_to(tmp_path / "group", target_is_directory=True)  # a loop ends
    runs = collect_runs(tmp_path / "group")
    assert [r.dir.name for r in runs] == ["seed_1"] and runs[0].seed == 1


def test_bench_row_labels_are_unique():
    from blmkd.bench.runner import _unique_names

    rows = [{"name": "blm_t · PyTorch", "path": "runs/a/best.safetensors"},
            {"name": "blm_t · PyTorch", "path": "runs/b/best.safetensors"},
            {"name": "blm_t · ONNX FP32", "path": "x/blm_t.onnx"},
            {"name": "blm_t · ONNX FP32", "path": "x/blm_t.onnx"}]  # fmt: skip
    _unique_names(rows)
    names = [r["name"] for r in rows]
    assert len(set(names)) == 4
    assert (
        names[0] == "blm_t · PyTorch (a/best.safetensors)"
        and names[1] == "blm_t · PyTorch (b/best.safetensors)"
    )


def test_bench_fails_an_export_that_contradicts_its_recorded_check():
    """An export whose results here fall short of its own export check never gets ✅."""
    from types import SimpleNamespace

    from blmkd.bench.runner import _check_recorded

    bundle = SimpleNamespace(split=SimpleNamespace(spec={"digest": "d1"}))
    rec = {"check": {"agreement": 1.0}, "checkpoint_test_oa": 0.8, "split": {"digest": "d1"}}
    rows = [
        {"status": "ok", "kind": "onnx", "agreement": 0.5, "oa": 0.4, "recorded": rec},  # vs its checkpoint
        {"status": "ok", "kind": "onnx", "agreement": 0.99, "oa": 0.79, "recorded": rec},  # within the slack
        {"status": "ok", "kind": "c", "agreement": None, "oa": 0.0, "recorded": rec},  # no checkpoint: vs its OA
        {"status": "ok", "kind": "c", "agreement": None, "oa": 0.0,
         "recorded": {**rec, "split": {"digest": "other"}}},  # another split: nothing to hold it to
    ]  # fmt: skip
    _check_recorded(rows, bundle, evaluated_all=True)
    assert [r["status"] for r in rows] == ["failed", "ok", "failed", "ok"]
    assert "agrees with its PyTorch checkpoint on 50.00%" in rows[0]["reason"]
    assert "OA 0.00% on its own test split, its checkpoint recorded 80.00%" in rows[2]["reason"]
    assert all("recorded" not in r for r in rows)
