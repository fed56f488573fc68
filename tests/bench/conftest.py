"""Tiny checkpoints trained once per module on real Indian Pines, and their ONNX exports.

One epoch of ``blm_test`` (uint8 student) and ``ssa_mamba_test`` (float teacher) on the default
10 % split: barely trained, which is all the benchmark and mapping tests need (they check that
numbers are measured, reported and consistent, not that the models are good).
"""

from __future__ import annotations

import pytest
import torch

from blmkd.bundle import DataOptions, prepare_data
from blmkd.checkpoint import load_checkpoint
from blmkd.models import create_model
from blmkd.training.config import TrainConfig
from blmkd.training.loop import fit


@pytest.fixture(scope="package")
def ip_bundle():
    return prepare_data(DataOptions(patch=7, seed=0))


def _train(name: str, bundle, out):
    torch.manual_seed(0)
    model = create_model(name, bands=bundle.scene.bands, num_classes=bundle.scene.num_classes)
    if model.input_kind == "uint8":
        model.set_dequant(*[torch.as_tensor(a) for a in bundle.prep.dequant_affine()])
    fit(model, bundle, TrainConfig(epochs=1, batch_size=256, eval_batch=2048), out, progress=False)
    return load_checkpoint(out)


@pytest.fixture(scope="package")
def student_ckpt(ip_bundle, tmp_path_factory):
    return _train("blm_test", ip_bundle, tmp_path_factory.mktemp("student"))


@pytest.fixture(scope="package")
def teacher_ckpt(ip_bundle, tmp_path_factory):
    return _train("ssa_mamba_test", ip_bundle, tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="package")
def student_onnx(student_ckpt, tmp_path_factory):
    """FP32 and INT8 ONNX exports of the student: ``{"fp32": path, "int8": path}``."""
    from blmkd.export import export

    out = tmp_path_factory.mktemp("student_onnx")
    arts = export(student_ckpt, ["onnx", "onnx-int8"], out, eval_size=256, calib_size=64, min_agreement=0.0,
                  max_oa_drop=100.0, log=lambda s: None)  # fmt: skip
    return {a.precision: a.path for a in arts}
