"""The students' selective SSM: the SSD dual form against the step-by-step recurrence."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from blmkd.ops.ssd import ssd_dual, ssd_scan_ref


def _ssd_inputs(N=2, H=3, Pd=4, L=11, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    f64 = dict(dtype=torch.float64, generator=g)
    x = torch.randn(N, H, Pd, L, **f64)
    dt = F.softplus(torch.randn(N, H, L, **f64))  # positive, some large: strong decays
    A = -torch.exp(torch.randn(H, **f64))
    B, C = torch.randn(N, n, L, **f64), torch.randn(N, n, L, **f64)
    D = torch.randn(H, **f64)
    return [t.requires_grad_() for t in (x, dt, A, B, C, D)]


def test_ssd_dual_equals_recurrence_values_and_grads():
    args = _ssd_inputs()
    y_ref = ssd_scan_ref(*args)
    y = ssd_dual(*args)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    w = torch.randn_like(y_ref)
    g_ref = torch.autograd.grad((y_ref * w).sum(), args)
    g = torch.autograd.grad((y * w).sum(), args)
    for a, b in zip(g, g_ref, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_ssd_dual_does_not_overflow_on_strong_decay():
    x, dt, A, B, C, D = (t.detach() for t in _ssd_inputs(L=49))
    y = ssd_dual(x.float(), (dt * 100).float(), A.float(), B.float(), C.float(), D.float())
    assert torch.isfinite(y).all()  # exp(S_t - S_s) above the diagonal would be ~e^1000
