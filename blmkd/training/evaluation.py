"""Running a model over a bundle's pixels: dihedral views, logits, test-time augmentation, OA/AA/κ."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import blmkd.distributed as D
from blmkd.bundle import Bundle
from blmkd.metrics import classification_report


def dihedral(x: torch.Tensor, variant: int) -> torch.Tensor:
    """One of the 8 symmetries of the square on (N, C, P, P): rotation by 90°·(v % 4), then a flip if v ≥ 4."""
    if variant % 4:
        x = torch.rot90(x, variant % 4, dims=(2, 3))
    if variant >= 4:
        x = torch.flip(x, dims=(3,))
    return x


def apply_variants(x: torch.Tensor, variants: torch.Tensor) -> torch.Tensor:
    """Apply a per-sample dihedral variant (N,) to x (N, C, P, P)."""
    out = x.clone()
    variants = variants.to(x.device)
    for v in torch.unique(variants).tolist():
        if v == 0:
            continue
        sel = variants == v
        out[sel] = dihedral(x[sel], v)
    return out


@torch.inference_mode()
def predict_logits(
    model: nn.Module, extractor, rows, cols, batch_size: int = 1024, variant: int = 0
) -> torch.Tensor:
    """Logits (N, K) for the windows centred at (rows, cols), in eval mode."""
    model.eval()
    rows, cols = np.asarray(rows), np.asarray(cols)
    device = next(model.parameters()).device
    outs = []
    for i in range(0, len(rows), batch_size):
        x = extractor.gather(rows[i : i + batch_size], cols[i : i + batch_size])
        if variant:
            x = dihedral(x, variant)
        outs.append(model(x.to(device)).float().cpu())
    if not outs:
        return torch.zeros(0, 0)
    return torch.cat(outs)


def predict_tta(model: nn.Module, extractor, rows, cols, batch_size: int = 1024) -> torch.Tensor:
    """Class probabilities (N, K) averaged over the 8 dihedral views of each window.

    Test-time augmentation: 8× the inference cost of :func:`predict_logits`. The models are
    trained with random dihedral views (``--augment``), so every view is one they know.
    """
    return (
        sum(predict_logits(model, extractor, rows, cols, batch_size, variant=v).softmax(1) for v in range(8))
        / 8
    )


def evaluate_model(
    model: nn.Module, bundle: Bundle, which: str = "test", batch_size: int = 1024, tta: bool = False
):
    """OA/AA/κ report of ``model`` on the ``which`` pixels of the bundle's split (``tta``: 8 dihedral views)."""
    rows, cols, y = bundle.coords(which)
    extractor = bundle.extractor(getattr(model, "input_kind", "float"))
    predict = predict_tta if tta else predict_logits
    pred = predict(model, extractor, rows, cols, batch_size).argmax(1).numpy()
    return classification_report(y, pred, bundle.scene.num_classes)


def evaluate_sharded(model: nn.Module, bundle: Bundle, which: str, batch_size: int):
    """:func:`evaluate_model` with the pixels shared out over the ranks and the predictions all-gathered."""
    rows, cols, y = bundle.coords(which)
    share = D.shard(len(rows))
    ext = bundle.extractor(getattr(model, "input_kind", "float"))
    pred = np.zeros(0, np.int64)
    if share.stop > share.start:
        pred = predict_logits(model, ext, rows[share], cols[share], batch_size).argmax(1).numpy()
    pred = np.concatenate(D.all_gather_object(pred))
    return classification_report(y, pred, bundle.scene.num_classes)


def val_stats(model: nn.Module, extractor, rows, cols, labels, batch_size: int) -> tuple[int, float]:
    """How many of the windows at (rows, cols) the model classifies as ``labels``, and the sum of
    their cross-entropies (one pass)."""
    if len(rows) == 0:
        return 0, 0.0
    logits = predict_logits(model, extractor, rows, cols, batch_size)  # (N, K)
    y = torch.as_tensor(labels, dtype=torch.long)  # (N,)
    ce = F.cross_entropy(logits, y, reduction="sum")
    return int((logits.argmax(1) == y).sum()), float(ce)
