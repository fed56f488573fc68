"""SSA-Mamba teacher: presets, fast SSM vs the reference recurrence, training step, ONNX round trip."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from blmkd.errors import ModelError
from blmkd.models import create_model, list_models, model_config_dict
from blmkd.teachers.ssa_mamba import SSAMamba, SSAMambaConfig, _fold_bn

TEACHERS = list_models("teacher")
BANDS, K = 200, 16


def test_registry_has_the_presets():
    assert {"ssa_mamba", "ssa_mamba_s", "ssa_mamba_t", "ssa_mamba_test"} <= set(TEACHERS)


@pytest.mark.parametrize("name", TEACHERS)
def test_preset_output_shapes(name):
    torch.manual_seed(0)
    model = create_model(name, BANDS, K).eval()
    assert isinstance(model, SSAMamba) and isinstance(model.config, SSAMambaConfig)
    assert model.blmkd_name == name and model.blmkd_family == "teacher" and model.input_kind == "float"
    assert model_config_dict(model)["bands"] == BANDS
    n = 2 if name == "ssa_mamba" else 5
    x = torch.randn(n, BANDS, 7, 7)
    with torch.no_grad():
        logits, feat = model(x, return_features=True)
        plain = model(x)
    assert logits.shape == (n, K) and feat.shape == (n, model.config.d_model)
    assert torch.isfinite(logits).all() and torch.equal(plain, logits)


@pytest.mark.parametrize("P", [1, 5, 9])
def test_any_odd_patch_size(P):
    model = create_model("ssa_mamba_test", 12, 4).eval()
    with torch.no_grad():
        assert model(torch.randn(3, 12, P, P)).shape == (3, 4)


def test_batch_items_are_independent_in_eval():
    torch.manual_seed(0)
    model = create_model("ssa_mamba_test", 12, 4).eval()
    x = torch.randn(6, 12, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[2:4], model(x[2:4]), rtol=1e-5, atol=1e-6)


def test_inference_and_autograd_paths_agree():
    # Without autograd the branches reuse buffers in place; with it they must not, same values.
    torch.manual_seed(0)
    model = create_model("ssa_mamba_test", 12, 4).eval()
    x = torch.randn(4, 12, 7, 7)
    with_grad = model(x)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), with_grad.detach(), rtol=0, atol=0)


# ─── SSM: the model on the fast kernel vs on the reference (kernels: tests/ops) ──


def test_model_conv_and_scan_agree():
    torch.manual_seed(0)
    fast = create_model("ssa_mamba_test", 12, 4).double().eval()
    ref = create_model("ssa_mamba_test", 12, 4, ssm_impl="scan").double().eval()
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(3, 12, 7, 7, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-10, atol=1e-10)


def test_bn_folding_matches_batchnorm():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1)
    bn = torch.nn.BatchNorm2d(6).eval()
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.normal_()
    bn.bias.data.normal_()
    x = torch.randn(2, 4, 5, 5)
    w, b = _fold_bn(conv.weight, conv.bias, bn)
    with torch.no_grad():
        torch.testing.assert_close(F.conv2d(x, w, b, padding=1), bn(conv(x)), rtol=1e-5, atol=1e-5)


# ─── Training ─────────────────────────────────────────────────────────────────


def test_one_step_lowers_the_loss_and_reaches_every_parameter():
    torch.manual_seed(0)
    model = create_model("ssa_mamba_test", 12, 4, dropout=0.0).train()
    x, y = torch.randn(16, 12, 7, 7), torch.randint(0, 4, (16,))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss0 = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss0.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    for n in ("A_log", "delta_log", "ssm.B", "ssm.C", "ssm.D"):  # the SSM parameters learn through the kernel
        assert all(p.grad.abs().max() > 0 for name, p in model.named_parameters() if name.endswith(n))
    opt.step()
    with torch.no_grad():
        loss1 = F.cross_entropy(model(x), y)
    assert loss1 < loss0 - 1e-3


def test_train_mode_updates_the_branch_batchnorm_statistics():
    model = create_model("ssa_mamba_test", 12, 4).train()
    bn = model.blocks[0].spectral_branch.conv_bn
    before = bn.running_mean.clone()
    model(torch.randn(4, 12, 7, 7))
    assert not torch.equal(bn.running_mean, before)


# ─── Export ───────────────────────────────────────────────────────────────────


def test_onnx_round_trip(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = create_model("ssa_mamba_test", 12, 5).eval()
    path = tmp_path / "ssa_mamba_test.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
        torch.onnx.export(
            model,
            (torch.randn(2, 12, 7, 7),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        x = torch.randn(n, 12, 7, 7)
        (got,) = session.run(None, {"x": x.numpy()})
        with torch.no_grad():
            want = model(x).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# ─── Errors ───────────────────────────────────────────────────────────────────


def test_unknown_preset_is_a_model_error():
    with pytest.raises(ModelError, match="unknown model preset"):
        create_model("ssa_mamba_xxl", BANDS, K)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"n_heads": 3}, "divisible"),
        ({"ssm_impl": "cuda"}, "ssm_impl"),
        ({"no_such_field": 1}, "bad options"),
    ],
)
def test_bad_options_are_model_errors(overrides, message):
    with pytest.raises(ModelError, match=message):
        create_model("ssa_mamba_test", BANDS, K, **overrides)


@pytest.mark.parametrize("name", TEACHERS)
def test_presets_build_the_sizes_their_descriptions_and_config_state(name):
    """The config reaches the modules (widths, depth, state size, heads), and each preset's listed
    description (``blmkd models``) states the sizes it builds."""
    import re

    from blmkd.models import model_entry

    model = create_model(name, BANDS, K)
    cfg = model.config
    assert len(model.blocks) == cfg.depth and model.head.weight.shape == (K, cfg.d_model)
    assert cfg.d_inner == cfg.expand * cfg.d_model
    a_logs = [p for n, p in model.named_parameters() if n.endswith("A_log")]
    assert len(a_logs) == 2 * cfg.depth and all(a.shape == (cfg.d_inner, cfg.d_state) for a in a_logs)
    assert all(b.cross_attn.n_heads == cfg.n_heads for b in model.blocks)
    stated = dict(re.findall(r"(d_model|depth|d_state) (\d+)", model_entry(name).description))
    assert stated and all(getattr(cfg, k) == int(v) for k, v in stated.items()), (stated, cfg)


def test_the_paper_preset_is_the_default_config():
    # the paper's size (d_model 256, d_state 16, 4 blocks, as the config comments say): the preset overrides nothing
    assert create_model("ssa_mamba", BANDS, K).config == SSAMambaConfig(bands=BANDS, num_classes=K)
    cfg = SSAMambaConfig(bands=BANDS, num_classes=K)
    assert (cfg.d_model, cfg.d_state, cfg.depth) == (256, 16, 4)
