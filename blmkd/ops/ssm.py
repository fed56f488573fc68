"""The SSA-Mamba teacher's SSM, a linear time-invariant state space: reference and fast kernel.

Paper Eq. 6-10 (Liao & Wang, "SSA-Mamba", IEEE JSTARS 19, 2026). Δ, A, B, C are parameters, not
functions of the input, so per channel c (state size d_state)

    h_t = Ā ⊙ h_{t-1} + B̄ x_t,   y_t = ⟨h_t, C⟩ + D x_t

is linear time-invariant: ``y = K * x`` (causal convolution along the sequence) with the kernel

    K[c, k] = Σ_n C[c, n] · B̄[c, n] · Ā[c, n]^k  (k = 0..L-1),   plus D[c] at k = 0.

- Reference: :func:`ssm_scan_ref`, the plain recurrence, step by step (``SSAMambaConfig.ssm_impl =
  "scan"``).
- Fast: :func:`ssm_kernel` materializes K from the parameters inside the graph (gradients reach
  ``A_log``, ``delta_log``, ``B``, ``C``, ``D``) and :func:`ssm_conv` applies it exactly as one
  batched (L, L) lower-triangular Toeplitz matmul per channel; L = 49 is short, so this is a small
  GEMM and far faster than stepping through the sequence (``ssm_impl = "conv"``, the default).

Both take and return channel-major ``(d_inner, N, L)`` tensors. Δ = softplus(Δ_log), as in the
paper's reference code (Eq. 7 writes exp); B̄ = ΔB is the paper's simplified zero-order hold.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def ssm_discretize(delta_log: Tensor, A_log: Tensor, B: Tensor) -> tuple[Tensor, Tensor]:
    """Zero-order-hold discretization: Δ = softplus(Δ_log), A = -exp(A_log), Ā = exp(ΔA), B̄ = ΔB."""
    dt = F.softplus(delta_log)  # (d_inner,)  Δ > 0
    A = -torch.exp(A_log)  # (d_inner, d_state)  A < 0: a stable, decaying state
    A_bar = torch.exp(dt[:, None] * A)  # (d_inner, d_state)  in (0, 1)
    B_bar = dt[:, None] * B  # (d_inner, d_state)
    return A_bar, B_bar


def ssm_scan_ref(u: Tensor, delta_log: Tensor, A_log: Tensor, B: Tensor, C: Tensor, D: Tensor) -> Tensor:
    """Reference SSM: the recurrence h_t = Ā h_{t-1} + B̄ u_t, y_t = ⟨h_t, C⟩ + D u_t, step by step.

    Args:
        u: input sequence, channel-major ``(d_inner, N, L)``.
        delta_log, A_log, B, C, D: the SSM parameters, ``(d_inner,)``, ``(d_inner, d_state)`` ×3, ``(d_inner,)``.

    Returns:
        y, ``(d_inner, N, L)``.
    """
    d_inner, N, L = u.shape
    A_bar, B_bar = ssm_discretize(delta_log, A_log, B)  # (d_inner, d_state) each
    h = u.new_zeros(d_inner, N, A_log.shape[1])  # (d_inner, N, d_state)
    ys = []
    for t in range(L):
        u_t = u[:, :, t]  # (d_inner, N)
        h = A_bar[:, None, :] * h + B_bar[:, None, :] * u_t[:, :, None]  # (d_inner, N, d_state)
        ys.append((h * C[:, None, :]).sum(-1) + D[:, None] * u_t)  # (d_inner, N)
    return torch.stack(ys, dim=-1)  # (d_inner, N, L)


def ssm_kernel(delta_log: Tensor, A_log: Tensor, B: Tensor, C: Tensor, D: Tensor, L: int) -> Tensor:
    """The SSM's impulse response K[c, k] = Σ_n C·B̄·Ā^k (+ D at k = 0), ``(d_inner, L)``."""
    dt = F.softplus(delta_log)  # (d_inner,)
    A = -torch.exp(A_log)  # (d_inner, d_state)
    B_bar = dt[:, None] * B  # (d_inner, d_state)
    k = torch.arange(L, dtype=A.dtype, device=A.device)  # (L,)
    A_bar_pow = torch.exp((dt[:, None] * A)[:, :, None] * k)  # (d_inner, d_state, L)  Ā^k = exp(kΔA)
    K = torch.matmul((C * B_bar)[:, None, :], A_bar_pow)[:, 0]  # (d_inner, L)  Σ_n over the state
    skip = F.pad(D[:, None], (0, L - 1))  # (d_inner, L)  D at lag 0
    return K + skip  # (d_inner, L)


def ssm_conv(u: Tensor, K: Tensor) -> Tensor:
    """Apply the SSM as a causal convolution: y[c, n, l] = Σ_{j≤l} K[c, l-j] · u[c, n, j].

    One lower-triangular Toeplitz matrix per channel, applied as a batched matmul.

    Args:
        u: channel-major input ``(d_inner, N, L)``.
        K: kernel from :func:`ssm_kernel`, ``(d_inner, L)``.
    """
    d_inner, L = K.shape
    pos = torch.arange(L, device=u.device)  # (L,)
    lag = pos[None, :] - pos[:, None]  # (L_in, L_out)  l - j
    K0 = F.pad(K, (1, 0))  # (d_inner, L + 1)  K0[:, 0] = 0 for the acausal entries
    T = K0.index_select(1, (lag + 1).clamp(min=0).flatten()).view(d_inner, L, L)  # T[c, j, l] = K[c, l - j]
    return torch.matmul(u, T)  # (d_inner, N, L)
