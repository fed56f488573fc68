"""Training device and mixed precision: ``--device``/``--amp``, the device extractor, BF16 autocast.

The CPU parts run everywhere (BF16 autocast works on any CPU, only slowly); the GPU parts are
marked ``cuda`` and skipped with the reason where no CUDA GPU is visible.
"""

from __future__ import annotations

import re

import pytest
import torch

import blmkd.distributed as D
from blmkd.bench.machine import cuda_status
from blmkd.checkpoint import load_checkpoint
from blmkd.cli import main
from blmkd.errors import BlmkdError, TrainingError
from blmkd.models import create_model
from blmkd.training.config import TrainConfig
from blmkd.training.loop import fit

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to PyTorch")


@pytest.fixture(autouse=True)
def _cpu_afterwards():
    yield
    D.set_local_device("cpu")


def test_resolve_device_names_and_refusals():
    assert D.resolve_device("cpu") == torch.device("cpu")
    assert D.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(BlmkdError, match="cpu, cuda, cuda:N or auto"):
        D.resolve_device("tpu")
    if not torch.cuda.is_available():
        why = cuda_status()[
            1
        ]  # "no CUDA GPU visible ..." or "built without CUDA": the one CUDA check's reason
        with pytest.raises(BlmkdError, match=re.escape(f"--device cuda: {why}")):
            D.resolve_device("cuda")


def test_local_device_is_what_a_single_process_trains_on():
    assert D.init_from_env().device == torch.device("cpu")
    D.set_local_device("cpu")
    assert D.context().device == torch.device("cpu")


def test_amp_mode_is_checked():
    with pytest.raises(TrainingError, match="--amp"):
        TrainConfig(amp="fp8")


@pytest.mark.parametrize(
    "args, message",
    [(["--device", "tpu"], "--device must be"), (["--amp", "fp8"], "--amp must be one of")],
)
@pytest.mark.parametrize("command", ["train-teacher", "train-student"])
def test_cli_refuses_a_bad_device_or_precision_in_one_line(command, args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, *args, "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr()
    text = err.out + err.err
    assert exc.value.code == 2 and message in text and "Traceback" not in text
    assert len(text.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # refused before any data or model was touched


def test_bf16_autocast_training_runs_and_is_recorded(ip_bundle, tmp_path):
    torch.manual_seed(0)
    model = create_model("blm_test", bands=ip_bundle.scene.bands, num_classes=ip_bundle.scene.num_classes)
    model.set_dequant(*[torch.as_tensor(a) for a in ip_bundle.prep.dequant_affine()])
    seen = []

    def probe(m, x, y, idx, variants, epoch):  # the objective runs inside the autocast region
        seen.append(torch.is_autocast_enabled("cpu"))
        logits = m(x)
        return torch.nn.functional.cross_entropy(logits.float(), y), logits, {}

    res = fit(model, ip_bundle, TrainConfig(epochs=1, batch_size=128, patience=0, amp="bf16"), tmp_path,
              objective=probe, progress=False)  # fmt: skip
    assert seen and all(seen)
    assert 0.0 <= res.test["oa"] <= 1.0
    assert load_checkpoint(tmp_path / "best.safetensors").meta["training"]["amp"] == "bf16"


def test_fp32_training_runs_without_autocast(ip_bundle, tmp_path):
    model = create_model("blm_test", bands=ip_bundle.scene.bands, num_classes=ip_bundle.scene.num_classes)
    seen = []

    def probe(m, x, y, idx, variants, epoch):
        seen.append(torch.is_autocast_enabled("cpu"))
        logits = m(x)
        return torch.nn.functional.cross_entropy(logits, y), logits, {}

    fit(
        model,
        ip_bundle,
        TrainConfig(epochs=1, batch_size=128, patience=0),
        tmp_path,
        objective=probe,
        progress=False,
    )
    assert seen and not any(seen)


def test_cpu_extractor_is_the_bundle_s_own(ip_bundle):
    assert ip_bundle.extractor("uint8", "cpu") is ip_bundle.extractor("uint8")
    assert ip_bundle.extractor("float", None) is ip_bundle.extractor("float")


@pytest.mark.cuda
@needs_cuda
def test_device_extractor_cuts_the_same_windows_on_the_gpu(ip_bundle):
    rows, cols, _ = ip_bundle.coords("train")
    for kind in ("uint8", "float"):
        on_gpu = ip_bundle.extractor(kind, "cuda")
        assert on_gpu is ip_bundle.extractor(kind, "cuda")  # uploaded once
        got = on_gpu.gather(rows[:50], cols[:50])
        assert got.is_cuda and got.dtype == ip_bundle.extractor(kind).dtype
        assert torch.equal(got.cpu(), ip_bundle.extractor(kind).gather(rows[:50], cols[:50]))


@pytest.mark.cuda
@needs_cuda
def test_training_on_the_gpu_matches_the_cpu_closely(ip_bundle, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=128, patience=0, augment=False, seed=3)
    results = {}
    for dev in ("cpu", "cuda"):
        D.set_local_device(dev)
        torch.manual_seed(0)
        model = create_model(  # no dropout: the two devices would draw different masks
            "ssa_mamba_test",
            bands=ip_bundle.scene.bands,
            num_classes=ip_bundle.scene.num_classes,
            dropout=0.0,
        )
        res = fit(model, ip_bundle, cfg, tmp_path / dev, progress=False)
        results[dev] = res
        assert next(model.parameters()).device.type == "cpu"  # handed back where it came from
    assert abs(results["cpu"].test["oa"] - results["cuda"].test["oa"]) < 0.05
