"""Seeded train/val/test splits of a scene's labelled pixels, and their spatial leakage.

Strategies:

- ``ratio``: stratified random; each class gives ``round(train · n)`` training pixels (halves
  round up).
- ``per-class``: stratified random; each class gives exactly ``train`` training pixels (e.g. 30).
- ``fixed``: training and test pixels read from two maps with the ground truth's id convention
  (0 = not in the set), e.g. the official Houston 2013 split. ``val`` is carved out of the
  *training* map, so that the official test set stays whole.
- ``disjoint``: spatially disjoint. The scene is tiled into ``block`` × ``block`` squares (grid
  origin shifted at random by the seed) and blocks go to training, chosen greedily to bring every
  class close to its target (a fraction, or a count per class when ``train`` ≥ 1). The rarest
  classes are served first, by a block or a quarter of one (finer parts only where a class's only
  field would otherwise leave it no test pixel); whole blocks follow (:mod:`blmkd.data.disjoint`). Test pixels within
  ``buffer`` pixels (Chebyshev distance, default the patch radius P // 2) of a training pixel are
  dropped, so no test window sees a training pixel: the leakage is exactly 0. Blocks make the
  per-class fractions approximate (on Indian Pines at 10 %, classes of 400+ pixels land within
  about ±40 % of their target with the default 10-pixel blocks).

Elsewhere ``val`` is a fraction of each class's non-training pixels (rounded the same way,
0 allowed) and the rest is test; every class keeps at least one test pixel. A class too small for
the request (no training pixel, or no test pixel left) is a DataError naming it, unless
``allow_small``: a class that would get no training pixel then gets one, and a class that would
keep no test pixel trains on half of its pixels. ``buffer`` also applies to the random strategies
when given (it then removes test pixels next to training pixels).

*Leakage* is the fraction of test pixels whose P × P window contains a training pixel: with random
splits most test windows overlap training pixels, which inflates accuracies (Liang et al. 2017,
IEEE TGRS 55(2); Nalepa et al. 2019, IEEE GRSL 16(8)).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from blmkd.data.disjoint import disjoint_blocks
from blmkd.data.masks import dilate
from blmkd.data.patches import check_patch_size
from blmkd.data.readers import read_label_map
from blmkd.data.scene import Scene
from blmkd.errors import DataError

STRATEGIES = ("ratio", "per-class", "disjoint", "fixed")
_ARRAY = "<array>"  # spec value of a fixed-split map given as an array (it cannot be rebuilt from the spec)


@dataclass
class Split:
    """Train/val/test masks of one scene.

    Attributes:
        train, val, test: (H, W) bool masks; disjoint, and only over labelled pixels.
        spec: JSON-safe arguments of :func:`make_split` that rebuild it (:func:`split_from_spec`),
            plus ``scene`` (its name) and ``digest`` (a hash of the masks, checked on rebuild).
        leakage: fraction of test pixels whose P × P window contains a training pixel.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    spec: dict
    leakage: float

    def counts(self, scene: Scene) -> np.ndarray:
        """(K, 3) int64 pixels per class in train, val and test."""
        k = scene.num_classes
        return np.stack(
            [np.bincount(scene.labels[m], minlength=k)[:k] for m in (self.train, self.val, self.test)], axis=1
        )

    def summary(self, scene: Scene) -> list[dict]:
        """[{index, id, name, train, val, test}] per class."""
        counts = self.counts(scene)
        return [
            {"index": k, "id": int(i), "name": n, "train": int(c[0]), "val": int(c[1]), "test": int(c[2])}
            for k, (i, n, c) in enumerate(zip(scene.class_ids, scene.class_names, counts))
        ]


