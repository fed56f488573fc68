"""Adaptive knowledge distillation on top of the shared training loop.

The teacher is frozen in eval mode and its logits for every training patch are computed once
per augmentation variant (the 8 dihedral symmetries when augmentation is on, else only the
identity) and cached, so distillation costs only the student's time. Under ``torchrun`` each rank computes a
contiguous share of the patches and the shares are all-gathered, so every rank holds the same
full cache (on the CPU) after a world-size-th of the work. The objective mixes
cross-entropy and the KD term with λ_t rising linearly over the warm-up
(:func:`blmkd.distill.losses.lambda_schedule`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from blmkd.train import Bundle, dihedral, predict_logits


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
        from blmkd.errors import BlmkdError

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


@dataclass
class UnlabelledPool:
    """Pixels without ground truth and the teacher's logits for them (identity view only).

    They are never train, val or test pixels, so distilling on them adds inputs, not labels: the
    student learns the teacher's answers where no label says anything.
    """

    rows: np.ndarray
    cols: np.ndarray
    logits: torch.Tensor  # (N, K)
    extractor: object  # the student's PatchExtractor

    def __len__(self) -> int:
        return len(self.rows)


def unlabelled_coords(bundle: Bundle, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``limit`` pixels the ground truth leaves unlabelled, a seeded sample in row-major order."""
    from blmkd.data.scene import UNLABELLED

    rows, cols = np.nonzero(bundle.scene.labels == UNLABELLED)
    if limit < len(rows):
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), limit, replace=False))
        rows, cols = rows[keep], cols[keep]
    return rows, cols


@torch.inference_mode()
def teacher_cache(
    teacher: nn.Module,
    bundle: Bundle,
    variants: int,
    batch_size: int = 512,
    features: bool = False,
    coords=None,
):
    """Teacher outputs for every training patch and variant: logits (N, V, K) [and features (N, V, D)].

    ``coords`` (rows, cols) replaces the training pixels (e.g. by unlabelled ones).

    The teacher runs on this rank's device (:func:`blmkd.distributed.init_from_env`); the cache is
    returned on the CPU. Under torchrun every rank computes its share and receives all the others'.
    """
    from blmkd import distributed as D

    ctx = D.init_from_env()
    teacher.to(ctx.device).eval()
    rows, cols = coords if coords is not None else bundle.coords("train")[:2]
    share = D.shard(len(rows))
    rows, cols = rows[share], cols[share]
    ext = bundle.extractor(getattr(teacher, "input_kind", "float"))
    logits, feats = [], []
    for v in range(variants):
        if not features:
            logits.append(predict_logits(teacher, ext, rows, cols, batch_size, variant=v))
            continue
        lv, fv = [], []
        for i in range(0, len(rows), batch_size):
            x = dihedral(ext.gather(rows[i : i + batch_size], cols[i : i + batch_size]), v)
            z, f = teacher(x.to(ctx.device), return_features=True)
            lv.append(z.float().cpu())
            fv.append(f.float().cpu())
        logits.append(torch.cat(lv))
        feats.append(torch.cat(fv))
    lg = torch.stack(logits, 1)  # (n, V, K) of this rank's patches
    fs = torch.stack(feats, 1) if features else None  # (n, V, D)
    if ctx.distributed:  # shares in rank order are the patches in order
        shares = [s for s in D.all_gather_object((lg, fs)) if len(s[0])]
        lg = torch.cat([s[0] for s in shares])
        fs = torch.cat([s[1] for s in shares]) if features else None
    return (lg, fs) if features else lg


def ensemble_cache(
    teachers: list[nn.Module],
    bundle: Bundle,
    variants: int,
    batch_size: int = 512,
    coords=None,
    tta: bool = False,
):
    """:func:`teacher_cache` of several teachers, averaged: the logits of their ensemble ``(N, V, K)``.

    Averaging logits (not probabilities) keeps one teacher's cache exactly what it was alone and
    gives the temperature-softened targets ``softmax(mean_i z_i / T)``, a geometric mean of the
    members' distributions. With ``tta`` every member runs on the 8 dihedral views of each patch
    and the result is their mean, ``(N, 1, K)``: one view-independent target per patch, whatever
    view the student is shown (8× the teacher time of the identity view alone). ``bundle`` is one
    :class:`~blmkd.train.Bundle` or one per teacher (the same pixels, each member's own window).
    """
    variants = 8 if tta else variants
    bundles = bundle if isinstance(bundle, list | tuple) else [bundle] * len(teachers)
    caches = [
        teacher_cache(t, b, variants, batch_size, coords=coords)
        for t, b in zip(teachers, bundles, strict=True)
    ]
    cache = caches[0] if len(caches) == 1 else torch.stack(caches).mean(0)
    return cache.mean(1, keepdim=True) if tta else cache


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
    """Training objective for :func:`blmkd.train.fit` using cached teacher outputs.

    ``cache[i, v]`` are the teacher logits of training patch ``i`` under dihedral variant ``v``.
    With a ``pool`` of unlabelled pixels, every step also draws as many of them as the batch has
    labelled ones, runs them through the student in the same forward pass, and adds
    ``λ_t·L_KD`` on them (no CE: they have no label). With ``cfg.class_shrink = k > 0`` and the
    training pixels per class ``class_counts (K,)``, a pixel of a class with ``n`` of them gets
    ``λ_t·n/(n + k)``: the fewer examples the teacher learnt a class from, the more its pixels
    lean on their label. ``class_weights (K,)`` (:func:`blmkd.train.class_balance_weights`) scale
    each labelled pixel's whole loss, CE and KD, by its class's weight; unlabelled pixels, which
    have no class, keep weight 1.
    """
    from blmkd.distill.losses import DistillationLoss, lambda_schedule

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
