"""Byte-Latent Mamba students: shapes, SSD dual form vs recurrence, byte path, training, ONNX, budget."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from blmkd.errors import ModelError
from blmkd.models import create_model, list_models, model_config_dict
from blmkd.students.blm import BLMStudent
from blmkd.students.blocks import spiral_order

STUDENTS = list_models("student")
BANDS, K, P = 30, 5, 7


def _bytes(n, bands=BANDS, p=P, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, bands, p, p), dtype=torch.uint8, generator=g)


def test_registry_has_the_presets():
    assert {"blm_t", "blm_s", "blm_b", "blm_paper", "blm_test"} <= set(STUDENTS)


@pytest.mark.parametrize("name", STUDENTS)
def test_shapes_and_config(name):
    m = create_model(name, BANDS, K).eval()
    assert isinstance(m, BLMStudent) and m.blmkd_name == name and m.input_kind == "uint8"
    cfg = model_config_dict(m)
    assert cfg.pop("bands") == BANDS and cfg.pop("num_classes") == K
    assert create_model(name, BANDS, K, **cfg).config == m.config  # what a checkpoint rebuilds
    for p in (5, 7, 8):  # any patch size, odd or even
        logits, f = m(_bytes(3, p=p), return_features=True)
        assert logits.shape == (3, K) and f.shape == (3, m.config.d_model)
        assert torch.isfinite(logits).all()


def test_spiral_order_ends_at_centre():
    for p in (1, 3, 5, 7, 9):
        order = spiral_order(p)
        assert sorted(order) == list(range(p * p)) and order[-1] == (p // 2) * p + p // 2
    assert spiral_order(3) == (0, 1, 2, 5, 8, 7, 6, 3, 4)
    assert sorted(spiral_order(6)) == list(range(36))


@pytest.fixture(params=[(p, s) for p in ("mean", "center_mean") for s in ("spiral", "raster")], ids=str)
def two_layer_student(request):
    """A 2-layer test student in eval mode with a non-trivial in-graph dequantization, per pooling × scan."""
    pool, scan = request.param
    torch.manual_seed(0)
    m = create_model("blm_test", BANDS, K, pool=pool, scan=scan, n_layers=2).eval()
    m.set_dequant(torch.rand(BANDS) * 0.05 + 0.01, torch.randn(BANDS))
    return m


def test_uint8_path_equals_float_path(two_layer_student):
    m = two_layer_student
    x = _bytes(4)
    with torch.no_grad():
        y_u8 = m(x)
        y_f = m(m.dequantize(x))  # float input: used as is
        y_scene = m.forward_latent(m.encode(x))  # per-pixel encoder, then the windows
    torch.testing.assert_close(y_u8, y_f, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y_scene, y_f, rtol=1e-5, atol=1e-5)


def test_pixel_features_then_tokens_equals_forward(two_layer_student):
    """A scene map's path: per-pixel features of a whole image once, windows gathered in scan order."""
    m = two_layer_student
    P, H, W = 5, 9, 8
    img = torch.randint(0, 256, (1, BANDS, H, W), dtype=torch.uint8)
    with torch.no_grad():
        lat = m.encode(img)[0].permute(1, 2, 0)  # (H, W, d_model)
        fx, fz = m.pixel_features(lat)  # (H, W, d_inner) each
        assert fx.shape == fz.shape == (H, W, m.pixel_feature_dim)
        order = torch.tensor(m.scan_order(P))
        rows, cols = torch.meshgrid(torch.arange(H - P + 1), torch.arange(W - P + 1), indexing="ij")
        r = rows.reshape(-1, 1) + order // P  # (N, L) window pixel rows, in scan order
        c = cols.reshape(-1, 1) + order % P
        y_tok = m.forward_tokens(lat[r, c], fx[r, c], fz[r, c])  # (N, K)
        patches = torch.stack(
            [img[0, :, i : i + P, j : j + P] for i, j in zip(rows.flatten(), cols.flatten())]
        )
        y_ref = m(patches)
    torch.testing.assert_close(y_tok, y_ref, rtol=1e-5, atol=1e-5)


def test_set_dequant_checks_and_broadcasts():
    m = create_model("blm_test", BANDS, K)
    m.set_dequant(0.5, -1.0)
    assert torch.all(m.in_scale == 0.5) and torch.all(m.in_offset == -1.0)
    m.set_dequant(np.arange(BANDS, dtype=np.float64), np.zeros(BANDS))
    assert m.in_scale[3] == 3.0
    with pytest.raises(ModelError):
        m.set_dequant(np.ones(BANDS + 1), 0.0)
    assert "in_scale" in m.state_dict()  # a checkpoint carries the dequantization


def test_bad_config_raises():
    with pytest.raises(ModelError):
        create_model("blm_test", BANDS, K, pool="center")
    with pytest.raises(ModelError):
        create_model("blm_test", BANDS, K, n_heads=3)  # d_inner = 16


@pytest.mark.parametrize("name", STUDENTS)
def test_trains(name):
    torch.manual_seed(0)
    m = create_model(name, BANDS, K)
    x, y = _bytes(8, p=5), torch.randint(0, K, (8,))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)

    def eval_loss():
        with torch.no_grad():
            return F.cross_entropy(m.eval()(x), y).item()

    before = eval_loss()
    for step in range(3):
        loss = F.cross_entropy(m.train()(x), y)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            for n, p in m.named_parameters():
                assert p.grad is not None and torch.isfinite(p.grad).all(), n
                assert p.grad.abs().sum() > 0, f"no gradient reaches {n}"
        opt.step()
    assert eval_loss() < before


@pytest.mark.parametrize("pool", ["mean", "center_mean"])
def test_onnx_round_trip(pool):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    m = create_model("blm_test", BANDS, K, pool=pool, n_layers=2).eval()
    m.set_dequant(torch.rand(BANDS) * 0.05, torch.randn(BANDS))
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and folding notices
        torch.onnx.export(
            m,
            (_bytes(2),),
            f,
            opset_version=17,
            dynamo=False,
            input_names=["patches"],
            output_names=["logits"],
            dynamic_axes={"patches": {0: "batch"}, "logits": {0: "batch"}},
        )
    sess = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(uint8)"
    for n in (1, 5):  # other batch sizes than the traced one
        x = _bytes(n, seed=n)
        got = sess.run(None, {"patches": x.numpy()})[0]
        with torch.no_grad():
            np.testing.assert_allclose(got, m(x).numpy(), rtol=1e-4, atol=1e-4)


def _flops(model, x):
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def test_blm_s_budget():
    m = create_model("blm_s", 200, 16).eval()
    params = sum(p.numel() for p in m.parameters())
    flops = _flops(m, _bytes(1, bands=200))
    assert params <= 250_000
    assert flops <= 6e6  # 1/100 of the ~600 MFLOP teacher; the design target is ~2 MFLOP
    assert flops <= 2.2e6


def test_presets_grow_in_cost():
    x = _bytes(1, bands=200)
    costs = {n: _flops(create_model(n, 200, 16).eval(), x) for n in ("blm_t", "blm_s", "blm_b", "blm_paper")}
    assert costs["blm_t"] < costs["blm_s"] < costs["blm_b"] < costs["blm_paper"]
    params = sum(p.numel() for p in create_model("blm_paper", 200, 16).parameters())
    assert 0.5e6 < params < 0.8e6  # the paper's student: about 0.66 M
