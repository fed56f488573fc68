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
exact "dual" (masked-attention-like) matrix form, :func:`blmkd.ops.ssd.ssd_dual`: for the short
sequences of a patch (``L = P·P ≤ 64``) a handful of batched matmuls plus ``CumSum``/``Exp`` that
export to ONNX/TensorRT as they are. :func:`blmkd.ops.ssd.ssd_scan_ref` is the step-by-step
recurrence it is tested against. The blocks live in :mod:`blmkd.students.blocks`.

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
from dataclasses import dataclass

import torch
from torch import nn

from blmkd.errors import ModelError
from blmkd.ops.chunked import ChunkedInference
from blmkd.ops.norm import layer_norm
from blmkd.ops.tracing import static
from blmkd.registry import register_model
from blmkd.students.blocks import ByteEncoder, MambaBlock, spiral_order

__all__ = ["BLMConfig", "BLMStudent"]


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
                raise ModelError(f"dequant parameter has {v.numel()} values, expected 1 or {buf.numel()}")
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
        return_features = static(return_features, bool)
        if self._chunked(h):
            return self._in_chunks(self.forward_latent, h, return_features)
        P = static(h.shape[-1])
        return self._classify(h.reshape(-1, self.config.d_model, P * P).transpose(1, 2), P, return_features)

    def forward(self, x, return_features: bool = False):
        """Logits ``(N, K)`` [and pooled features ``(N, d_model)``] of patches ``x (N, bands, P, P)``.

        ``x`` is either ``uint8`` bytes, dequantized in-graph with ``in_scale``/``in_offset``, or an
        already standardized float tensor, used as is (no dequantization).
        """
        return_features = static(return_features, bool)
        if self._chunked(x):
            return self._in_chunks(self.forward, x, return_features)
        h = self.encoder.tokens(x, *self._dequant_args(x))  # (N, L, d_model), raster order
        return self._classify(h, static(x.shape[-1]), return_features)

    #: :class:`~blmkd.ops.chunked.ChunkedInference`: 256 patches per chunk keeps every intermediate, the
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
        P = math.isqrt(static(h.shape[1]))
        for layer in self.layers:
            h = layer(h)  # (N, L, d_model)
        return self._pool_head(h, self._center_index(P))

    def forward_tokens(self, h, x, z):
        """Logits ``(N, K)`` of windows given as tokens in :meth:`scan_order` (``L = P²``, ``P`` odd):
        latents ``h (N, L, d_model)`` and their :meth:`pixel_features` ``x, z (N, L, d_inner)``.
        Equals :meth:`forward_latent` on the same windows."""
        P = math.isqrt(static(h.shape[1]))
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

    def __post_init__(self) -> None:
        if self.pool not in ("mean", "center_mean"):
            raise ModelError(f"pool must be 'mean' or 'center_mean', not {self.pool!r}")
        if self.scan not in ("raster", "spiral"):
            raise ModelError(f"scan must be 'raster' or 'spiral', not {self.scan!r}")
        if not 0.0 <= self.centre_weight <= 1.0:
            raise ModelError(f"centre_weight must be in [0, 1], got {self.centre_weight!r}")
        if self.centre_weight and self.pool == "center_mean":
            raise ModelError("pool 'center_mean' is centre weight 0.5; give centre_weight alone")


def _build(bands: int, num_classes: int, defaults: dict, overrides: dict) -> BLMStudent:
    return BLMStudent(BLMConfig(bands=bands, num_classes=num_classes, **{**defaults, **overrides}))


@register_model(family="student", description="Tiny BLM for tests (d_model 8, 1 layer).")
def blm_test(bands: int, num_classes: int, **overrides) -> BLMStudent:
    return _build(
        bands, num_classes, dict(enc_hidden=8, d_model=8, d_state=4, n_heads=2, d_conv=3), overrides
    )


@register_model(
    family="student",
    description="BLM tiny, the default student: d_model 24, d_state 8, 1 layer (~1.2 MFLOP at 200 bands, 7×7).",
)
def blm_t(bands: int, num_classes: int, **overrides) -> BLMStudent:
    return _build(bands, num_classes, dict(enc_hidden=24, d_model=24, d_state=8, n_heads=2), overrides)


@register_model(family="student", description="BLM small: d_model 32, d_state 16, 1 layer (~2 MFLOP).")
def blm_s(bands: int, num_classes: int, **overrides) -> BLMStudent:
    return _build(bands, num_classes, dict(enc_hidden=32, d_model=32, d_state=16, n_heads=2), overrides)


@register_model(
    family="student",
    description="BLM base: d_model 48, d_state 16, 2 layers (~5.7 MFLOP, under 1/100 of the teacher).",
)
def blm_b(bands: int, num_classes: int, **overrides) -> BLMStudent:
    return _build(
        bands, num_classes, dict(enc_hidden=48, d_model=48, d_state=16, n_heads=4, n_layers=2), overrides
    )


@register_model(family="student", description="BLM as in the paper: encoder bands→2·bands→bands, d_state 64.")
def blm_paper(bands: int, num_classes: int, **overrides) -> BLMStudent:
    return _build(
        bands,
        num_classes,
        dict(enc_hidden=2 * bands, d_model=bands, d_state=64, n_heads=3, expand=3, n_layers=1, patch_size=8),
        overrides,
    )
