"""The teacher's answers, computed once: logits per training patch and augmentation view.

The teacher is frozen in eval mode and its logits for every training patch are computed once
per augmentation variant (the 8 dihedral symmetries when augmentation is on, else only the
identity) and cached, so distillation costs only the student's time. Under ``torchrun`` each rank
computes a contiguous share of the patches and the shares are all-gathered, so every rank holds the
same full cache (on the CPU) after a world-size-th of the work. An ensemble's cache is the mean of
its members' logits; unlabelled pixels get theirs in an :class:`UnlabelledPool`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

import blmkd.distributed as D
from blmkd.bundle import Bundle
from blmkd.data.scene import UNLABELLED
from blmkd.training.evaluation import dihedral, predict_logits


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
    :class:`~blmkd.bundle.Bundle` or one per teacher (the same pixels, each member's own window).
    """
    variants = 8 if tta else variants
    bundles = bundle if isinstance(bundle, list | tuple) else [bundle] * len(teachers)
    caches = [
        teacher_cache(t, b, variants, batch_size, coords=coords)
        for t, b in zip(teachers, bundles, strict=True)
    ]
    cache = caches[0] if len(caches) == 1 else torch.stack(caches).mean(0)
    return cache.mean(1, keepdim=True) if tta else cache
