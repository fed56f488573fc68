"""Classification metrics for HSI: confusion matrix, OA, AA, Cohen's κ, and mean ± std over seeds.

All in numpy (no scikit-learn). Labels are class indices 0..K-1, as in :class:`blmkd.data.Scene`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts; row = true class, column = predicted class.

    Args:
        y_true: class indices, any shape (numpy array, list or CPU tensor).
        y_pred: predicted class indices, same number of elements.
        num_classes: K; every label must lie in 0..K-1.
    """
    t = np.asarray(y_true).reshape(-1).astype(np.int64)
    p = np.asarray(y_pred).reshape(-1).astype(np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} has labels outside 0..{num_classes - 1}: [{a.min()}, {a.max()}]")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


@dataclass
class ClassificationReport:
    """OA, AA and κ of one evaluation, with the per-class accuracies and the confusion matrix.

    Attributes:
        oa: overall accuracy, correct / total.
        aa: average accuracy, the mean of the per-class accuracies of classes present in y_true.
        kappa: Cohen's κ = (p_o − p_e) / (1 − p_e), p_e = Σ_k (row_k · col_k) / n².
        per_class: (K,) recall of each class; NaN for classes absent from y_true.
        confusion: (K, K) int64, rows = true class.
    """

    oa: float
    aa: float
    kappa: float
    per_class: np.ndarray
    confusion: np.ndarray

    def to_dict(self, class_ids=None, class_names=None) -> dict:
        """JSON-ready form. Classes absent from y_true get ``accuracy: None`` (and support 0)."""
        k = len(self.per_class)
        ids = list(class_ids) if class_ids is not None else list(range(k))
        names = list(class_names) if class_names is not None else [f"class {i}" for i in ids]
        support = self.confusion.sum(axis=1)
        per_class = [
            {
                "index": i,
                "id": int(ids[i]),
                "name": str(names[i]),
                "accuracy": None if math.isnan(acc) else float(acc),
                "support": int(support[i]),
            }
            for i, acc in enumerate(self.per_class.tolist())
        ]
        return {
            "oa": float(self.oa),
            "aa": float(self.aa),
            "kappa": float(self.kappa),
            "per_class": per_class,
            "confusion": self.confusion.tolist(),
        }


def classification_report(y_true, y_pred, num_classes: int) -> ClassificationReport:
    """OA, AA and κ of predictions against true class indices.

    AA averages only the classes present in ``y_true``: a class with no test pixels has no
    accuracy to average (its ``per_class`` entry is NaN).
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    n = int(cm.sum())
    if n == 0:
        raise ValueError("classification_report needs at least one label")
    diag = np.diag(cm).astype(np.float64)
    rows = cm.sum(axis=1).astype(np.float64)
    cols = cm.sum(axis=0).astype(np.float64)
    present = rows > 0
    per_class = np.full(num_classes, np.nan)
    per_class[present] = diag[present] / rows[present]
    oa = float(diag.sum() / n)
    aa = float(per_class[present].mean())
    pe = float((rows * cols).sum() / (n * n))
    # p_e == 1 only when truth and prediction are one and the same class everywhere: perfect agreement.
    kappa = 1.0 if pe >= 1.0 else (oa - pe) / (1.0 - pe)
    return ClassificationReport(oa=oa, aa=aa, kappa=float(kappa), per_class=per_class, confusion=cm)


def mean_std(values) -> tuple[float, float]:
    """Mean and *sample* standard deviation (ddof=1) of repeated runs; std is 0.0 for a single run.

    The sample std is the usual choice for "mean ± std over N seeds" in HSI papers, and it does not
    understate the spread of the few (3–10) runs one usually has.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("mean_std needs at least one value")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def format_mean_std(values, scale: float = 100, digits: int = 2) -> str:
    """``"98.61 ± 0.12"``: mean ± sample std of ``values`` times ``scale`` (100 for percent)."""
    m, s = mean_std(values)
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"