def compute_leakage(train_mask, test_mask, patch_size: int) -> float:
    """Fraction of test pixels whose P × P window (centred on them) contains a training pixel.

    A P × P max-filter of the training mask marks every pixel whose window holds a training
    pixel. Reflect-padded windows at the scene border only repeat pixels that are already within
    the window's reach, so the count is exact for them too. 0.0 when there is no test pixel.
    """
    train = np.asarray(train_mask, dtype=bool)
    test = np.asarray(test_mask, dtype=bool)
    n_test = int(test.sum())
    if n_test == 0:
        return 0.0
    near = dilate(train, patch_size // 2)
    return float(np.count_nonzero(near & test) / n_test)


def make_split(
    scene: Scene,
    strategy: str = "ratio",
    train: float = 0.1,
    val: float = 0.05,
    seed: int = 0,
    patch_size: int = 7,
    *,
    buffer: int | None = None,
    allow_small: bool = False,
    train_map=None,
    test_map=None,
    block: int | None = None,
) -> Split:
    """Split the labelled pixels of ``scene`` into train, val and test (see the module docstring).

    Args:
        scene: the scene; only ``labels`` (and class ids/names for messages and maps) are used.
        strategy: ``ratio`` | ``per-class`` | ``disjoint`` | ``fixed``.
        train: a fraction in (0, 1) per class (ratio, disjoint) or a count per class (per-class,
            disjoint when ≥ 1); ignored by ``fixed``.
        val: fraction of each class's non-training pixels kept for validation, in [0, 1).
        seed: seed of ``np.random.default_rng``; the same arguments give the same split.
        patch_size: odd window size P, used for the leakage and the default buffer.
        buffer: gap in pixels between training and test pixels; default P // 2 for ``disjoint``
            and 0 (none) otherwise.
        allow_small: give classes too small for the request one training pixel (or half their
            pixels) instead of raising.
        train_map, test_map: ``fixed`` only: paths (any format the readers know) or (H, W)
            arrays of ground-truth ids, 0 = not in the set. Without ``test_map`` every labelled
            pixel outside the training map is a test candidate.
        block: ``disjoint`` only: block side in pixels (default max(P + 3, 10): larger than a window).

    Raises:
        DataError: bad arguments, unreadable maps, or a class too small for the request.
    """
    if strategy not in STRATEGIES:
        raise DataError(f"unknown split strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    labels = np.asarray(scene.labels)
    h, w = labels.shape
    patch_size = check_patch_size(patch_size, h, w)
    if not (isinstance(val, int | float) and 0.0 <= float(val) < 1.0):
        raise DataError(f"val must be a fraction in [0, 1), got {val!r}")
    val = float(val)
    seed = int(seed)
    if buffer is None:
        buffer = patch_size // 2 if strategy == "disjoint" else 0
    if int(buffer) != buffer or buffer < 0:
        raise DataError(f"buffer must be a non-negative integer, got {buffer!r}")
    buffer = int(buffer)
    rng = np.random.default_rng(seed)
    k = scene.num_classes
    n = np.bincount(labels[labels >= 0], minlength=k)[:k]
    names = [_describe(scene, c) for c in range(k)]
    spec_train: float | int | None = None
    spec_block = None
    map_specs = (None, None)

    if strategy in ("ratio", "per-class"):
        spec_train = _check_amount(strategy, train)
        want = [_wanted(spec_train, n[c]) for c in range(k)]
        counts = [_train_count(n[c], want[c], allow_small, names[c], strategy, spec_train) for c in range(k)]
        train_mask = np.zeros_like(labels, dtype=bool)
        flat = train_mask.reshape(-1)
        for c, idx in enumerate(_class_indices(labels, k)):
            flat[rng.permutation(idx)[: counts[c]]] = True
        near = dilate(train_mask, buffer)
        rest = (labels >= 0) & ~near
        _check_rest(rest, labels, k, names, buffer)
        val_mask, test_mask = _carve(rest, labels, k, val, rng)
    elif strategy == "disjoint":
        spec_train = _check_amount(strategy, train)
        spec_block = int(block) if block is not None else max(patch_size + 3, 10)
        if spec_block < 1:
            raise DataError(f"block must be a positive integer, got {block!r}")
        targets = np.array(
            [
                _train_count(n[c], _wanted(spec_train, n[c]), allow_small, names[c], strategy, spec_train)
                for c in range(k)
            ],
            dtype=np.float64,
        )
        train_mask, near = disjoint_blocks(labels, k, targets, spec_block, buffer, rng, names)
        rest = (labels >= 0) & ~near
        _check_rest(rest, labels, k, names, buffer)
        val_mask, test_mask = _carve(rest, labels, k, val, rng)
    else:
        if train_map is None:
            raise DataError("the fixed split needs a training map (--train-map)")
        map_specs = (_map_spec(train_map), _map_spec(test_map))
        train_mask = _read_map(train_map, scene, "training map")
        test_cand = (
            _read_map(test_map, scene, "test map") if test_map is not None else (labels >= 0) & ~train_mask
        )
        if (overlap := int(np.count_nonzero(train_mask & test_cand))) > 0:
            raise DataError(f"the training and test maps share {overlap} pixels")
        for c, cnt in enumerate(np.bincount(labels[train_mask], minlength=k)[:k]):
            if cnt == 0 and not allow_small:
                raise DataError(
                    f"{names[c]} ({n[c]} labelled pixels) has no pixel in the training map; "
                    "pass --allow-small to accept a class the model cannot learn"
                )
        test_cand &= ~dilate(train_mask, buffer)
        _check_rest(test_cand, labels, k, names, buffer)
        # val comes out of the training map: the official test set stays whole.
        val_mask, train_mask = _carve(train_mask, labels, k, val, rng, keep_one=True)
        test_mask = test_cand

    spec = {
        "strategy": strategy,
        "train": spec_train,
        "val": val,
        "seed": seed,
        "patch_size": patch_size,
        "buffer": buffer,
        "allow_small": bool(allow_small),
        "block": spec_block,
        "train_map": map_specs[0],
        "test_map": map_specs[1],
        "scene": scene.name,
    }
    spec["digest"] = _digest(train_mask, val_mask, test_mask)
    return Split(train_mask, val_mask, test_mask, spec, compute_leakage(train_mask, test_mask, patch_size))


def split_from_spec(scene: Scene, spec: dict) -> Split:
    """Rebuild a split from its ``spec``; DataError if the masks differ from the recorded digest."""
    args = {
        key: spec[key]
        for key in (
            "strategy",
            "train",
            "val",
            "seed",
            "patch_size",
            "buffer",
            "allow_small",
            "block",
            "train_map",
            "test_map",
        )
        if key in spec
    }
    if _ARRAY in (args.get("train_map"), args.get("test_map")):
        raise DataError(
            "this fixed split was made from in-memory maps; rebuild it with make_split(train_map=...)"
        )
    if args.get("train") is None:
        args.pop("train", None)
    split = make_split(scene, **args)
    if spec.get("digest") and spec["digest"] != split.spec["digest"]:
        raise DataError(
            f"the split rebuilt from its spec differs from the recorded one (digest {split.spec['digest']} != "
            f"{spec['digest']}): the scene's ground truth is not the one it was made on"
        )
    return split


# ----------------------------------------------------------------------------------------------
# Counting rules


def _describe(scene: Scene, c: int) -> str:
    return f"class {scene.class_ids[c]} ({scene.class_names[c]!r})"


def _check_amount(strategy: str, train) -> float | int:
    if (
        isinstance(train, bool)
        or not isinstance(train, int | float | np.integer | np.floating)
        or not math.isfinite(train)
    ):
        raise DataError(f"train must be a number, got {train!r}")
    if strategy == "ratio":
        if not 0.0 < train < 1.0:
            raise DataError(f"the ratio split takes train as a fraction in (0, 1), got {train}")
        return float(train)
    if strategy == "per-class":
        if train < 1 or int(train) != train:
            raise DataError(f"the per-class split takes train as a whole number of pixels >= 1, got {train}")
        return int(train)
    if 0.0 < train < 1.0:  # disjoint: a fraction, or a count per class
        return float(train)
    if train >= 1 and int(train) == train:
        return int(train)
    raise DataError(f"the disjoint split takes train as a fraction in (0, 1) or a count >= 1, got {train}")


def _wanted(amount: float | int, n: int) -> int:
    """Training pixels asked of a class of n pixels: the count, or round(fraction · n), halves up."""
    if isinstance(amount, int):
        return amount
    return int(math.floor(amount * n + 0.5))


def _train_count(n: int, want: int, allow_small: bool, name: str, strategy: str, amount) -> int:
    """``want`` if it leaves ≥ 1 test pixel and is ≥ 1; else DataError, or the allow_small fallback."""
    n = int(n)
    if 1 <= want <= n - 1:
        return want
    if not allow_small or n < 2:
        fallback = "one training pixel" if want < 1 else "half of its pixels for training"
        hint = f"; pass --allow-small (allow_small=True) to give it {fallback}" if n >= 2 else ""
        raise DataError(
            f"{name} has {n} labelled pixels, too few for a {strategy} split with train={amount} "
            f"({want} training, {max(n - want, 0)} left for validation and test){hint}"
        )
    return 1 if want < 1 else max(1, n // 2)


def _class_indices(labels: np.ndarray, k: int) -> list[np.ndarray]:
    """Flat indices of each class's pixels, in row-major order."""
    flat = labels.reshape(-1)
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(k + 1))
    return [order[bounds[c] : bounds[c + 1]] for c in range(k)]


def _carve(pool: np.ndarray, labels: np.ndarray, k: int, frac: float, rng, keep_one: bool = True):
    """Split ``pool`` per class into (part, rest): round(frac · m) pixels of each class's m go to
    ``part``, at most m − 1 so that ``rest`` keeps one."""
    part = np.zeros_like(pool)
    flat = part.reshape(-1)
    for idx in _class_indices(np.where(pool, labels, -1), k):
        m = idx.size
        take = min(_wanted(frac, m), m - 1 if keep_one else m) if frac > 0 else 0
        if take > 0:
            flat[rng.permutation(idx)[:take]] = True
    return part, pool & ~part


def _check_rest(rest: np.ndarray, labels: np.ndarray, k: int, names: list[str], buffer: int) -> None:
    left = np.bincount(labels[rest], minlength=k)[:k]
    for c in np.flatnonzero(left == 0):
        why = f" beyond the {buffer}-pixel buffer" if buffer else ""
        raise DataError(
            f"{names[c]} has no test pixel left{why}; use a smaller buffer or fewer training pixels"
        )


def _digest(*masks: np.ndarray) -> str:
    h = hashlib.sha1()
    for m in masks:
        h.update(str(m.shape).encode())
        h.update(np.packbits(m, axis=None).tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Fixed-split maps


def _map_spec(m) -> str | None:
    if m is None:
        return None
    if isinstance(m, str | os.PathLike):
        return os.fspath(m)
    return _ARRAY


def _read_map(m, scene: Scene, what: str) -> np.ndarray:
    """(H, W) bool mask of the pixels a map assigns to a set, checked against the scene's labels."""
    if isinstance(m, str | os.PathLike):
        arr = read_label_map(m, scene.cube.shape)
        source = str(Path(m))
    else:
        arr = np.asarray(m)
        source = f"the {what}"
    if arr.shape != scene.labels.shape:
        raise DataError(f"{source} has shape {arr.shape}, the scene has {scene.labels.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr) & (arr == np.round(arr))):
            raise DataError(f"{source} is not integer-valued")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise DataError(f"{source} has unsupported dtype {arr.dtype}")
    mask = arr > 0
    ids = np.asarray(scene.class_ids)
    unknown = np.setdiff1d(np.unique(arr[mask]), ids)
    if unknown.size:
        raise DataError(
            f"{source} has class ids {unknown.tolist()[:10]} not in the ground truth (ids {ids.tolist()})"
        )
    labels = scene.labels
    unlabelled = int(np.count_nonzero(mask & (labels < 0)))
    if unlabelled:
        raise DataError(
            f"{unlabelled} pixels of {source} are unlabelled in the scene's ground truth; "
            "load the scene with a ground truth that covers both maps"
        )
    expected = ids[np.where(labels >= 0, labels, 0)]
    wrong = int(np.count_nonzero(mask & (arr != expected)))
    if wrong:
        raise DataError(f"{wrong} pixels of {source} disagree with the scene's ground truth")
    return mask
