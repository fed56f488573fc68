"""The in-memory description of one hyperspectral scene."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from blmkd.errors import DataError

UNLABELLED = -1  # value of `Scene.labels` where the ground truth is 0 (no label)


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
    import dataclasses

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
