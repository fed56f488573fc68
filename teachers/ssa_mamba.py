"""SSA-Mamba teacher: spatial-spectral attentive state space model.

Liao & Wang, "SSA-Mamba", IEEE JSTARS 19 (2026), doi:10.1109/JSTARS.2026.3654346.

A (bands, P, P) patch is projected to ``d_model`` channels, serialized row-major into a sequence of
``L = P·P`` tokens and passed through ``depth`` cross-domain blocks. Each block runs two Mamba-style
branches with independent parameters (spatial and spectral), lets the spatial branch query the
spectral one (asymmetric cross-domain attention) and fuses the two with a gate, an MLP and SE channel
attention. A convolutional integration stage, a global residual from the input projection, global
average pooling and a linear head give the logits.

The SSM core is linear time-invariant (Δ, A, B, C are parameters, not functions of the input), so it
runs as a causal convolution with a kernel computed from the parameters: :mod:`blmkd.ops.ssm` holds
that fast kernel (``ssm_kernel`` + ``ssm_conv``, a batched Toeplitz matmul) beside the reference
recurrence ``ssm_scan_ref`` (``SSAMambaConfig.ssm_impl = "scan"``), and :mod:`blmkd.ops.conv` the
causal depthwise convolution of the branches.

Layout. Inside a branch the tensors are channel-major, ``(d_inner, N, L)``: the in-projection GEMM
writes that layout directly (``W @ xᵀ``), the depthwise conv and the Toeplitz matmul consume it
without copies, and the out-projection GEMM reads it back transposed for free. Between blocks the
tokens are ``(N, L, d_model)``, which is also channels-last ``(N, P, P, d_model)`` for the
convolutions at both ends. Eval-mode BatchNorms are folded into the preceding convolutions, K and V
share one GEMM, and the cross attention is ``F.scaled_dot_product_attention``. Every op is a standard
ONNX op (opset 17). With all that, ~80% of a CPU forward is the fp32 GEMMs of the Linear layers,
which no rewrite of the same network avoids. Measured and dropped: stacking both branches'
in_proj into one GEMM (its 49 MB outputs cost more in page faults than the wider GEMM gains) and a
grouped conv2d for the depthwise conv (oneDNN is ~5× slower than shifted multiply-adds here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blmkd.errors import ModelError
from blmkd.ops.chunked import ChunkedInference
from blmkd.ops.conv import causal_depthwise_conv
from blmkd.ops.ssm import ssm_conv, ssm_kernel, ssm_scan_ref
from blmkd.registry import register_model

_SE_REDUCTION = 16  # squeeze-and-excitation reduction ratio (paper value), at least 4 hidden units
SSM_IMPLS = ("conv", "scan")


# ─── SSM core ─────────────────────────────────────────────────────────────────


class SSMCore(nn.Module):
    """The SSM parameters (exponential parameterization, paper Eq. 6-10) and its two implementations."""

    def __init__(self, d_inner: int, d_state: int, impl: str = "conv"):
        super().__init__()
        self.impl = impl
        self.delta_log = nn.Parameter(torch.zeros(d_inner))  # (d_inner,)  Δ = softplus(Δ_log)
        self.A_log = nn.Parameter(torch.log(torch.rand(d_inner, d_state) + 0.1))  # (d_inner, d_state)
        self.B = nn.Parameter(0.02 * torch.randn(d_inner, d_state))  # (d_inner, d_state)
        self.C = nn.Parameter(0.02 * torch.randn(d_inner, d_state))  # (d_inner, d_state)
        self.D = nn.Parameter(torch.ones(d_inner))  # (d_inner,)  skip

    def forward(self, u: Tensor) -> Tensor:
        """u: channel-major ``(d_inner, N, L)`` → y, same shape."""
        if self.impl == "scan":
            return ssm_scan_ref(u, self.delta_log, self.A_log, self.B, self.C, self.D)
        K = ssm_kernel(self.delta_log, self.A_log, self.B, self.C, self.D, u.shape[-1])  # (d_inner, L)
        return ssm_conv(u, K)  # (d_inner, N, L)


# ─── Blocks ───────────────────────────────────────────────────────────────────


def _fold_bn(
    weight: Tensor, bias: Tensor | None, bn: nn.BatchNorm1d | nn.BatchNorm2d
) -> tuple[Tensor, Tensor]:
    """Conv weight and bias with an eval-mode BatchNorm folded in (one pass over the activations less)."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # (C,)
    shift = bn.bias - bn.running_mean * scale  # (C,)
    w = weight * scale.view(-1, *([1] * (weight.dim() - 1)))  # weight's shape
    b = shift if bias is None else bias * scale + shift  # (C,)
    return w, b


