"""Real checkpoints for the export tests, trained once per test run on real Indian Pines.

The split is a fixed one read from two small maps (12 training and 25 test pixels per class at
most), so that training the tiny presets and checking every export on all test patches takes
seconds on two cores. The models are barely trained; the tests check that exports reproduce
them, not that they are good.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blmkd.bundle import DataOptions, prepare_data
from blmkd.checkpoint import load_checkpoint
from blmkd.models import create_model
from blmkd.training.config import TrainConfig
from blmkd.training.loop import fit


@pytest.fixture(scope="session")
def split_maps(tmp_path_factory):
    """Training and test maps (original class ids, 0 = unused) of a small seeded split."""
    from blmkd.data import load_scene

    scene = load_scene("indian_pines")
    rng = np.random.default_rng(0)
    train = np.zeros(scene.labels.shape, np.int64)
    test = np.zeros_like(train)
    for k, cid in enumerate(scene.class_ids):
        idx = rng.permutation(np.flatnonzero(scene.labels.ravel() == k))
        n_train = min(12, len(idx) // 3)
        train.ravel()[idx[:n_train]] = cid
        test.ravel()[idx[n_train : n_train + 25]] = cid
    d = tmp_path_factory.mktemp("maps")
    np.save(d / "train.npy", train)
    np.save(d / "test.npy", test)
    return d / "train.npy", d / "test.npy"


@pytest.fixture(scope="session")
def bundle(split_maps):
    opts = DataOptions(
        dataset="indian_pines", patch=7, seed=0, strategy="fixed", val=0.0, buffer=0,
        train_map=str(split_maps[0]), test_map=str(split_maps[1]),
    )  # fmt: skip
    return prepare_data(opts)


def _train(name: str, bundle, out, epochs: int):
    torch.manual_seed(0)
    model = create_model(name, bands=bundle.scene.bands, num_classes=bundle.scene.num_classes)
    if model.input_kind == "uint8":
        model.set_dequant(*[torch.as_tensor(a) for a in bundle.prep.dequant_affine()])
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=1e-2, warmup_epochs=0, eval_batch=2048, augment=False)
    fit(model, bundle, cfg, out, progress=False)
    return load_checkpoint(out)


@pytest.fixture(scope="session")
def student_ckpt(bundle, tmp_path_factory):
    """A ``blm_test`` student (uint8 input) checkpoint."""
    return _train("blm_test", bundle, tmp_path_factory.mktemp("student"), epochs=10)


@pytest.fixture(scope="session")
def teacher_ckpt(bundle, tmp_path_factory):
    """A ``ssa_mamba_test`` teacher (float input) checkpoint."""
    return _train("ssa_mamba_test", bundle, tmp_path_factory.mktemp("teacher"), epochs=1)


@pytest.fixture(scope="session")
def student_exports(student_ckpt, tmp_path_factory):
    """FP32, FP16, INT8 and INT8 byte-input ONNX exports of the student, made once."""
    from blmkd.export import export

    lines: list[str] = []
    out = tmp_path_factory.mktemp("student_exports")
    # 383 test patches: the default 1 pp OA-drop limit would be 4 patches of a barely trained model.
    arts = export(
        student_ckpt,
        ["onnx", "onnx-fp16", "onnx-int8", "onnx-int8-byte"],
        out,
        max_oa_drop=2.0,
        log=lines.append,
    )
    return {a.format: a for a in arts}, lines
