"""Full-scene classification maps, streamed in row tiles so that memory stays bounded.

The scene is read ``tile`` rows at a time with ``P // 2`` halo rows above and below (reflected at the
scene's top and bottom edge, as ``np.pad(mode="reflect")`` does), preprocessed (bytes for students,
standardized floats for teachers), padded by reflection left and right, and classified; the next
tile starts from the file again. Preprocessing is per pixel, so a tile's windows are exactly the
windows of :class:`blmkd.data.patches.PatchExtractor` on the once-padded scene. A memory-mapped cube
has its pages dropped from the process after every tile (``madvise(MADV_DONTNEED)``; the page cache
keeps them), so the resident set does not grow with the scene either.

How a tile's windows are classified is the classifier's business (:mod:`blmkd.inference.classifier`).
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from blmkd.data.patches import PatchExtractor, check_patch_size
from blmkd.data.preprocess import Preprocessing
from blmkd.errors import BlmkdError, DataError, ModelError

# Reading the scene in tiles


def release_pages(cube) -> bool:
    """Drop the pages of a memory-mapped cube from this process (they stay in the page cache).

    Returns False for an in-memory array or a copy-on-write map (whose pages may hold changes).
    """
    a = cube
    while a is not None:
        mm = a if isinstance(a, mmap.mmap) else getattr(a, "_mmap", None)
        if isinstance(mm, mmap.mmap):
            if getattr(a, "mode", "r") == "c" or not hasattr(mm, "madvise"):
                return False
            mm.madvise(mmap.MADV_DONTNEED)
            return True
        a = getattr(a, "base", None)
    return False


def reflect_index(start: int, stop: int, size: int) -> np.ndarray:
    """Indices ``start..stop-1`` into an axis of ``size``, reflected at both ends without repeating
    the edge (``np.pad(mode="reflect")``); valid for overhangs of at most ``size - 1``."""
    i = np.abs(np.arange(start, stop))
    return np.where(i > size - 1, 2 * (size - 1) - i, i)


def tile_input(cube, prep: Preprocessing, input_kind: str, r0: int, r1: int, radius: int) -> np.ndarray:
    """Preprocessed rows ``r0 - radius .. r1 + radius`` of ``cube``, reflect-padded by ``radius`` columns.

    Returns:
        ``(r1 - r0 + 2r, W + 2r, bands)`` uint8 bytes (``input_kind == "uint8"``) or float32.
    """
    h = cube.shape[0]
    idx = reflect_index(r0 - radius, r1 + radius, h)
    s0, s1 = int(idx.min()), int(idx.max()) + 1
    block = cube[s0:s1]  # a view: a memmap is read block by block by the preprocessing
    y = prep.to_bytes(block) if input_kind == "uint8" else prep.standardize(block)
    if not np.array_equal(idx, np.arange(s0, s1)):
        y = y[idx - s0]  # halo rows reflected at the top or bottom edge
    return np.pad(y, ((0, 0), (radius, radius), (0, 0)), mode="reflect")


@dataclass
class SceneMap:
    """A classified scene.

    Attributes:
        pred: ``(H, W)`` int16 class indices, -1 where no pixel was classified (masked).
        pixels: pixels classified.
        seconds: wall time of the whole loop (reading, preprocessing, inference).
        mode, tile, batch: how it was made.
        logits: ``(H, W, K)`` float32 where asked for (tests), else None.
    """

    pred: np.ndarray
    pixels: int
    seconds: float
    mode: str
    tile: int
    batch: int
    logits: np.ndarray | None = None

    @property
    def px_per_s(self) -> float:
        return self.pixels / self.seconds if self.seconds > 0 else float("inf")


def predict_scene(
    clf,
    cube,
    *,
    tile: int = 256,
    batch: int | None = None,
    mask: np.ndarray | None = None,
    return_logits: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SceneMap:
    """Classify every pixel of ``cube`` (``(H, W, bands)``, a np.memmap is fine) in row tiles.

    Args:
        clf: the :class:`~blmkd.inference.classifier.SceneClassifier` (:func:`~blmkd.inference.classifier.open_classifier`).
        cube: the raw scene, in the file's values; it is preprocessed here with the artifact's own
            statistics.
        tile: rows per tile (memory grows linearly with it; the result does not depend on it).
        batch: windows per model call (default: what suits the runtime, 64 for ONNX Runtime and
            256 for PyTorch).
        mask: ``(H, W)`` bool, classify only these pixels (the rest is -1).
        return_logits: also return the ``(H, W, K)`` logits (small scenes only).
        progress: ``progress(rows_done, rows_total)`` after each tile.
    """
    if cube.ndim != 3:
        raise DataError(f"scene cube must be (H, W, bands), got shape {tuple(cube.shape)}")
    h, w, bands = (int(s) for s in cube.shape)
    if bands != clf.prep.bands:
        raise ModelError(f"{clf.name} takes {clf.prep.bands} bands but the scene has {bands}")
    batch = batch or clf.default_batch
    if tile < 1 or batch < 1:
        raise BlmkdError("--tile and --batch must be at least 1")
    if mask is not None and mask.shape != (h, w):
        raise DataError(f"mask {mask.shape} does not match the scene ({h}, {w})")
    p = check_patch_size(clf.patch_size, h, w)
    r = p // 2
    pred = np.full((h, w), -1, dtype=np.int16)
    logits = np.zeros((h, w, clf.num_classes), np.float32) if return_logits else None
    release_pages(cube)  # whatever loading the scene touched
    n = 0
    t0 = time.perf_counter()
    for r0 in range(0, h, tile):
        r1 = min(h, r0 + tile)
        sel = np.ones((r1 - r0, w), bool) if mask is None else np.asarray(mask[r0:r1], bool)
        rows, cols = np.nonzero(sel)
        if len(rows):
            x = tile_input(cube, clf.prep, clf.input_kind, r0, r1, r)
            release_pages(cube)  # the raw rows are no longer needed once preprocessed
            lg = clf.classify(x, rows, cols, batch)
            del x
            pred[r0 + rows, cols] = lg.argmax(1)
            if logits is not None:
                logits[r0 + rows, cols] = lg
            n += len(rows)
        release_pages(cube)
        if progress:
            progress(r1, h)
    return SceneMap(pred, n, time.perf_counter() - t0, clf.mode, tile, batch, logits)


def predict_patches_ref(clf, cube, batch: int = 1024) -> np.ndarray:
    """Slow, obvious reference: every pixel's window from the once-padded scene, run per patch.

    Returns the ``(H, W, K)`` logits (small scenes only; the whole preprocessed cube is in memory).
    """
    x = clf.prep.to_bytes(cube) if clf.input_kind == "uint8" else clf.prep.standardize(cube)
    ex = PatchExtractor(x, clf.patch_size)
    h, w = cube.shape[:2]
    rows, cols = np.divmod(np.arange(h * w), w)
    out = [
        clf.runner.run(ex.gather(rows[i : i + batch], cols[i : i + batch]).numpy())
        for i in range(0, h * w, batch)
    ]
    return np.concatenate(out).reshape(h, w, -1)