class MambaBranch(nn.Module):
    """One SSM branch (the paper's SpectralSpatialMambaUnit); spatial and spectral each own one.

    LayerNorm → in_proj split into main/gate → depthwise causal conv1d → BN → SiLU → SSM →
    ⊙ SiLU(gate) → out_proj → dropout → residual LayerNorm.
    """

    def __init__(self, d_model: int, d_state: int, d_conv: int, expand: int, dropout: float, ssm_impl: str):
        super().__init__()
        self.d_inner = expand * d_model
        self.d_conv = d_conv
        self.norm_in = nn.LayerNorm(d_model)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner)  # [main; gate]
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner)  # depthwise, causal
        self.conv_bn = nn.BatchNorm1d(self.d_inner)
        self.ssm = SSMCore(self.d_inner, d_state, ssm_impl)
        self.out_proj = nn.Linear(self.d_inner, d_model)
        self.dropout = nn.Dropout(dropout)
        self.norm_out = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        """x: tokens ``(N, L, d_model)`` → ``(N, L, d_model)``."""
        N, L, d_model = x.shape
        tokens = x.reshape(N * L, d_model)  # (N·L, d_model)
        x_norm_t = self.norm_in(tokens).t()  # (d_model, N·L)
        # W @ xᵀ writes the channel-major layout directly; nothing below needs a transpose.
        W_u, W_z = self.in_proj.weight.split(self.d_inner)  # (d_inner, d_model) each: main, gate
        b_u, b_z = self.in_proj.bias.split(self.d_inner)  # (d_inner,) each
        u = torch.mm(W_u, x_norm_t).view(self.d_inner, N, L)  # (d_inner, N, L)  b_u goes into the conv
        z = torch.addmm(b_z[:, None], W_z, x_norm_t)  # (d_inner, N·L)

        w, b = self.conv1d.weight[:, 0], self.conv1d.bias  # (d_inner, d_conv), (d_inner,)
        if not self.training:
            w, b = _fold_bn(w, b, self.conv_bn)  # eval: BN is affine, fold it into the conv
        u = causal_depthwise_conv(u, w, b, in_bias=b_u)  # (d_inner, N, L)
        if self.training:
            u = self.conv_bn(u.view(1, self.d_inner, N * L)).view(self.d_inner, N, L)  # (d_inner, N, L)
        # Without autograd, reuse the fresh buffers: every new tensor this size costs page faults.
        inplace = not torch.is_grad_enabled()
        u = F.silu(u, inplace=inplace)  # (d_inner, N, L)

        y = self.ssm(u).view(self.d_inner, N * L)  # (d_inner, N·L)
        g = F.silu(z, inplace=inplace)  # (d_inner, N·L)
        y = y.mul_(g) if inplace else y * g  # (d_inner, N·L)
        out = torch.addmm(self.out_proj.bias, y.t(), self.out_proj.weight.t())  # (N·L, d_model)
        out = self.dropout(out).view(N, L, d_model)  # (N, L, d_model)
        out = out.add_(x) if inplace else out + x  # (N, L, d_model)
        return self.norm_out(out)  # (N, L, d_model)


