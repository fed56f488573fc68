"""What the training loop is asked to do: the optimisation settings and the loss (an *objective*).

:class:`TrainConfig` holds the optimiser, schedule, augmentation and selection settings. The loss
is a function ``objective(model, x, y, idx, variants, epoch) -> (loss, logits, parts)``: plain
cross-entropy (:func:`ce_objective`, optionally weighted per class by
:func:`class_balance_weights`) or distillation (:func:`blmkd.distill.kd.kd_objective`), so every
kind of training runs through the one loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from blmkd.errors import TrainingError

AMP_MODES = ("off", "bf16")


@dataclass
class TrainConfig:
    """Optimisation settings (paper: AdamW, lr 1e-3, weight decay 5e-4)."""

    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 5e-4
    warmup_epochs: int = 5  # linear LR warm-up before the cosine decay
    min_lr_ratio: float = 0.01  # cosine floor as a fraction of lr
    grad_clip: float = 1.0  # max global grad norm (0 disables)
    augment: bool = True  # random dihedral flips/rotations of training patches
    patience: int = (
        30  # early stopping: epochs without a better val OA, or an equal one with lower val loss (0 disables)
    )
    label_smoothing: float = 0.0
    class_balance: float = 0.0  # β of the effective-number class weights (Cui et al. 2019); 0 = off
    ema: float = 0.0  # per-step decay of an exponential moving average of the weights (0 = off)
    amp: str = "off"  # mixed precision of the training steps: "off" (FP32) or "bf16" (autocast)
    eval_batch: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise TrainingError(f"--amp must be one of {', '.join(AMP_MODES)}, not {self.amp!r}")

    def validate(self) -> None:
        """Refuse settings that cannot train, naming the command-line option of each."""
        if self.epochs < 1:
            raise TrainingError("--epochs must be at least 1")
        if self.batch_size < 2:
            raise TrainingError("--batch must be at least 2 (BatchNorm needs two samples)")
        if self.lr <= 0:
            raise TrainingError("--lr must be positive")
        if not 0.0 <= self.ema < 1.0:
            raise TrainingError(f"--ema must be in [0, 1) (0 = off), got {self.ema}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise TrainingError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.class_balance < 1.0:
            raise TrainingError(f"--class-balance must be in [0, 1) (0 = off), got {self.class_balance}")

    def to_dict(self) -> dict:
        return asdict(self)


# objective(model, x, y, idx, variants, epoch) -> (loss, logits, parts)
Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], tuple]


def lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning-rate factor per step: linear warm-up, then cosine decay to ``min_lr_ratio``."""
    warm = max(0, cfg.warmup_epochs * steps_per_epoch)
    total = max(1, cfg.epochs * steps_per_epoch)

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def class_balance_weights(labels, num_classes: int, beta: float) -> torch.Tensor:
    """Per-class loss weights ``(K,)`` from the effective number of samples (Cui et al., CVPR 2019).

    A class with ``n`` training pixels weighs ``1 / E_n`` with ``E_n = (1 − βⁿ) / (1 − β)``: for
    ``β → 0`` every class weighs the same per pixel (plain cross-entropy), for ``β → 1`` each class
    weighs the same in total (inverse frequency). The weights are scaled so that the training
    pixels' mean weight is 1, which keeps the loss scale, and so the learning rate, of the
    unweighted loss. Classes without training pixels get 0.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"class balance β must be in [0, 1), got {beta}")
    n = torch.bincount(torch.as_tensor(labels).long().flatten(), minlength=num_classes).double()  # (K,)
    effective = (1.0 - torch.pow(beta, n)) / (1.0 - beta)  # (K,); 0 where n = 0
    w = torch.where(n > 0, 1.0 / effective.clamp_min(1e-12), torch.zeros_like(n))  # (K,)
    return (w * n.sum() / (w * n).sum()).float()  # (K,): Σ_c n_c·w_c = Σ_c n_c


def ce_objective(label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None) -> Objective:
    """Cross-entropy; with ``class_weights (K,)`` each pixel's loss is scaled by its class's weight
    (a plain mean over the batch, as the distillation loss weighs its pixels)."""

    def objective(model, x, y, idx, variants, epoch):
        logits = model(x)
        if class_weights is None:
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        else:
            per_pixel = F.cross_entropy(logits, y, label_smoothing=label_smoothing, reduction="none")  # (N,)
            loss = (class_weights.to(per_pixel.device)[y] * per_pixel).mean()
        return loss, logits, {"ce": float(loss.detach())}

    return objective
