"""How every artifact is judged before it is written: the test patches, the comparison with PyTorch.

Like optimum-cli, an export is checked against PyTorch by default: max |logit difference|, argmax
agreement and OA on the checkpoint's test patches (:class:`EvalSet`), with a criterion per
precision (:func:`criterion`: logits for FP32/FP16, decisions for INT8).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from blmkd.errors import ExportError


@dataclass
class Check:
    """How an artifact compares with the PyTorch checkpoint on the evaluation patches."""

    pixels: int  # test patches compared
    max_abs_diff: float  # max |logit − PyTorch logit|
    agreement: float  # fraction of equal argmax decisions
    oa: float  # overall accuracy of the artifact
    oa_reference: float  # overall accuracy of PyTorch on the same patches
    criterion: str  # what had to hold
    passed: bool

    @property
    def oa_drop_pp(self) -> float:
        return 100.0 * (self.oa_reference - self.oa)

    def line(self) -> str:
        return (
            f"max|Δlogit| {self.max_abs_diff:.2e}, argmax agreement {100 * self.agreement:.2f}%, "
            f"OA {100 * self.oa:.2f}% (PyTorch {100 * self.oa_reference:.2f}%) on {self.pixels} test patches "
            f"[{self.criterion}: {'ok' if self.passed else 'FAILED'}]"
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Artifact:
    """One file written by :func:`blmkd.export.exporter.export`."""

    format: str  # row of the format table: onnx, onnx-fp16, onnx-int8, onnx-int8-byte, c, trt
    kind: str  # "onnx", "c", "engine", "script"; "runner" and "library" beside a C export
    path: Path
    precision: str | None
    size_bytes: int
    check: Check | None = None
    note: str = ""


class EvalSet:
    """The test patches every artifact is judged on (all of them, or a seeded sample)."""

    def __init__(
        self, bundle, input_kind: str, size: int | None = None, seed: int = 0, batch_size: int = 1024
    ):
        rows, cols, labels = bundle.coords("test")
        if len(rows) == 0:
            raise ExportError("the checkpoint's split has no test pixels to check the export on")
        if size is not None and size < len(rows):
            pick = np.sort(np.random.default_rng(seed).choice(len(rows), size, replace=False))
            rows, cols, labels = rows[pick], cols[pick], labels[pick]
        self.rows, self.cols, self.labels = rows, cols, labels
        self.extractor = bundle.extractor(input_kind)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.rows)

    def batches(self):
        for i in range(0, len(self.rows), self.batch_size):
            yield self.extractor.gather(
                self.rows[i : i + self.batch_size], self.cols[i : i + self.batch_size]
            ).numpy()

    def logits(self, run: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        return np.concatenate([run(x) for x in self.batches()]).astype(np.float32, copy=False)


def compare(logits: np.ndarray, ref: np.ndarray, labels: np.ndarray, criterion: dict[str, float]) -> Check:
    """Judge ``logits`` against the PyTorch ``ref`` logits.

    ``criterion`` holds ``atol`` (max |Δlogit|), and/or ``min_agreement`` and ``max_oa_drop`` (pp).
    """
    if logits.shape != ref.shape:
        raise ExportError(f"artifact returned logits of shape {logits.shape}, PyTorch {ref.shape}")
    finite = bool(np.isfinite(logits).all())
    diff = float(np.abs(logits - ref).max()) if finite else float("inf")
    pred = logits.argmax(1)
    agreement = float((pred == ref.argmax(1)).mean())
    oa, oa_ref = float((pred == labels).mean()), float((ref.argmax(1) == labels).mean())
    parts, ok = [], finite
    if "atol" in criterion:
        parts.append(f"max|Δlogit| <= {criterion['atol']:g}")
        ok &= diff <= criterion["atol"]
    if "min_agreement" in criterion:
        parts.append(f"agreement >= {100 * criterion['min_agreement']:g}%")
        ok &= agreement >= criterion["min_agreement"]
    if "max_oa_drop" in criterion:
        parts.append(f"OA drop <= {criterion['max_oa_drop']:g} pp")
        ok &= 100.0 * (oa_ref - oa) <= criterion["max_oa_drop"] + 1e-9
    return Check(len(ref), diff, agreement, oa, oa_ref, ", ".join(parts), bool(ok))


def criterion(opts: dict, precision: str, atol: float | None = None) -> dict:
    """What an artifact of this precision is checked by: INT8 by its decisions, others by logits."""
    if precision == "int8":
        return {"min_agreement": opts["min_agreement"], "max_oa_drop": opts["max_oa_drop"]}
    return {"atol": atol if atol is not None else opts["atol"]}


def human_size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"
