"""The in-memory description of one hyperspectral scene, and how arrays become one (:func:`scene_from_arrays`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from blmkd.errors import DataError

UNLABELLED = -1  # value of `Scene.labels` where the ground truth is 0 (no label)
_FINITE_CHECK_ELEMENTS = 1 << 24  # elements per block when scanning a cube for NaN/Inf


@dataclass
class Scene:
    """A hyperspectral cube and its ground truth.

    Attributes:
        name: registry name or file stem.
        cube: (H, W, bands) array in the file's own dtype; may be a np.memmap (never copied
            to float here, so scenes larger than RAM stay on disk).
        labels: (H, W) int32, 0..K-1 for the K labelled classes, ``UNLABELLED`` (-1) elsewhere.
        class_ids: original ground-truth id of class k (e.g. [1, 10, 11, 12]).
        class_names: a name per class (``"class <id>"`` where the source gives none).
        source: where it came from (a path, or ``embedded:indian_pines``).
        wavelengths: band centres in nm where known.
        extra: free-form facts from the source (licence, citation, keys used).
    """

    name: str
    cube: np.ndarray
    labels: np.ndarray
    class_ids: list[int]
    class_names: list[str]
    source: str = ""
    wavelengths: list[float] | None = None
    extra: dict = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.cube.shape[0])

    @property
    def width(self) -> int:
        return int(self.cube.shape[1])

    @property
    def bands(self) -> int:
        return int(self.cube.shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    def class_counts(self) -> np.ndarray:
        """Labelled pixels per class, shape (K,)."""
        lab = self.labels[self.labels >= 0]
        return np.bincount(lab, minlength=self.num_classes)

    def classes(self) -> list[dict]:
        """[{index, id, name, count}] — the form every output records."""
        counts = self.class_counts()
        return [
            {"index": k, "id": int(i), "name": n, "count": int(c)}
            for k, (i, n, c) in enumerate(zip(self.class_ids, self.class_names, counts))
        ]

    def facts(self) -> dict:
        """JSON-ready facts that checkpoints and exports carry."""
        return {
            "name": self.name,
            "source": self.source,
            "shape": [self.height, self.width, self.bands],
            "dtype": str(self.cube.dtype),
            "bands": self.bands,
            "num_classes": self.num_classes,
            "classes": self.classes(),
        }


def read_class_names(path: str | Path) -> list[str] | dict[int, str]:
    """Class names from a text file: one name per line, in the order of the ground-truth ids, or
    ``ID: NAME`` per line. Blank lines and lines starting with ``#`` are skipped.

    Raises:
        DataError: the file is missing, unreadable or names no class.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"--class-names {p}: cannot read it ({getattr(exc, 'strerror', None) or exc})"
        ) from None
    lines = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise DataError(f"--class-names {p}: the file holds no class names")
    pairs = [ln.split(":", 1) for ln in lines]
    if all(len(kv) == 2 and kv[0].strip().isdigit() for kv in pairs):
        return {int(k): v.strip() for k, v in pairs}
    return lines


def with_class_names(scene: Scene, names: list[str] | dict, source: str = "--class-names") -> Scene:
    """A copy of ``scene`` with its classes named by ``names`` (a list in id order, or id -> name)."""
    ids = list(scene.class_ids)
    if isinstance(names, dict):
        names = {int(k): str(v) for k, v in names.items()}  # JSON turns the ids into strings
        unknown = sorted(set(names) - set(ids))
        missing = [i for i in ids if i not in names]
        if unknown or missing:
            raise DataError(
                f"{source}: class names for ids {unknown or missing} do not fit the ground truth's ids {ids}"
            )
        named = [names[i] for i in ids]
    else:
        if len(names) != len(ids):
            raise DataError(f"{source}: {len(names)} class names for {len(ids)} classes (ids {ids})")
        named = [str(n) for n in names]
    return dataclasses.replace(scene, class_names=named, extra={**scene.extra, "class_names_from": source})


# ------------------------------------------------------------------------------------------
# Arrays to a Scene.


