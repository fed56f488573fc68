"""Byte-Latent Mamba (BLM) students.

Ahmad, Mazzara, Distefano, Khan, "Byte Latent Mamba with State Space and Knowledge Distillation
for Hyperspectral Image Classification", IEEE TGRS 63, 2025, art. 5531815,
doi:10.1109/TGRS.2025.3626861. The paper has no public code; what it fixes is followed here:

* a byte model: the input is a ``uint8`` patch ``(N, bands, P, P)`` (per-band byte quantization by
  the data layer) and the model dequantizes inside its own graph with per-band buffers
  ``x_std = u8 · in_scale + in_offset`` (set by :meth:`BLMStudent.set_dequant`);
* a convolutional "byte" encoder that learns latent units without tokenization: per-pixel 1×1
  convolutions ``bands → enc_hidden → d_model`` with GELU and dropout (the paper's
  ``bands → 2·bands → bands`` is preset ``blm_paper``). Being per-pixel, it can be run once per
  scene and the windows gathered afterwards (:meth:`BLMStudent.encode` / :meth:`BLMStudent.forward_latent`);
* the feature map flattened into ``P·P`` spatial tokens, a selective state-space block, a fully
  connected head.

The selective SSM is Mamba-2's SSD (Dao & Gu 2024) with one scalar decay per head, evaluated in its
exact "dual" (masked-attention-like) matrix form, :func:`ssd_dual`. For the short sequences of a
patch (``L = P·P ≤ 64``) this is a handful of batched matmuls plus ``CumSum``/``Exp``: no custom op
and no Python step loop, so it exports to ONNX/TensorRT as is. :func:`ssd_scan_ref` is the obvious
step-by-step recurrence it is tested against.

Tokens are scanned in a spiral (outer ring inwards, clockwise): consecutive tokens stay spatial
neighbours for the short causal convolution, and the centre pixel, whose label is predicted, comes
last, having seen the whole patch. The head reads the mean of the final tokens. In a quick check
(Indian Pines, 10 % split, cross-entropy only, 60 epochs, one seed) spiral + mean pooling gave
95.7 % OA against 93.4 % for raster + mean, 91.4 % for spiral + centre/mean and 84 % for the centre
token alone.

Analytic cost per patch (multiply-adds ×2 = FLOPs; only matmuls/convs, as
``torch.utils.flop_counter`` counts), with ``b`` bands, ``L = P²`` tokens, ``d = d_model``,
``e = enc_hidden``, ``di = expand·d``, ``n = d_state``, ``H = n_heads``, ``k = d_conv``, ``K`` classes::

    encoder    2·L·(b·e + e·d)
    per layer  2·L·(d·2di + di·k + di·(H + 2n) + di·d)      # in_proj, conv1d, x_proj, out_proj
             + 2·(L²·n + L²·di)                              # C·Bᵀ, (M ⊙ CBᵀ)·X
    head       2·d·K

For ``blm_s`` (b=200, L=49, e=32, d=32, di=64, n=16, H=2, k=4, K=16, 1 layer) this is
2·49·7424 + 2·49·8576 + 2·(38 416 + 153 664) + 2·32·16 = 1.953 MFLOP, what ``FlopCounterMode``
counts (the tests check the budget with it), about 1/300 of the ~600 MFLOP teacher. Of it, the
encoder is 0.73 MFLOP: per pixel, 14.8 kFLOP, which is all a whole-scene map pays for it once the
encoder runs once per scene (:meth:`BLMStudent.encode`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from blmkd.errors import ModelError
from blmkd.models import ChunkedInference, register_model

__all__ = [
    "BLMConfig",
    "BLMStudent",
    "ByteEncoder",
    "MambaBlock",
    "spiral_order",
    "ssd_dual",
    "ssd_scan_ref",
]


# --------------------------------------------------------------------------------------------
# Selective state space: reference recurrence and exact dual form
# --------------------------------------------------------------------------------------------


def ssd_scan_ref(x, dt, A, B, C, D):
    """Reference selective scan, one step at a time (slow, obvious; for tests).

    Recurrence per head ``h`` (one scalar decay), state ``s_t ∈ R^{headdim × d_state}``::

        s_t = exp(Δ_t·A_h) · s_{t-1} + (Δ_t · x_t) B_tᵀ
        y_t = s_t C_t + D_h · x_t

    Tensors are token-last (the layout :class:`MambaBlock` computes in, so that the exported graph
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


def _static(v, kind=int):
    """``v`` as a Python ``int``/``bool``. Patch geometry and flags are fixed in an exported graph, so
    the tracer's warning about freezing a traced value into a constant does not apply here."""
    if torch.compiler.is_compiling():  # no tracer warnings there, and a warnings context breaks the graph
        return kind(v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return kind(v)


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


#: A GPU LayerNorm over this many rows or more of a narrow feature dimension (≤ 64) is computed
#: from two reductions instead of PyTorch's fused kernel, which is slow on such rows: on an H200,
#: 4.8 ms for 3.2 M rows × 24 (a 65,536-window student batch), 42% of the whole forward.
NARROW_LN_ROWS = 1 << 16


def layer_norm(ln: nn.LayerNorm, x):
    """``ln(x)``, the same numbers; many narrow rows on a GPU go through :data:`NARROW_LN_ROWS`'s path."""
    d = x.shape[-1]
    if x.is_cuda and d <= 64 and x.numel() >= NARROW_LN_ROWS * d and not torch.jit.is_tracing():
        mu = x.mean(-1, keepdim=True)  # (..., 1)
        xc = x - mu  # (..., d)
        var = xc.square().mean(-1, keepdim=True)  # (..., 1) biased, as LayerNorm
        return torch.addcmul(ln.bias, xc * torch.rsqrt(var + ln.eps), ln.weight)  # (..., d)
    return ln(x)


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
    L = _static(x.shape[-1])
    S = torch.cumsum(dt * A[:, None], dim=-1)  # (N, H, L)
    # Transposed masked log-decay: [s, t] = S_t − S_s where s ≤ t, −inf elsewhere.
    MT = torch.exp(S[..., None, :] - S[..., :, None] + _log_mask_T(L, x.dtype, x.device))  # (N, H, L, L)
    CBT = B.transpose(1, 2) @ C  # (N, L, L): [s, t] = B_s · C_t
    xdt = x * dt[:, :, None, :]  # (N, H, P, L)
    return xdt @ (MT * CBT[:, None]) + D[:, None, None] * x  # (N, H, P, L)


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------


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
        u = x.reshape(-1, _static(x.shape[1]), _static(x.shape[2] * x.shape[3])).to(w.dtype)  # (N, bands, L)
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
            raise ValueError(f"d_inner={d_inner} is not divisible by n_heads={n_heads}")
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
        L = _static(xw.shape[-1])
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


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class BLMStudent(ChunkedInference, nn.Module):
    """Byte-Latent Mamba student: byte encoder → spatial tokens → selective SSM → pooled FC head.

    ``model.input_kind == "uint8"``: the deployed graph takes the data layer's bytes. ``forward``
    also takes an already standardized float patch (then no dequantization is applied), which is
    what training with float augmentations or a float teacher pipeline feeds it.
    """

    input_kind = "uint8"

    def __init__(self, config: BLMConfig):
        super().__init__()
        c = self.config = config
        if c.pool not in ("mean", "center_mean"):
            raise ValueError(f"pool must be 'mean' or 'center_mean', not {c.pool!r}")
        if c.scan not in ("raster", "spiral"):
            raise ValueError(f"scan must be 'raster' or 'spiral', not {c.scan!r}")
        if not 0.0 <= c.centre_weight <= 1.0:
            raise ModelError(f"centre_weight must be in [0, 1], got {c.centre_weight!r}")
        if c.centre_weight and c.pool == "center_mean":
            raise ModelError("pool 'center_mean' is centre weight 0.5; give centre_weight alone")
        self.register_buffer("in_scale", torch.full((c.bands,), 1.0 / 255.0))  # (bands,)
        self.register_buffer("in_offset", torch.zeros(c.bands))  # (bands,)
        self.encoder = ByteEncoder(c.bands, c.enc_hidden, c.d_model, c.dropout)
        self.layers = nn.ModuleList(
            MambaBlock(c.d_model, c.d_state, c.n_heads, c.expand, c.d_conv) for _ in range(c.n_layers)
        )
        self.norm_f = nn.LayerNorm(c.d_model)
        self.head_drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.d_model, c.num_classes)

    @torch.no_grad()
    def set_dequant(self, scale, offset) -> None:
        """Set the in-graph dequantization ``x_std = u8·scale + offset`` (scalars or per band)."""
        for buf, value in ((self.in_scale, scale), (self.in_offset, offset)):
            v = torch.as_tensor(value, dtype=buf.dtype).flatten()
            if v.numel() not in (1, buf.numel()):
                raise ValueError(f"dequant parameter has {v.numel()} values, expected 1 or {buf.numel()}")
            buf.copy_(v.expand_as(buf))

    def dequantize(self, x):
        """Bytes ``(N, bands, H, W)`` → the standardized float the uint8 path computes on."""
        return x.float() * self.in_scale[:, None, None] + self.in_offset[:, None, None]

    def _dequant_args(self, x):
        return (self.in_scale, self.in_offset) if x.dtype == torch.uint8 else (None, None)

    def encode(self, x):
        """Per-pixel latents ``(N, d_model, H, W)`` of a uint8 or standardized float image of any size.

        Run it once on a whole scene, then classify windows of it with :meth:`forward_latent`.
        """
        return self.encoder(x, *self._dequant_args(x))

    def forward_latent(self, h, return_features: bool = False):
        """Classify encoded patches ``h (N, d_model, P, P)``, e.g. windows gathered from :meth:`encode`."""
        return_features = _static(return_features, bool)
        if self._chunked(h):
            return self._in_chunks(self.forward_latent, h, return_features)
        P = _static(h.shape[-1])
        return self._classify(h.reshape(-1, self.config.d_model, P * P).transpose(1, 2), P, return_features)

    def forward(self, x, return_features: bool = False):
        """Logits ``(N, K)`` [and pooled features ``(N, d_model)``] of patches ``x (N, bands, P, P)``.

        ``x`` is either ``uint8`` bytes, dequantized in-graph with ``in_scale``/``in_offset``, or an
        already standardized float tensor, used as is (no dequantization).
        """
        return_features = _static(return_features, bool)
        if self._chunked(x):
            return self._in_chunks(self.forward, x, return_features)
        h = self.encoder.tokens(x, *self._dequant_args(x))  # (N, L, d_model), raster order
        return self._classify(h, _static(x.shape[-1]), return_features)

    #: :class:`~blmkd.models.ChunkedInference`: 256 patches per chunk keeps every intermediate, the
    #: ``(N, H, L, L)`` decay matrices included, a few MB (2-3× faster at N = 4096 on CPU).
    infer_chunk = 256

    def scan_order(self, P: int) -> tuple[int, ...]:
        """Raster indices of a ``P×P`` window in the order the tokens are scanned."""
        return spiral_order(P) if self.config.scan == "spiral" else tuple(range(P * P))

    def _order_index(self, P: int, device):
        """:meth:`scan_order` as an int64 tensor on ``device``, made once: a forward then copies no
        index from the host (a CUDA graph capture forbids such copies)."""
        if torch.compiler.is_compiling():  # a constant of the compiled graph
            return torch.tensor(self.scan_order(P), dtype=torch.int64, device=device)
        cache = self.__dict__.setdefault("_order_cache", {})
        key = (P, str(device))
        if key not in cache:
            with torch.inference_mode(False):  # a normal tensor: usable later under autograd or tracing
                cache[key] = torch.tensor(self.scan_order(P), dtype=torch.int64, device=device)
        return cache[key]

    def _center_index(self, P: int) -> int:
        """Position of the window's centre pixel in :meth:`scan_order` (last, for a spiral and odd P)."""
        return self.scan_order(P).index((P // 2) * P + P // 2)

    def _classify(self, h, P: int, return_features: bool):
        """Tokens ``h (N, P·P, d_model)`` in raster order → logits [, features]."""
        if self.config.scan == "spiral":
            h = h.index_select(1, self._order_index(P, h.device))  # (N, L, d_model), centre last for odd P
        for layer in self.layers:
            h = layer(h)  # (N, L, d_model)
        return self._pool_head(h, self._center_index(P), return_features)

    def _pool_head(self, h, center: int, return_features: bool = False):
        """Final norm, token pooling and head on the last block's output ``h (N, L, d_model)``."""
        h = layer_norm(self.norm_f, h)  # (N, L, d_model)
        f = h.mean(dim=1)  # (N, d_model)
        w = self.centre_weight
        if w:  # exactly the mean pooling at 0; pool="center_mean" is w = 0.5
            f = (1.0 - w) * f + w * h[:, center]  # (N, d_model)
        logits = self.head(self.head_drop(f))  # (N, K)
        return (logits, f) if return_features else logits

    @property
    def centre_weight(self) -> float:
        """Weight of the centre token in the pooled feature, ``(1 − w)·mean + w·centre``."""
        return 0.5 if self.config.pool == "center_mean" else float(self.config.centre_weight)

    @property
    def pixel_feature_dim(self) -> int:
        """Width of each of the two :meth:`pixel_features` arrays: ``d_inner``."""
        return self.layers[0].d_inner

    def pixel_features(self, lat):
        """What the first block computes per token before tokens mix, from per-pixel latents
        ``lat (..., d_model)`` (channels last, e.g. a whole encoded scene):
        :meth:`MambaBlock.token_features`, ``(x, z)``, each ``(..., d_inner)``.

        Windows of the latents and of these, gathered in :meth:`scan_order`, go to
        :meth:`forward_tokens`: a scene map then pays the first block's LayerNorm and in-projection
        once per pixel instead of up to P² times.
        """
        return self.layers[0].token_features(lat)

    def forward_scanned(self, h):
        """Logits ``(N, K)`` of windows given as latent tokens ``h (N, L, d_model)`` already in
        :meth:`scan_order` (``L = P²``), e.g. gathered straight from an encoded scene on a GPU.
        Equals :meth:`forward_latent` on the same windows."""
        P = math.isqrt(_static(h.shape[1]))
        for layer in self.layers:
            h = layer(h)  # (N, L, d_model)
        return self._pool_head(h, self._center_index(P))

    def forward_tokens(self, h, x, z):
        """Logits ``(N, K)`` of windows given as tokens in :meth:`scan_order` (``L = P²``, ``P`` odd):
        latents ``h (N, L, d_model)`` and their :meth:`pixel_features` ``x, z (N, L, d_inner)``.
        Equals :meth:`forward_latent` on the same windows."""
        P = math.isqrt(_static(h.shape[1]))
        h = self.layers[0].forward_from_features(h, x, z)  # (N, L, d_model)
        for layer in self.layers[1:]:
            h = layer(h)  # (N, L, d_model)
        return self._pool_head(h, self._center_index(P))


# --------------------------------------------------------------------------------------------
# Config and presets
# --------------------------------------------------------------------------------------------


@dataclass
class BLMConfig:
    bands: int = 200  # input spectral bands (channels of the byte patch)
    num_classes: int = 16  # output classes
    enc_hidden: int = 32  # hidden width of the per-pixel byte encoder (paper: 2·bands)
    d_model: int = 32  # token width after the encoder (paper: bands)
    d_state: int = 16  # SSM state size per head (paper student: 64, teacher: 128)
    n_heads: int = 2  # SSM heads, one scalar decay each; headdim = d_inner / n_heads
    expand: int = 2  # d_inner = expand · d_model
    d_conv: int = 4  # kernel of the depthwise causal conv over tokens
    n_layers: int = 1  # Mamba blocks
    dropout: float = 0.1  # dropout after the encoder's hidden layer and before the head
    pool: str = "mean"  # token pooling: "mean" or "center_mean" (average of centre token and mean)
    centre_weight: float = 0.0  # pooled = (1 − w)·mean + w·centre token, in [0, 1]; > 0 for thin structures
    scan: str = "spiral"  # token order: "raster" or "spiral" (outside in, centre pixel last)
    patch_size: int = 7  # informational: the patch side the preset was sized for (any P works)


def _build(bands: int, num_classes: int, defaults: dict, overrides: dict) -> BLMStudent:
    return BLMStudent(BLMConfig(bands=bands, num_classes=num_classes, **{**defaults, **overrides}))


@register_model("blm_test", "student", "Tiny BLM for tests (d_model 8, 1 layer).")
def blm_test(bands: int, num_classes: int, **overrides) -> BLMStudent:
    return _build(
        bands, num_classes, dict(enc_hidden=8, d_model=8, d_state=4, n_heads=2, d_conv=3), overrides
    )


@register_model(
    "blm_t",
    "student",
    "BLM tiny, the default student: d_model 24, d_state 8, 1 layer (~1.2 MFLOP at 200 bands, 7×7).",
)
def blm_t(bands: int, num_classes: int, **overrides) -> BLMStudent:
    return _build(bands, num_classes, dict(enc_hidden=24, d_model=24, d_state=8, n_heads=2), overrides)


@register_model("blm_s", "student", "BLM small: d_model 32, d_state 16, 1 layer (~2 MFLOP).")
def blm_s(bands: int, num_classes: int, **overrides) -> BLMStudent:
    return _build(bands, num_classes, dict(enc_hidden=32, d_model=32, d_state=16, n_heads=2), overrides)


@register_model(
    "blm_b", "student", "BLM base: d_model 48, d_state 16, 2 layers (~5.7 MFLOP, under 1/100 of the teacher)."
)
def blm_b(bands: int, num_classes: int, **overrides) -> BLMStudent:
    return _build(
        bands, num_classes, dict(enc_hidden=48, d_model=48, d_state=16, n_heads=4, n_layers=2), overrides
    )


@register_model("blm_paper", "student", "BLM as in the paper: encoder bands→2·bands→bands, d_state 64.")
def blm_paper(bands: int, num_classes: int, **overrides) -> BLMStudent:
    return _build(
        bands,
        num_classes,
        dict(enc_hidden=2 * bands, d_model=bands, d_state=64, n_heads=3, expand=3, n_layers=1, patch_size=8),
        overrides,
    )