class CrossDomainAttention(nn.Module):
    """Asymmetric cross-domain attention: spatial queries, spectral keys and values (paper Eq. 15-19)."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.W_Q = nn.Linear(d_model, d_model, bias=False)
        self.W_K = nn.Linear(d_model, d_model, bias=False)
        self.W_V = nn.Linear(d_model, d_model, bias=False)
        self.W_O = nn.Linear(d_model, d_model, bias=False)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, f_spatial: Tensor, f_spectral: Tensor) -> Tensor:
        """f_spatial, f_spectral: ``(N, L, d_model)`` → f_attn ``(N, L, d_model)``."""
        N, L, d_model = f_spatial.shape
        heads = (N, L, self.n_heads, d_model // self.n_heads)
        q = self.W_Q(f_spatial).view(heads).transpose(1, 2)  # (N, n_heads, L, d_head)
        # K and V read the same input: one GEMM with the two weights side by side.
        W_KV = torch.cat([self.W_K.weight, self.W_V.weight])  # (2·d_model, d_model)
        k, v = (
            F.linear(f_spectral, W_KV).view(N, L, 2, *heads[2:]).permute(2, 0, 3, 1, 4)
        )  # (N, n_heads, L, d_head) each
        o = F.scaled_dot_product_attention(q, k, v)  # (N, n_heads, L, d_head)  softmax(qkᵀ/√d_head) v
        o = o.transpose(1, 2).reshape(N, L, d_model)  # (N, L, d_model)
        return self.norm(self.W_O(o))  # (N, L, d_model)


class SqueezeExcite(nn.Module):
    """SE channel attention over a token sequence: x ⊙ σ(W₂ ReLU(W₁ mean_L(x))) (paper Eq. 24-26)."""

    def __init__(self, d_model: int):
        super().__init__()
        d_mid = max(d_model // _SE_REDUCTION, 4)
        self.fc1 = nn.Linear(d_model, d_mid)
        self.fc2 = nn.Linear(d_mid, d_model)

    def forward(self, x: Tensor) -> Tensor:
        """x: ``(N, L, d_model)`` → same shape."""
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=1)))))  # (N, d_model)
        return x * w[:, None, :]  # (N, L, d_model)


class GatedFusion(nn.Module):
    """Gated fusion of spatial and attended features, SE attention, block residual (paper Eq. 20-27)."""

    def __init__(self, d_model: int, dropout: float):
        super().__init__()
        self.gate_proj = nn.Linear(2 * d_model, d_model)  # W_g
        self.fuse_norm = nn.LayerNorm(2 * d_model)
        self.fuse_fc1 = nn.Linear(2 * d_model, d_model)
        self.fuse_fc2 = nn.Linear(d_model, d_model)
        self.fuse_drop = nn.Dropout(dropout)
        self.channel_attn = SqueezeExcite(d_model)
        self.norm_out = nn.LayerNorm(d_model)

    def forward(self, f_spatial: Tensor, f_attn: Tensor, x: Tensor) -> Tensor:
        """f_spatial, f_attn, x (block input): ``(N, L, d_model)`` → ``(N, L, d_model)``."""
        f_cat = torch.cat([f_spatial, f_attn], dim=-1)  # (N, L, 2·d_model)
        g = torch.sigmoid(self.gate_proj(f_cat))  # (N, L, d_model)
        f = self.fuse_drop(F.gelu(self.fuse_fc1(self.fuse_norm(f_cat))))  # (N, L, d_model)
        f = self.fuse_drop(self.fuse_fc2(f)) * g  # (N, L, d_model)
        return self.norm_out(self.channel_attn(f) + x)  # (N, L, d_model)


class CrossDomainBlock(nn.Module):
    """Dual-branch block: independent spatial and spectral SSM branches, cross attention, fusion."""

    def __init__(self, cfg: SSAMambaConfig):
        super().__init__()
        branch = (cfg.d_model, cfg.d_state, cfg.d_conv, cfg.expand, cfg.dropout, cfg.ssm_impl)
        self.spatial_branch = MambaBranch(*branch)
        self.spectral_branch = MambaBranch(*branch)
        self.norm_spatial = nn.LayerNorm(cfg.d_model)
        self.norm_spectral = nn.LayerNorm(cfg.d_model)
        self.cross_attn = CrossDomainAttention(cfg.d_model, cfg.n_heads)
        self.fusion = GatedFusion(cfg.d_model, cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        """x: ``(N, L, d_model)`` → same shape."""
        f_spatial = self.norm_spatial(self.spatial_branch(x))  # (N, L, d_model)
        f_spectral = self.norm_spectral(self.spectral_branch(x))  # (N, L, d_model)
        f_attn = self.cross_attn(f_spatial, f_spectral)  # (N, L, d_model)
        return self.fusion(f_spatial, f_attn, x)  # (N, L, d_model)


class InputProjection(nn.Module):
    """bands → d_model/2 (1×1 conv, spectral mixing) → d_model (3×3 conv, local spatial), BN + GELU each."""

    def __init__(self, bands: int, d_model: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv2d(bands, d_model // 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(d_model // 2)
        self.conv2 = nn.Conv2d(d_model // 2, d_model, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(d_model)
        self.dropout = nn.Dropout2d(dropout)

    def _conv_bn(self, x: Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> Tensor:
        if self.training:
            return bn(conv(x))
        w, b = _fold_bn(conv.weight, None, bn)
        return F.conv2d(x, w, b, padding=conv.padding)

    def forward(self, x: Tensor) -> Tensor:
        """x: ``(N, bands, P, P)`` → z_proj ``(N, d_model, P, P)``, channels-last in memory."""
        x = x.contiguous(memory_format=torch.channels_last)  # (N, bands, P, P)
        z = F.gelu(self._conv_bn(x, self.conv1, self.bn1))  # (N, d_model/2, P, P)
        return self.dropout(F.gelu(self._conv_bn(z, self.conv2, self.bn2)))  # (N, d_model, P, P)


class FeatureIntegration(nn.Module):
    """Depthwise 3×3 + pointwise 1×1 refinement, SE global context, global residual (paper Eq. 29-34)."""

    def __init__(self, d_model: int, dropout: float):
        super().__init__()
        self.dw_conv = nn.Conv2d(d_model, d_model, 3, padding=1, groups=d_model, bias=False)
        self.bn1 = nn.BatchNorm2d(d_model)
        self.pw_conv = nn.Conv2d(d_model, d_model, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(d_model)
        self.drop2d = nn.Dropout2d(dropout)
        d_mid = max(d_model // _SE_REDUCTION, 4)
        self.se_fc1 = nn.Conv2d(d_model, d_mid, 1)
        self.se_fc2 = nn.Conv2d(d_mid, d_model, 1)

    def forward(self, z: Tensor, z_proj: Tensor) -> Tensor:
        """z: block output as an image, z_proj: input projection, both ``(N, d_model, P, P)`` → same shape."""
        z = F.gelu(self.bn1(self.dw_conv(z)))  # (N, d_model, P, P)
        z = self.drop2d(F.gelu(self.bn2(self.pw_conv(z))))  # (N, d_model, P, P)
        g = torch.sigmoid(
            self.se_fc2(F.relu(self.se_fc1(z.mean(dim=(2, 3), keepdim=True))))
        )  # (N, d_model, 1, 1)
        return z * g + z_proj  # (N, d_model, P, P)


# ─── Model ────────────────────────────────────────────────────────────────────


class SSAMamba(ChunkedInference, nn.Module):
    """SSA-Mamba classifier: ``(N, bands, P, P)`` float patches → ``(N, num_classes)`` logits."""

    input_kind = "float"  # takes float reflectance patches (students take uint8)
    #: :class:`~blmkd.ops.chunked.ChunkedInference`. At the paper size a 64-patch chunk's largest
    #: intermediate (the in-projection, 64·49·1024 floats) is 12.8 MB, below glibc's 32 MB mmap
    #: threshold; whole batches of 256 ran 1.38× slower (2026-12-03, batch 256, 2 threads).
    infer_chunk = 64

    def __init__(self, cfg: SSAMambaConfig):
        super().__init__()
        self.config = cfg
        self.input_proj = InputProjection(cfg.bands, cfg.d_model, cfg.dropout)
        self.blocks = nn.ModuleList(CrossDomainBlock(cfg) for _ in range(cfg.depth))
        self.block_norms = nn.ModuleList(nn.LayerNorm(cfg.d_model) for _ in range(cfg.depth))
        self.feature_integration = FeatureIntegration(cfg.d_model, cfg.dropout)
        self.head = nn.Linear(cfg.d_model, cfg.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Logits ``(N, num_classes)``; with ``return_features`` also the pooled feature ``(N, d_model)``."""
        if self._chunked(x):
            return self._in_chunks(self.forward, x, return_features)
        N, _, H, W = x.shape
        z_proj = self.input_proj(x)  # (N, d_model, H, W)  channels-last
        h = z_proj.permute(0, 2, 3, 1).reshape(N, H * W, -1)  # (N, L, d_model)  row-major serialization
        for block, norm in zip(self.blocks, self.block_norms):
            h = norm(block(h))  # (N, L, d_model)
        z = h.view(N, H, W, -1).permute(0, 3, 1, 2)  # (N, d_model, H, W)  channels-last view, no copy
        z = self.feature_integration(z, z_proj)  # (N, d_model, H, W)
        feat = z.mean(dim=(2, 3))  # (N, d_model)  global average pool
        w = self.config.centre_weight
        if w:  # exactly the average pool at 0
            feat = (1.0 - w) * feat + w * z[:, :, H // 2, W // 2]  # (N, d_model)  centre-weighted
        logits = self.head(feat)  # (N, num_classes)
        return (logits, feat) if return_features else logits


# ─── Config and presets ───────────────────────────────────────────────────────


@dataclass
class SSAMambaConfig:
    bands: int  # spectral bands of the input patches
    num_classes: int  # output classes
    d_model: int = 256  # token width (paper: 256)
    d_state: int = 16  # SSM state size per channel (paper: 16)
    d_conv: int = 3  # depthwise causal conv kernel in each branch
    expand: int = 2  # d_inner = expand · d_model
    depth: int = 4  # cross-domain blocks (paper: 4)
    n_heads: int = 8  # cross-attention heads; must divide d_model
    patch_size: int = 7  # training patch size; informational, any odd P works
    dropout: float = 0.1  # dropout rate everywhere
    centre_weight: float = 0.0  # pooled = (1 − w)·mean + w·centre pixel, in [0, 1]; > 0 for thin structures
    ssm_impl: str = "conv"  # "conv": LTI kernel as a Toeplitz matmul (fast) | "scan": reference recurrence

    def __post_init__(self) -> None:
        if self.ssm_impl not in SSM_IMPLS:
            raise ModelError(f"ssm_impl must be one of {', '.join(SSM_IMPLS)}, not {self.ssm_impl!r}")
        if self.d_model % self.n_heads or self.d_model % 2:
            raise ModelError(
                f"d_model ({self.d_model}) must be even and divisible by n_heads ({self.n_heads})"
            )
        if not 0.0 <= self.centre_weight <= 1.0:
            raise ModelError(f"centre_weight must be in [0, 1], got {self.centre_weight!r}")
        if self.bands < 1 or self.num_classes < 2:
            raise ModelError(f"need bands >= 1 and num_classes >= 2, got {self.bands} and {self.num_classes}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model


def _build(bands: int, num_classes: int, defaults: dict, overrides: dict) -> SSAMamba:
    return SSAMamba(SSAMambaConfig(bands=bands, num_classes=num_classes, **{**defaults, **overrides}))


@register_model(family="teacher", description="SSA-Mamba, paper size (d_model 256, depth 4)")
def ssa_mamba(bands: int, num_classes: int, **overrides) -> SSAMamba:
    return _build(bands, num_classes, {}, overrides)


@register_model(family="teacher", description="SSA-Mamba small for CPU (d_model 128, depth 2)")
def ssa_mamba_s(bands: int, num_classes: int, **overrides) -> SSAMamba:
    return _build(bands, num_classes, dict(d_model=128, depth=2), overrides)


@register_model(family="teacher", description="SSA-Mamba tiny for CPU (d_model 64, depth 1)")
def ssa_mamba_t(bands: int, num_classes: int, **overrides) -> SSAMamba:
    return _build(bands, num_classes, dict(d_model=64, depth=1), overrides)


@register_model(family="teacher", description="SSA-Mamba for tests (d_model 16, d_state 4, 2 heads)")
def ssa_mamba_test(bands: int, num_classes: int, **overrides) -> SSAMamba:
    return _build(bands, num_classes, dict(d_model=16, d_state=4, depth=1, n_heads=2), overrides)