def labels_from_ground_truth(gt: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Map a ground truth with arbitrary non-negative ids to contiguous labels.

    Args:
        gt: (H, W) integer-valued array (float arrays holding whole numbers are accepted);
            0 = unlabelled.

    Returns:
        (labels, class_ids): labels is (H, W) int32 with 0..K-1 (class k is the k-th smallest
        id) and ``UNLABELLED`` where gt is 0; class_ids are the K original ids, ascending.

    Raises:
        DataError: non-integer values, NaN, or negative ids.
    """
    gt = np.asarray(gt)
    if gt.dtype.kind == "b":
        gt = gt.astype(np.uint8)
    elif gt.dtype.kind == "f":
        bad = ~np.isfinite(gt) | (gt != np.round(gt))
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise DataError(
                f"ground truth is not integer-valued: {int(bad.sum())} values like {gt[r, c]} at ({r}, {c})"
            )
        gt = gt.astype(np.int64)
    elif gt.dtype.kind not in "iu":
        raise DataError(f"ground truth has unsupported dtype {gt.dtype}; expected integer class ids")
    if gt.dtype.kind == "i" and gt.size and gt.min() < 0:
        raise DataError(
            f"ground truth has negative ids (min {int(gt.min())}); ids must be >= 0 with 0 = unlabelled"
        )
    mask = gt > 0
    ids = np.unique(gt[mask])
    labels = np.full(gt.shape, UNLABELLED, dtype=np.int32)
    labels[mask] = np.searchsorted(ids, gt[mask]).astype(np.int32)
    return labels, [int(i) for i in ids]


def count_nonfinite(cube: np.ndarray) -> int:
    """NaN and ±Inf values in a cube, scanned in row blocks so a memory-mapped cube stays on disk."""
    if cube.dtype.kind not in "fc":
        return 0
    rows = max(1, _FINITE_CHECK_ELEMENTS // max(1, int(np.prod(cube.shape[1:]))))
    return sum(int(np.count_nonzero(~np.isfinite(cube[r : r + rows]))) for r in range(0, cube.shape[0], rows))


def _fill_nonfinite(cube: np.ndarray, value: float) -> np.ndarray:
    out = np.array(cube)  # in memory, same dtype
    rows = max(1, _FINITE_CHECK_ELEMENTS // max(1, int(np.prod(out.shape[1:]))))
    for r in range(0, out.shape[0], rows):
        block = out[r : r + rows]
        block[~np.isfinite(block)] = value
    return out


def scene_from_arrays(
    name: str,
    cube: np.ndarray,
    gt: np.ndarray,
    *,
    class_names: Mapping[int, str] | Callable[[int], str] | None = None,
    source: str = "",
    wavelengths: list[float] | None = None,
    extra: dict | None = None,
    fill: float | None = None,
    check_finite: bool = True,
) -> Scene:
    """Build a validated :class:`Scene` from an (H, W, bands) cube and an (H, W) ground truth.

    Args:
        name: scene name.
        cube: (H, W, bands) array, any numeric dtype; kept as is (no copy) unless ``fill`` is used.
        gt: (H, W) ground-truth ids, 0 = unlabelled.
        class_names: id -> name (a mapping or a function); ``"class <id>"`` where missing.
        source: where the data came from.
        wavelengths: band centres in nm (must have one per band).
        extra: facts recorded in ``scene.extra``.
        fill: replace NaN/Inf in a float cube by this value (makes an in-memory copy).
        check_finite: scan a float cube for NaN/Inf (skip only for cubes known to be finite).

    Raises:
        DataError: shape mismatch, bad ground truth, NaN/Inf without ``fill``, no labelled pixel.
    """
    extra = dict(extra or {})
    cube_shape, gt_shape = tuple(cube.shape), tuple(np.shape(gt))
    if cube.ndim != 3:
        raise DataError(f"cube must be 3-D (H, W, bands), got shape {cube_shape}")
    if cube.dtype.kind not in "biuf":
        raise DataError(f"cube has unsupported dtype {cube.dtype}")
    if gt_shape != cube_shape[:2]:
        raise DataError(f"cube shape {cube_shape} and ground-truth shape {gt_shape} do not match (H, W)")
    labels, class_ids = labels_from_ground_truth(gt)
    if not class_ids:
        raise DataError("ground truth has no labelled pixel (every value is 0)")
    if wavelengths is not None and len(wavelengths) != cube_shape[2]:
        raise DataError(f"{len(wavelengths)} wavelengths for a cube with {cube_shape[2]} bands")
    if check_finite:
        bad = count_nonfinite(cube)
        if bad and fill is None:
            raise DataError(
                f"cube has {bad} NaN/Inf values; pass --fill VALUE (fill=VALUE in Python) to replace them"
            )
        if bad:
            cube = _fill_nonfinite(cube, fill)
            extra["filled"] = {"count": bad, "value": float(fill)}
    if callable(class_names):
        names = [class_names(i) for i in class_ids]
    else:
        lookup = class_names or {}
        names = [lookup.get(i, f"class {i}") for i in class_ids]
    return Scene(
        name=name,
        cube=cube,
        labels=labels,
        class_ids=class_ids,
        class_names=names,
        source=source,
        wavelengths=[float(w) for w in wavelengths] if wavelengths is not None else None,
        extra=extra,
    )
