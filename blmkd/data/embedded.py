"""The real Indian Pines scene, embedded: read from the tensorly wheel, no download.

tensorly ships ``Indian_pines_corrected`` (145 x 145 pixels, 200 AVIRIS bands after removing the
water-absorption bands) with its ground truth, under CC BY 3.0. It is the default scene of the
tests and examples. The copy is checked on load against the published class counts, so a changed
or damaged file is an error rather than silently different results.
"""

from __future__ import annotations

import functools

import numpy as np

from blmkd.data.registry import INDIAN_PINES
from blmkd.data.scene import Scene, scene_from_arrays
from blmkd.errors import DataError

SHAPE = (145, 145, 200)
# Labelled pixels per class id 1..16 in the published ground truth (10,249 in all).
CLASS_COUNTS = (46, 1428, 830, 237, 483, 730, 28, 478, 20, 972, 2455, 593, 205, 1265, 386, 93)
LICENCE = "CC BY 3.0 (https://creativecommons.org/licenses/by/3.0/legalcode)"
DOI = "10.4231/R7RX991C"


def verify_indian_pines(scene: Scene) -> None:
    """Raise DataError unless ``scene`` has Indian Pines' shape and exact per-class counts."""
    if (scene.height, scene.width, scene.bands) != SHAPE:
        raise DataError(f"embedded Indian Pines has shape {tuple(scene.cube.shape)}, expected {SHAPE}")
    if scene.class_ids != list(range(1, 17)):
        raise DataError(f"embedded Indian Pines has class ids {scene.class_ids}, expected 1..16")
    counts = tuple(int(c) for c in scene.class_counts())
    if counts != CLASS_COUNTS:
        raise DataError(
            f"embedded Indian Pines has class counts {list(counts)}, expected {list(CLASS_COUNTS)}"
        )


@functools.lru_cache(maxsize=1)
def load_indian_pines() -> Scene:
    """The embedded Indian Pines scene, loaded once per process.

    The cube is float32 (the file's values are whole numbers, exact in float32), (145, 145, 200).
    Every call returns the same object, so its arrays are made read-only: copy them before
    changing anything, and do not mutate ``extra`` or the lists.

    Raises:
        DataError: tensorly or its data file is missing, or the data fails the checks.
    """
    try:
        from tensorly.datasets import load_indian_pines as _tensorly_indian_pines

        bunch = _tensorly_indian_pines()
    except (ImportError, OSError) as e:
        raise DataError(
            f"the embedded Indian Pines comes from the tensorly package, which failed: {e}"
        ) from e

    cube = np.asarray(bunch["tensor"], dtype=np.float32)  # one conversion from float64, 16.8 MB
    gt = np.asarray(bunch["ticks"][0])
    wavelengths = [float(w) for w in bunch["ticks"][1]]
    scene = scene_from_arrays(
        INDIAN_PINES.name,
        cube,
        gt,
        class_names=INDIAN_PINES.class_name,
        source="embedded:indian_pines",
        wavelengths=wavelengths,
        extra={
            "dataset": INDIAN_PINES.title,
            "licence": LICENCE,
            "citation": INDIAN_PINES.citation,
            "doi": DOI,
            "sensor": INDIAN_PINES.sensor,
            "origin": "tensorly.datasets.load_indian_pines (Indian_pines_corrected, 200 bands)",
        },
    )
    verify_indian_pines(scene)
    scene.cube.flags.writeable = False
    scene.labels.flags.writeable = False
    return scene
