"""The causal depthwise convolution: shifted multiply-adds against ``nn.Conv1d`` and the reference."""

from __future__ import annotations

import pytest
import torch

from blmkd.ops.conv import causal_depthwise_conv, causal_depthwise_conv_ref


@pytest.mark.parametrize("k,L", [(3, 49), (3, 2), (4, 9), (4, 3), (1, 5)])
def test_causal_depthwise_conv_matches_conv1d(k, L):
    g = torch.Generator().manual_seed(k * 100 + L)
    C, N = 5, 3
    u = torch.randn(C, N, L, dtype=torch.float64, generator=g)
    conv = torch.nn.Conv1d(C, C, k, padding=k - 1, groups=C).double()
    in_bias = torch.randn(C, dtype=torch.float64, generator=g)
    x = (u + in_bias[:, None, None]).transpose(
        0, 1
    )  # (N, C, L): the input with its bias, zero-padded by the conv
    with torch.no_grad():
        want = conv(x)[..., :L].transpose(0, 1)  # (C, N, L)
        got = causal_depthwise_conv(u, conv.weight[:, 0], conv.bias, in_bias=in_bias)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # Backward (the in-place slice updates under autograd): same gradients as conv1d.
    u1, u2 = u.clone().requires_grad_(), u.clone().requires_grad_()
    w2 = conv.weight[:, 0].detach().clone().requires_grad_()
    gy = torch.randn(C, N, L, dtype=torch.float64, generator=g)
    (conv((u1 + in_bias[:, None, None]).transpose(0, 1))[..., :L].transpose(0, 1) * gy).sum().backward()
    (causal_depthwise_conv(u2, w2, conv.bias, in_bias=in_bias) * gy).sum().backward()
    torch.testing.assert_close(u2.grad, u1.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(w2.grad, conv.weight.grad[:, 0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("with_in_bias", [True, False])
@pytest.mark.parametrize("k,L", [(3, 49), (4, 3), (1, 5)])
def test_reference_matches_conv1d_and_the_fast_kernel(k, L, with_in_bias):
    g = torch.Generator().manual_seed(k * 10 + L)
    C, N = 4, 2
    u = torch.randn(C, N, L, dtype=torch.float64, generator=g)
    conv = torch.nn.Conv1d(C, C, k, padding=k - 1, groups=C).double()
    in_bias = torch.randn(C, dtype=torch.float64, generator=g) if with_in_bias else None
    x = u if in_bias is None else u + in_bias[:, None, None]
    with torch.no_grad():
        want = conv(x.transpose(0, 1))[..., :L].transpose(0, 1)  # (C, N, L)
        ref = causal_depthwise_conv_ref(u, conv.weight[:, 0], conv.bias, in_bias=in_bias)
        fast = causal_depthwise_conv(u, conv.weight[:, 0], conv.bias, in_bias=in_bias)
    torch.testing.assert_close(ref, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
