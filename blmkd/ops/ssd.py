"""The BLM students' selective SSM, Mamba-2's SSD with one scalar decay per head: reference and fast form.

Dao & Gu, "Transformers are SSMs", ICML 2024. Per head ``h``, state ``s_t ∈ R^{headdim × d_state}``::

    s_t = exp(Δ_t·A_h) · s_{t-1} + (Δ_t · x_t) B_tᵀ
    y_t = s_t C_t + D_h · x_t

- Reference: :func:`ssd_scan_ref`, the recurrence one step at a time (slow, obvious; for tests).
- Fast: :func:`ssd_dual`, the exact "dual" (masked-attention-like) matrix form. For the short
  sequences of a patch (``L = P·P ≤ 64``) it is a handful of batched matmuls plus ``CumSum``/``Exp``:
  no custom op and no Python step loop, so it exports to ONNX/TensorRT as is.

Both take the same token-last tensors (the layout :class:`~blmkd.students.blocks.MambaBlock` computes
in, so that the exported graph needs no transposes) and return the same result.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from blmkd.ops.tracing import static


def ssd_scan_ref(x, dt, A, B, C, D):
    """Reference selective scan, one step at a time (slow, obvious; for tests).

    Recurrence per head ``h`` (one scalar decay), state ``s_t ∈ R^{headdim × d_state}``::

        s_t = exp(Δ_t·A_h) · s_{t-1} + (Δ_t · x_t) B_tᵀ
        y_t = s_t C_t + D_h · x_t

    Tensors are token-last (the layout :class:`~blmkd.students.blocks.MambaBlock` computes in, so that the exported graph
    needs no transposes).

    Args:
        x: inputs ``(N, H, P, L)`` (``P`` = headdim, ``L`` tokens).
        dt: positive step sizes Δ ``(N, H, L)``.
        A: negative decay rates ``(H,)``.
        B: input projections ``(N, d_state, L)``, shared by the heads.
        C: output projections ``(N, d_state, L)``.
        D: skip weights ``(H,)``.

    Returns:
        ``y`` with the shape of ``x``.
    """
    N, H, P, L = x.shape
    s = x.new_zeros(N, H, P, B.shape[1])  # (N, H, P, d_state)
    ys = []
    for t in range(L):
        a = torch.exp(dt[..., t] * A)  # (N, H)
        xb = (dt[:, :, None, t] * x[..., t])[..., None] * B[:, None, None, :, t]  # (N, H, P, d_state)
        s = a[..., None, None] * s + xb  # (N, H, P, d_state)
        y = (s @ C[:, None, :, t, None]).squeeze(-1)  # (N, H, P)
        ys.append(y + D[:, None] * x[..., t])  # (N, H, P)
    return torch.stack(ys, dim=-1)  # (N, H, P, L)


def _log_mask_T(L: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(L, L)``: 0 where ``s ≤ t`` (row ``s``, column ``t``), ``−inf`` below the diagonal.

    Made once per shape and device; under ``torch.compile`` it is built in the graph (a cached
    tensor from outside would break it), where the compiler folds it into the exponent's kernel."""
    if torch.compiler.is_compiling():
        return _make_log_mask_T(L, dtype, device)
    return _cached_log_mask_T(L, dtype, device)


def _make_log_mask_T(L: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    below = torch.ones(L, L, dtype=torch.bool, device=device).tril(-1)  # (L, L)
    return torch.zeros(L, L, dtype=dtype, device=device).masked_fill(below, float("-inf"))  # (L, L)


_cached_log_mask_T = lru_cache(maxsize=16)(_make_log_mask_T)


def ssd_dual(x, dt, A, B, C, D):
    """Selective scan in its exact dual (matrix) form, Mamba-2 SSD (Dao & Gu, ICML 2024).

    With ``S_t = Σ_{τ≤t} Δ_τ·A_h`` (a cumulative sum of log-decays), per head::

        M[t, s] = exp(S_t − S_s) if s ≤ t else 0          # masked decay
        y       = (M ⊙ C Bᵀ) (Δ ⊙ x) + D · x

    which equals :func:`ssd_scan_ref` exactly. The mask is added to the exponent (``−inf`` above
    the diagonal) before ``exp``, so the upper triangle, where ``S_t − S_s > 0`` can be large,
    never overflows. Token-last, it is computed transposed (``yᵀ = (Δ⊙x)ᵀ (M ⊙ C Bᵀ)ᵀ``) so that
    every matmul reads its operands in place. Cost is quadratic in ``L``: meant for patch-sized
    sequences (``L ≤ 64``). Same arguments and result as :func:`ssd_scan_ref`.
    """
    L = static(x.shape[-1])
    S = torch.cumsum(dt * A[:, None], dim=-1)  # (N, H, L)
    # Transposed masked log-decay: [s, t] = S_t − S_s where s ≤ t, −inf elsewhere.
    MT = torch.exp(S[..., None, :] - S[..., :, None] + _log_mask_T(L, x.dtype, x.device))  # (N, H, L, L)
    CBT = B.transpose(1, 2) @ C  # (N, L, L): [s, t] = B_s · C_t
    xdt = x * dt[:, :, None, :]  # (N, H, P, L)
    return xdt @ (MT * CBT[:, None]) + D[:, None, None] * x  # (N, H, P, L)
