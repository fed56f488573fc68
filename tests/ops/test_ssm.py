"""The teacher's LTI SSM: the Toeplitz kernel path against the step-by-step recurrence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blmkd.ops.ssm import ssm_conv, ssm_kernel, ssm_scan_ref


def _ssm_inputs(d_inner=6, N=3, L=49, d_state=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    f64 = dict(dtype=torch.float64, generator=g)
    u = torch.randn(d_inner, N, L, **f64)  # (d_inner, N, L) channel-major
    delta_log = torch.randn(d_inner, **f64)
    A_log = torch.randn(d_inner, d_state, **f64) * 0.5 - 1.0  # slow and fast decays
    B, C = torch.randn(d_inner, d_state, **f64), torch.randn(d_inner, d_state, **f64)
    D = torch.randn(d_inner, **f64)
    return [t.requires_grad_() for t in (u, delta_log, A_log, B, C, D)]


@pytest.mark.parametrize(
    "L,seed", [(1, 0), (2, 1), (17, 2), (49, 3), (int(np.random.default_rng(7).integers(3, 64)), 4)]
)
def test_ssm_conv_matches_scan_ref_values_and_grads(L, seed):
    inputs = _ssm_inputs(L=L, seed=seed)
    u, delta_log, A_log, B, C, D = inputs
    y_ref = ssm_scan_ref(u, delta_log, A_log, B, C, D)  # (d_inner, N, L)
    y_fast = ssm_conv(u, ssm_kernel(delta_log, A_log, B, C, D, L))  # (d_inner, N, L)
    assert y_fast.shape == y_ref.shape == u.shape
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-10, atol=1e-10)

    w = torch.randn(y_ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 100))
    g_ref = torch.autograd.grad((y_ref * w).sum(), inputs)
    g_fast = torch.autograd.grad((y_fast * w).sum(), inputs)
    for name, a, b in zip(("u", "delta_log", "A_log", "B", "C", "D"), g_fast, g_ref):
        if not (L == 1 and name == "A_log"):  # with one step the decay Ā never acts
            assert b.abs().max() > 0, name  # the gradient is not trivially zero
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=lambda m, name=name: f"d/d{name}: {m}")


def test_ssm_kernel_is_the_impulse_response():
    u, delta_log, A_log, B, C, D = (t.detach() for t in _ssm_inputs(N=1, L=20))
    impulse = torch.zeros_like(u)
    impulse[..., 0] = 1.0
    K = ssm_kernel(delta_log, A_log, B, C, D, 20)  # (d_inner, L)
    torch.testing.assert_close(
        ssm_scan_ref(impulse, delta_log, A_log, B, C, D)[:, 0], K, rtol=1e-12, atol=1e-12
    )
