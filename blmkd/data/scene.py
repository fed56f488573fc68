"""The in-memory description of one hyperspectral scene."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
