"""Blocks of the Byte-Latent Mamba students: the per-pixel byte encoder, the Mamba block and the
spiral token order. :class:`~blmkd.students.blm.BLMStudent` assembles them.

The block's selective SSM is :func:`blmkd.ops.ssd.ssd_dual` (tested against
:func:`blmkd.ops.ssd.ssd_scan_ref`).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from blmkd.errors import ModelError
from blmkd.ops.norm import layer_norm
from blmkd.ops.ssd import ssd_dual
from blmkd.ops.tracing import static

__all__ = ["ByteEncoder", "MambaBlock", "spiral_order"]


class ByteEncoder(nn.Module):
    """Per-pixel byte encoder: 1×1 conv ``bands → enc_hidden`` → GELU → dropout → 1×1 conv ``→ d_model``.

    For uint8 input the dequantization ``u8·scale + offset`` is folded into the first convolution
    (``W·(s⊙u + o) + b = (W·diag s)·u + (W·o + b)``), so the byte graph is Cast → MatMul and the
    folded weights are constant-folded at export.
    """

    def __init__(self, bands: int, enc_hidden: int, d_model: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv2d(bands, enc_hidden, 1)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(enc_hidden, d_model, 1)

    def _first(self, scale, offset):
        w = self.conv1.weight.flatten(1)  # (enc_hidden, bands)
        if scale is None:
            return w, self.conv1.bias
        return w * scale, self.conv1.bias + w @ offset  # (enc_hidden, bands), (enc_hidden,)

    def forward(self, x, scale=None, offset=None):
        """Latent image ``(N, d_model, H, W)`` of ``x (N, bands, H, W)``: standardized float, or
        bytes with ``scale``/``offset`` ``(bands,)``. Any ``H, W``: a whole scene at once."""
        w, b = self._first(scale, offset)
        h = F.conv2d(x.to(w.dtype), w[..., None, None], b)  # (N, enc_hidden, H, W)
        return self.conv2(self.drop(self.act(h)))  # (N, d_model, H, W)

    def tokens(self, x, scale=None, offset=None):
        """The same map as :meth:`forward` on a patch, returned as tokens ``(N, H·W, d_model)``.

        Written as matmuls that read the ``(N, bands, H·W)`` input transposed in place (ONNX
        Runtime's ``FusedMatMul(transA)``): no reorder of the input, tokens come out row-major.
        """
        w, b = self._first(scale, offset)
        # Reshapes keep the batch as -1 and the rest static: one constant Reshape node in ONNX.
        u = x.reshape(-1, static(x.shape[1]), static(x.shape[2] * x.shape[3])).to(w.dtype)  # (N, bands, L)
        h = self.drop(self.act(u.transpose(1, 2) @ w.T + b))  # (N, L, enc_hidden)
        return h @ self.conv2.weight.flatten(1).T + self.conv2.bias  # (N, L, d_model)


class MambaBlock(nn.Module):
    """Pre-norm residual Mamba block: ``h + out_proj(SSM(SiLU(conv(x))) · SiLU(z))``, ``(x, z) = in_proj(LN(h))``.

    Δ, B, C are projected from the (convolved) token, so the scan is selective; Δ goes through
    ``softplus(· + dt_bias)``; one scalar decay ``A_h = −exp(A_log_h)`` per head (Mamba-2). The
    residual stream is ``(N, L, d_model)``; inside, tensors are token-last ``(N, channels, L)``:
    the projections read the stream transposed, the depthwise conv runs on it natively, Δ comes out
    as the ``(N, H, L)`` the cumulative sum wants, and no transpose is ever materialised.
    """

    def __init__(self, d_model: int, d_state: int, n_heads: int, expand: int, d_conv: int):
        super().__init__()
        d_inner = expand * d_model
        if d_inner % n_heads:
            raise ModelError(f"d_inner={d_inner} is not divisible by n_heads={n_heads}")
        self.d_inner, self.d_state, self.n_heads, self.d_conv = d_inner, d_state, n_heads, d_conv
        self.headdim = d_inner // n_heads
        self.norm = nn.LayerNorm(d_model)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner)  # causal: padded on the left
        self.x_proj = nn.Linear(d_inner, n_heads + 2 * d_state, bias=False)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        # Mamba-2 initialisation: A_h spread over [1, 16], Δ over [1e-3, 1e-1] (through softplus⁻¹).
        self.A_log = nn.Parameter(torch.log(torch.linspace(1.0, 16.0, n_heads)))  # (H,)
        dt = torch.exp(torch.linspace(math.log(1e-3), math.log(1e-1), n_heads))  # (H,)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # (H,)
        self.D = nn.Parameter(torch.ones(n_heads))  # (H,)

    def _conv_x(self, xw):
        """``x`` branch: ``SiLU(causal depthwise conv(xw))`` of ``xw = W_x u``, token-last ``(N, d_inner, L)``."""
        # A (1, d_conv) Conv2d, not Conv1d: ONNX Runtime has a fast depthwise kernel only for 2-D
        # convs (~4x faster here); same weights, same result. The causal padding comes after the
        # Unsqueeze, so that ORT's PadFusion folds the Pad into the Conv (one node fewer).
        x = F.pad(xw[:, :, None], (self.d_conv - 1, 0))  # (N, d_inner, 1, d_conv-1 + L)
        x = F.conv2d(x, self.conv1d.weight[:, :, None], self.conv1d.bias, groups=self.d_inner)
        return F.silu(x.squeeze(2))  # (N, d_inner, L); a Squeeze, not a copying Gather, in ONNX

    def mixer(self, u):
        """The selective-SSM mixer: normalized tokens ``u (N, L, d_model)`` → ``(N, L, d_model)``."""
        ut = u.transpose(1, 2)  # (N, d_model, L) view
        xw = self.in_proj.weight[: self.d_inner] @ ut  # (N, d_inner, L)
        gz = F.silu(self.in_proj.weight[self.d_inner :] @ ut)  # (N, d_inner, L)
        return self._mix(xw, gz)

    def token_features(self, h):
        """The per-token prefix of this block on its input ``h (..., d_model)``: the projected
        ``x = W_x·LN(h)`` and the gate ``z = SiLU(W_z·LN(h))``, each ``(..., d_inner)``.

        Nothing in it mixes tokens, so for the first block of a student it is a per-pixel function
        of the encoder's latent: a scene map computes it once per pixel (:meth:`BLMStudent.pixel_features`)
        instead of once per window the pixel falls in.
        """
        f = layer_norm(self.norm, h) @ self.in_proj.weight.T  # (..., 2·d_inner)
        return f[..., : self.d_inner], F.silu(f[..., self.d_inner :])  # (..., d_inner) × 2

    def forward_from_features(self, h, x, z):
        """``forward(h)`` given ``(x, z) = token_features(h)``, each ``(N, L, d_inner)``: the
        token-mixing rest. Two inputs, not one concatenated: an exported graph then transposes
        each half once instead of slicing copies out of a transposed whole (~10% of a window)."""
        return h + self._mix(x.transpose(1, 2), z.transpose(1, 2))  # (N, L, d_model)

    def _mix(self, xw, gz):
        """Token mixing from the projected ``xw = W_x u`` and gate ``gz = SiLU(W_z u)``, both
        token-last ``(N, d_inner, L)`` → ``(N, L, d_model)``."""
        L = static(xw.shape[-1])
        x = self._conv_x(xw)  # (N, d_inner, L)
        dt, B, C = (self.x_proj.weight @ x).split([self.n_heads, self.d_state, self.d_state], dim=1)
        dt = F.softplus(dt + self.dt_bias[:, None])  # (N, H, L)
        A = -torch.exp(self.A_log)  # (H,)
        xh = x.view(-1, self.n_heads, self.headdim, L)  # (N, H, P, L)
        y = ssd_dual(xh, dt, A, B, C, self.D).view(-1, self.d_inner, L)  # (N, d_inner, L)
        y = y * gz  # (N, d_inner, L)
        return y.transpose(1, 2) @ self.out_proj.weight.T  # (N, L, d_model)

    def forward(self, h):
        return h + self.mixer(layer_norm(self.norm, h))  # (N, L, d_model)


@lru_cache(maxsize=32)
def spiral_order(P: int) -> tuple[int, ...]:
    """Raster indices of a ``P×P`` grid visited clockwise from the top-left corner inwards.

    For odd ``P`` the last index is the centre pixel ``(P//2)·P + P//2``.
    """
    top, left, bottom, right = 0, 0, P - 1, P - 1
    order: list[int] = []
    while top <= bottom and left <= right:
        order += [top * P + j for j in range(left, right + 1)]
        order += [i * P + right for i in range(top + 1, bottom + 1)]
        if top < bottom:
            order += [bottom * P + j for j in range(right - 1, left - 1, -1)]
        if left < right:
            order += [i * P + left for i in range(bottom - 1, top, -1)]
        top, left, bottom, right = top + 1, left + 1, bottom - 1, right - 1
    return tuple(order)
