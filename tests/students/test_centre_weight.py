"""Centre-weighted pooling: (1 − w)·mean + w·centre, on students and teachers, through ONNX."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

from blmkd.errors import ModelError
from blmkd.models import create_model, model_config_dict

BANDS, K, P = 12, 4, 5


def _bytes(n, p=P, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, BANDS, p, p), dtype=torch.uint8, generator=g)


def _floats(n, p=P, seed=0):
    return torch.randn(n, BANDS, p, p, generator=torch.Generator().manual_seed(seed))


def _pair(name, **cfg):
    """Two models with the same weights, one with ``cfg``."""
    torch.manual_seed(0)
    a = create_model(name, BANDS, K).eval()
    b = create_model(name, BANDS, K, **cfg).eval()
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("name", ["blm_test", "ssa_mamba_test"])
def test_default_is_the_plain_mean_and_weight_moves_the_logits(name):
    x = _bytes(6) if name.startswith("blm") else _floats(6)
    a, zero = _pair(name, centre_weight=0.0)
    _, w = _pair(name, centre_weight=0.7)
    assert model_config_dict(a)["centre_weight"] == 0.0  # what a checkpoint records by default
    with torch.no_grad():
        torch.testing.assert_close(zero(x), a(x), rtol=0, atol=0)  # exactly today's output
        assert (w(x) - a(x)).abs().max() > 1e-3


def test_student_pooling_formula():
    a, w = _pair("blm_test", centre_weight=0.3)
    x = _bytes(3)
    with torch.no_grad():
        _, f0 = a(x, return_features=True)
        logits, f = w(x, return_features=True)
        # the centre token's normed feature, recovered from pure-centre pooling
        _, c = _pair("blm_test", centre_weight=1.0)[1](x, return_features=True)
    torch.testing.assert_close(f, 0.7 * f0 + 0.3 * c, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, w.head(f), rtol=1e-5, atol=1e-6)


def test_center_mean_pool_is_weight_one_half_bit_for_bit():
    _, old = _pair("blm_test", pool="center_mean")
    _, new = _pair("blm_test", centre_weight=0.5)
    x = _bytes(8)
    with torch.no_grad():
        torch.testing.assert_close(old(x), new(x), rtol=0, atol=0)
    assert old.centre_weight == 0.5 and new.centre_weight == 0.5


@pytest.mark.parametrize("name", ["blm_test", "ssa_mamba_test"])
@pytest.mark.parametrize("w", [-0.1, 1.5])
def test_weight_outside_unit_interval_is_a_model_error(name, w):
    with pytest.raises(ModelError, match="centre_weight"):
        create_model(name, BANDS, K, centre_weight=w)


def test_center_mean_and_a_weight_together_are_refused():
    with pytest.raises(ModelError, match="center_mean. is centre weight"):
        create_model("blm_test", BANDS, K, pool="center_mean", centre_weight=0.2)


@pytest.mark.parametrize("name", ["blm_test", "ssa_mamba_test"])
def test_onnx_round_trip_with_centre_weight(name):
    ort = pytest.importorskip("onnxruntime")
    _, m = _pair(name, centre_weight=0.4)
    make = _bytes if name.startswith("blm") else _floats
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (make(2),), f, opset_version=17, dynamo=False, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})  # fmt: skip
    sess = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    x = make(5, seed=3)
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {"x": x.numpy()})[0], m(x).numpy(), rtol=1e-4, atol=1e-4)
