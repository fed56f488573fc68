"""Distillation: the objective the training loop minimises, and the losses it is made of.

The objective of Ahmad et al., "Byte Latent Mamba with State Space and Knowledge Distillation for
Hyperspectral Image Classification", IEEE TGRS 63, 2025 (doi:10.1109/TGRS.2025.3626861)::

    L_total(t) = (1 − λ_t)·L_CE(z_s, y) + λ_t·L_KD(z_s, z_t)

with λ_t rising linearly over a warm-up (:func:`lambda_schedule`), ``L_KD`` a temperature-softened
match of the teacher's class distribution (:class:`KDLoss`), and, optionally, a feature-level hint
(:class:`HintLoss`). Teacher tensors are always detached: gradients reach the student only.

:func:`kd_objective` turns a :class:`KDConfig` and the teacher's cached logits
(:mod:`blmkd.distill.cache`) into the objective of :func:`blmkd.training.loop.fit`, so
distillation reuses the whole training loop.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from blmkd.distill.cache import UnlabelledPool
from blmkd.errors import BlmkdError

__all__ = [
    "DistillationLoss",
    "HintLoss",
    "KDConfig",
    "KDLoss",
    "dkd_parts",
    "kd_objective",
    "lambda_schedule",
]


@dataclass
class KDConfig:
    """Distillation settings (Hinton et al. 2015; λ_t warm-up of Ahmad et al. 2025)."""

    # The defaults T 2, λ_max 0.5 (the paper's T 4, λ_max 1 before): chosen on three synthetic scenes
    # and Indian Pines, where T 4 / λ → 1 lost to T 2 / λ 0.5 beyond noise (docs/results.md#transfer-suite).
    temperature: float = 2.0  # softening T; the paper's best range is 2–6
    kd_loss: str = "kl"  # "kl": T²·KL(q_T ‖ p_S); "soft-ce": the paper's soft cross-entropy; "dkd": decoupled
    warmup_epochs: int = 20  # epochs over which λ_t rises from lambda_0 to lambda_max
    lambda_0: float = 0.0
    lambda_max: float = 0.5  # < 1 keeps some hard-label signal after the warm-up
    hint_weight: float = 0.0  # feature-level hint loss weight (0 = off)
    unlabelled: int = 0  # also distil on up to this many pixels the ground truth leaves unlabelled (0 = off)
    teacher_tta: bool = False  # target = the teacher's logits averaged over the 8 dihedral views of the patch
    dkd_alpha: float = 0.0  # --kd-loss dkd: weight of the target-class term (TCKD)
    dkd_beta: float = 1.0  # --kd-loss dkd: weight of the non-target term (NCKD)
    class_shrink: float = 0.0  # pixel λ = λ_t·n/(n + class_shrink), n its class's training pixels (0 = off)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        if self.temperature <= 0:
            raise BlmkdError(f"--temperature must be > 0, got {self.temperature}")
        if self.warmup_epochs < 0:
            raise BlmkdError(f"--warmup-epochs must be ≥ 0, got {self.warmup_epochs}")
        for name in ("lambda_0", "lambda_max"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise BlmkdError(f"--{name.replace('_', '-')} must be in [0, 1], got {v}")
        if self.kd_loss not in ("kl", "soft-ce", "dkd"):
            raise BlmkdError(f"--kd-loss must be kl, soft-ce or dkd, got {self.kd_loss!r}")
        for name in ("dkd_alpha", "dkd_beta", "class_shrink"):
            if not getattr(self, name) >= 0:
                raise BlmkdError(f"--{name.replace('_', '-')} must be ≥ 0, got {getattr(self, name)}")
        if self.hint_weight < 0:
            raise BlmkdError(f"--hint-weight must be ≥ 0, got {self.hint_weight}")
        if self.unlabelled < 0:
            raise BlmkdError(f"--unlabelled must be ≥ 0, got {self.unlabelled}")
        if self.unlabelled and self.hint_weight > 0:
            raise BlmkdError(
                "--unlabelled and --hint-weight cannot be combined (the hint needs teacher features per pixel)"
            )
        if self.teacher_tta and self.hint_weight > 0:
            raise BlmkdError(
                "--teacher-tta and --hint-weight cannot be combined (the hint matches one view's features)"
            )


def kd_objective(
    cfg: KDConfig,
    cache: torch.Tensor,
    feat_cache: torch.Tensor | None = None,
    hint: nn.Module | None = None,
    pool: UnlabelledPool | None = None,
    seed: int = 0,
    class_counts: torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
):
    """Training objective for :func:`blmkd.training.loop.fit` using cached teacher outputs.

    ``cache[i, v]`` are the teacher logits of training patch ``i`` under dihedral variant ``v``.
    With a ``pool`` of unlabelled pixels, every step also draws as many of them as the batch has
    labelled ones, runs them through the student in the same forward pass, and adds
    ``λ_t·L_KD`` on them (no CE: they have no label). With ``cfg.class_shrink = k > 0`` and the
    training pixels per class ``class_counts (K,)``, a pixel of a class with ``n`` of them gets
    ``λ_t·n/(n + k)``: the fewer examples the teacher learnt a class from, the more its pixels
    lean on their label. ``class_weights (K,)`` (:func:`blmkd.training.config.class_balance_weights`) scale
    each labelled pixel's whole loss, CE and KD, by its class's weight; unlabelled pixels, which
    have no class, keep weight 1.
    """
    if pool is not None and hint is not None and cfg.hint_weight > 0:
        raise ValueError("an unlabelled pool and a hint loss cannot be combined (see KDConfig.validate)")
    loss_fn = DistillationLoss(cfg.temperature, cfg.kd_loss, alpha=cfg.dkd_alpha, beta=cfg.dkd_beta)
    gen = torch.Generator().manual_seed(seed)
    trust_of = None  # per class: n/(n + k)
    if cfg.class_shrink > 0:
        if class_counts is None:
            raise ValueError("class_shrink needs the training pixels per class (class_counts)")
        n = torch.as_tensor(class_counts, dtype=torch.float32)
        trust_of = n / (n + cfg.class_shrink)

    def objective(model, x, y, idx, variants, epoch):
        lam = lambda_schedule(epoch - 1, cfg.warmup_epochs, cfg.lambda_0, cfg.lambda_max)
        v = variants if cache.shape[1] > 1 else torch.zeros_like(variants)
        z_t = cache[idx, v].to(x.device)  # (N, K); the cache stays on the CPU
        use_hint = hint is not None and cfg.hint_weight > 0
        j = None  # the unlabelled pixels drawn this step
        if pool is not None and len(pool) and lam > 0:
            j = torch.randint(0, len(pool), (len(x),), generator=gen).numpy()
            xu = pool.extractor.gather(pool.rows[j], pool.cols[j]).to(x.device)
            z_all = model(torch.cat([x, xu]))  # one pass: BatchNorm sees both
            z_s, z_u = z_all[: len(x)], z_all[len(x) :]
        elif use_hint:
            z_s, f_s = model(x, return_features=True)
        else:
            z_s = model(x)
        trust = None if trust_of is None else trust_of[y.cpu()].to(y.device)
        weight = None if class_weights is None else class_weights[y.cpu()].to(y.device)
        total, parts = loss_fn(z_s, z_t, y, lam, trust, weight)
        if use_hint:
            h = hint(f_s, feat_cache[idx, v].to(x.device))
            total = total + cfg.hint_weight * h
            parts = {**parts, "hint": float(h.detach())}
        if pool is not None:  # the same log keys every step, 0 while λ is 0
            ku = loss_fn.kd(z_u, pool.logits[j].to(x.device)) if j is not None else torch.zeros(())
            total = total + lam * ku
            parts = {**parts, "kd_unlabelled": float(ku.detach())}
        return total, z_s, {**parts, "lambda": lam}

    return objective


# ----------------------------------------------------------------------------------------------
# The losses

KD_KINDS = ("kl", "soft-ce", "dkd")


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def lambda_schedule(epoch: int, warmup_epochs: int, lambda_0: float = 0.0, lambda_max: float = 1.0) -> float:
    """Distillation weight λ_t at ``epoch`` (0-based): a linear warm-up (Ahmad et al. 2025).

    ``λ_t = λ_0 + (λ_max − λ_0)·min(t / T_warmup, 1)``; with ``warmup_epochs == 0`` it is ``λ_max``
    from the start. Early epochs lean on the labels while the student is far from the teacher;
    later ones on the teacher's soft targets.

    Raises:
        ValueError: ``λ_0`` or ``λ_max`` outside ``[0, 1]``, or a negative epoch or warm-up.
    """
    _check_unit("lambda_0", lambda_0)
    _check_unit("lambda_max", lambda_max)
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if warmup_epochs == 0:
        return float(lambda_max)
    return float(lambda_0 + (lambda_max - lambda_0) * min(epoch / warmup_epochs, 1.0))


class KDLoss(nn.Module):
    """Logit distillation loss at temperature ``T``, averaged over the batch.

    ``kind="kl"`` (Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015)::

        L_KD = T² · KL(softmax(z_t/T) ‖ softmax(z_s/T))
             = T² · Σ_k q_k (log q_k − log p_k),     q = softmax(z_t/T), p = softmax(z_s/T)

    The ``T²`` keeps the gradient's scale independent of ``T``. ``kind="soft-ce"`` is the soft
    cross-entropy of Ahmad et al. 2025, without ``T²``::

        L_KD = −Σ_k q_k · log p_k

    It differs from the KL term by the teacher's entropy (a constant for the student) and the
    ``T²`` factor, so it is never 0, even when the logits match.

    ``kind="dkd"`` is decoupled KD (Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022)::

        L_KD = T² · (α·TCKD + β·NCKD)

    where TCKD matches the binary split [q_y, 1 − q_y] of the target class ``y`` and NCKD the
    distribution among the other classes (:func:`dkd_parts`). The classic KL term is the special
    case ``TCKD + (1 − q_y)·NCKD`` per pixel: it passes on the teacher's confidence in the label
    and damps the "dark knowledge" wherever the teacher is sure. With ``α = 0`` the student takes
    how the wrong classes relate from the teacher and how sure to be from the labels, which keeps
    the classes with a handful of training pixels that the teacher itself is unsure of (the aim; on
    Indian Pines' 10% split it did not: docs/results.md, Other recipes).
    The target ``y`` is the label where there is one, else the teacher's top class.

    Args:
        temperature: softening temperature ``T > 0``.
        kind: ``"kl"``, ``"soft-ce"`` or ``"dkd"``.
        alpha, beta: DKD's weights of TCKD and NCKD (``kind="dkd"`` only), ≥ 0.
    """

    def __init__(self, temperature: float = 4.0, kind: str = "kl", alpha: float = 0.0, beta: float = 1.0):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if kind not in KD_KINDS:
            raise ValueError(f"kind must be one of {', '.join(KD_KINDS)}, got {kind!r}")
        if not (alpha >= 0 and beta >= 0):
            raise ValueError(f"alpha and beta must be >= 0, got {alpha}, {beta}")
        self.temperature = float(temperature)
        self.kind = kind
        self.alpha, self.beta = float(alpha), float(beta)

    def forward(self, z_s: torch.Tensor, z_t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar loss of student logits ``z_s (N, K)`` against teacher logits ``z_t (N, K)``.

        ``y`` (N,) are the target classes of ``kind="dkd"``; default: the teacher's top class.
        """
        return self.per_pixel(z_s, z_t, y).mean()

    def per_pixel(self, z_s: torch.Tensor, z_t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of every pixel, ``(N,)``; :meth:`forward` is its mean."""
        T = self.temperature
        if self.kind == "dkd":
            tckd, nckd = dkd_parts(z_s, z_t, z_t.argmax(-1) if y is None else y, T)
            return T * T * (self.alpha * tckd + self.beta * nckd)
        log_p = F.log_softmax(z_s / T, dim=-1)  # (N, K)
        log_q = F.log_softmax(z_t.detach() / T, dim=-1)  # (N, K)
        if self.kind == "kl":
            return T * T * (log_q.exp() * (log_q - log_p)).sum(dim=-1)
        return -(log_q.exp() * log_p).sum(dim=-1)


def dkd_parts(
    z_s: torch.Tensor, z_t: torch.Tensor, y: torch.Tensor, T: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel TCKD and NCKD (Zhao et al. 2022) at temperature ``T``, without the ``T²``.

    TCKD = KL([q_y, 1 − q_y] ‖ [p_y, 1 − p_y]); NCKD = KL(q̂ ‖ p̂) with q̂, p̂ the softmax over the
    classes other than ``y``. Both are ``(N,)``; ``KL(q ‖ p) = TCKD + (1 − q_y)·NCKD`` exactly.
    """
    log_p = F.log_softmax(z_s / T, dim=-1)
    log_q = F.log_softmax(z_t.detach() / T, dim=-1)
    target = F.one_hot(y.long(), z_s.shape[-1]).bool()
    lp_y, lq_y = log_p[target], log_q[target]  # (N,)
    # log(1 − p_y) from the other classes' log-probabilities: stable where p_y → 1
    lp_n = torch.logsumexp(log_p.masked_fill(target, -math.inf), -1)
    lq_n = torch.logsumexp(log_q.masked_fill(target, -math.inf), -1)
    tckd = lq_y.exp() * (lq_y - lp_y) + lq_n.exp() * (lq_n - lp_n)
    # within the non-target classes: log p̂_k = log p_k − log(1 − p_y)
    lp_hat = (log_p - lp_n[:, None]).masked_fill(target, 0.0)
    lq_hat = (log_q - lq_n[:, None]).masked_fill(target, 0.0)
    nckd = (lq_hat.exp().masked_fill(target, 0.0) * (lq_hat - lp_hat)).sum(-1)
    return tckd, nckd


class DistillationLoss(nn.Module):
    """Adaptive distillation objective (Ahmad et al. 2025)::

        L = (1 − λ)·CE(z_s, y) + λ·L_KD(z_s, z_t)

    with ``L_KD`` from :class:`KDLoss` and ``λ`` given per call (from :func:`lambda_schedule`).

    Args:
        temperature: KD temperature ``T > 0``.
        kind: ``"kl"`` (``T²``-scaled KL, Hinton et al. 2015), ``"soft-ce"`` (the paper's) or
            ``"dkd"`` (decoupled, Zhao et al. 2022; its target class is the label ``y``).
        label_smoothing: label smoothing of the CE term, in ``[0, 1)``.
        alpha, beta: DKD's weights (:class:`KDLoss`).
    """

    def __init__(
        self,
        temperature: float = 4.0,
        kind: str = "kl",
        label_smoothing: float = 0.0,
        alpha: float = 0.0,
        beta: float = 1.0,
    ):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.kd = KDLoss(temperature, kind, alpha, beta)
        self.label_smoothing = float(label_smoothing)

    def forward(
        self,
        z_s: torch.Tensor,
        z_t: torch.Tensor,
        y: torch.Tensor,
        lam: float,
        trust: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and its parts.

        Args:
            z_s: student logits ``(N, K)``.
            z_t: teacher logits ``(N, K)`` (detached here).
            y: class indices ``(N,)``.
            lam: distillation weight λ in ``[0, 1]``.
            trust: optional per-pixel factor ``(N,)`` in ``[0, 1]`` on λ: pixel ``i`` mixes
                ``(1 − λ·trust_i)·CE_i + λ·trust_i·KD_i`` (e.g. less teacher on small classes).
            weight: optional per-pixel loss weight ``(N,)`` (e.g. class balance): pixel ``i``'s
                mixed loss is scaled by ``weight_i`` before the mean over the batch.

        Returns:
            ``(total, {"ce": float, "kd": float})``, the parts unweighted.
        """
        _check_unit("lam", lam)
        if trust is None and weight is None:
            ce = F.cross_entropy(z_s, y, label_smoothing=self.label_smoothing)
            kd = self.kd(z_s, z_t, y)
            total = (1.0 - lam) * ce + lam * kd
        else:
            ce_i = F.cross_entropy(z_s, y, label_smoothing=self.label_smoothing, reduction="none")  # (N,)
            kd_i = self.kd.per_pixel(z_s, z_t, y)  # (N,)
            w = lam if trust is None else lam * trust.to(ce_i.dtype)  # (N,) or scalar
            mixed = (1.0 - w) * ce_i + w * kd_i  # (N,)
            total = (mixed if weight is None else weight.to(ce_i.dtype) * mixed).mean()
            ce, kd = ce_i.mean(), kd_i.mean()
        return total, {"ce": float(ce.detach()), "kd": float(kd.detach())}


class HintLoss(nn.Module):
    """Feature-level hint (FitNets, Romero et al., ICLR 2015)::

        L_hint = ‖W·f_s + b − f_t‖² / (N·D_t)

    a mean squared error between a learned linear projection of the student's pooled features
    ``f_s (N, D_s)`` and the teacher's ``f_t (N, D_t)`` (detached). The projection is trained with
    the student (add this module's parameters to the optimizer) and dropped at export.

    Args:
        student_dim: ``D_s``.
        teacher_dim: ``D_t``.
    """

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.proj = nn.Linear(student_dim, teacher_dim)

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.proj(f_s), f_t.detach())
