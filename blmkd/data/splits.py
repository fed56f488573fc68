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
  field would otherwise leave it no test pixel); whole blocks follow. Test pixels within
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

import numpy as np
from scipy.ndimage import maximum_filter

from blmkd.data.patches import check_patch_size
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
    near = _dilate(train, patch_size // 2)
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
        near = _dilate(train_mask, buffer)
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
        train_mask, near = _disjoint_blocks(labels, k, targets, spec_block, buffer, rng, names)
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
        test_cand &= ~_dilate(train_mask, buffer)
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


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within Chebyshev distance ``radius`` of a True pixel (the mask itself for radius 0)."""
    if radius <= 0:
        return mask.copy()
    return maximum_filter(mask, size=2 * radius + 1, mode="constant", cval=False)


def _digest(*masks: np.ndarray) -> str:
    h = hashlib.sha1()
    for m in masks:
        h.update(str(m.shape).encode())
        h.update(np.packbits(m, axis=None).tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Spatially disjoint blocks


def _disjoint_blocks(
    labels: np.ndarray, k: int, targets: np.ndarray, block: int, buffer: int, rng, names: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Choose blocks for training; return (train mask, train dilated by ``buffer``).

    The objective is Σ_k |s_k − t_k| / t_k (s_k training pixels of class k, t_k its target). First
    each class without training pixels, rarest first, gets the block or block quarter that hurts
    the objective least (eighths, sixteenths... down to single pixels where none will do). Then
    whole blocks are added, best first, while they lower the objective, and a taken region that
    no longer pays for itself is dropped (local search; every move lowers the objective, so it
    ends). A region is taken only if every class keeps at least one test pixel beyond the buffer.
    """
    h, w = labels.shape
    off_r, off_c = (int(v) for v in rng.integers(0, block, size=2))
    br = (np.arange(h) + off_r) // block  # (H,) block row of each pixel row
    bc = (np.arange(w) + off_c) // block  # (W,)
    nbc = int(bc[-1]) + 1
    nblocks = (int(br[-1]) + 1) * nbc
    bid = br[:, None] * nbc + bc[None, :]  # (H, W)
    lab = labels >= 0
    avail = np.bincount(bid[lab] * k + labels[lab], minlength=nblocks * k).reshape(
        nblocks, k
    )  # (nblocks, K) not yet train
    weight = 1.0 / np.maximum(targets, 1.0)  # (K,)

    s = np.zeros(k)  # training pixels per class so far
    excluded = np.zeros(nblocks, dtype=bool)  # used up, or infeasible (until a removal frees space)
    train = np.zeros((h, w), dtype=bool)
    near = np.zeros((h, w), dtype=bool)
    left = avail.sum(axis=0)  # test candidates per class (labelled, not train, not near)
    order = rng.permutation(nblocks)  # tie-breaking among equal scores
    taken: list[tuple] = []  # regions added: (block, r0, r1, c0, c1, pixels added, gain per class)

    def delta(gain: np.ndarray) -> np.ndarray:  # (m, K) -> (m,) change of the objective
        return (np.abs(s + gain - targets) - np.abs(s - targets)) @ weight

    def block_rect(j: int) -> tuple[int, int, int, int]:
        i, jj = divmod(int(j), nbc)
        return (max(0, i * block - off_r), min(h, (i + 1) * block - off_r),
                max(0, jj * block - off_c), min(w, (jj + 1) * block - off_c))  # fmt: skip

    def try_add(j: int, r0: int, r1: int, c0: int, c1: int) -> bool:
        nonlocal left
        new_px = lab[r0:r1, c0:c1] & ~train[r0:r1, c0:c1]
        # The region changes `near` within `buffer` of it; that needs `train` within 2·buffer.
        R0, R1, C0, C1 = (
            max(0, r0 - 2 * buffer),
            min(h, r1 + 2 * buffer),
            max(0, c0 - 2 * buffer),
            min(w, c1 + 2 * buffer),
        )
        sub = train[R0:R1, C0:C1].copy()
        sub[r0 - R0 : r1 - R0, c0 - C0 : c1 - C0] |= new_px
        i0, i1, j0, j1 = max(0, r0 - buffer), min(h, r1 + buffer), max(0, c0 - buffer), min(w, c1 + buffer)
        new_near = _dilate(sub, buffer)[i0 - R0 : i1 - R0, j0 - C0 : j1 - C0] | near[i0:i1, j0:j1]
        was_cand = lab[i0:i1, j0:j1] & ~near[i0:i1, j0:j1]
        lost = np.bincount(labels[i0:i1, j0:j1][was_cand & new_near], minlength=k)[:k]
        if np.any(left - lost < 1):
            return False
        gain = np.bincount(labels[r0:r1, c0:c1][new_px], minlength=k)[:k]
        near[i0:i1, j0:j1] = new_near
        train[r0:r1, c0:c1] |= new_px
        left = left - lost
        s[:] += gain
        avail[j] -= gain
        if not avail[j].any():
            excluded[j] = True
        taken.append((j, r0, r1, c0, c1, new_px, gain))
        return True

    def greedy_add() -> None:
        while True:
            js = order[~excluded[order]]
            if js.size == 0:
                return
            d = delta(avail[js])
            better = d < -1e-12
            if not better.any() or not try_blocks(js[better][np.argsort(d[better], kind="stable")]):
                return

    def remove_one() -> bool:
        """Drop the taken region whose removal lowers the objective most (never a class's last pixels)."""
        nonlocal left
        if not taken:
            return False
        gains = np.array([g for *_, g in taken])  # (m, K)
        d = delta(-gains)
        d[np.any(((s - gains) == 0) & (gains > 0), axis=1)] = np.inf
        i = int(np.argmin(d))
        if d[i] >= -1e-12:
            return False
        j, r0, r1, c0, c1, new_px, gain = taken.pop(i)
        train[r0:r1, c0:c1] &= ~new_px
        s[:] -= gain
        avail[j] += gain
        near[:] = _dilate(train, buffer)
        left = np.bincount(labels[lab & ~near], minlength=k)[:k]
        excluded[:] = ~avail.any(axis=1)  # removal can make infeasible blocks feasible again
        return True

    def try_blocks(js: np.ndarray) -> bool:
        for j in js:
            ok = try_add(j, *block_rect(j))
            excluded[j] = True  # taken whole, or infeasible
            if ok:
                return True
        return False

    def parts(c: int, side: int) -> tuple[list[tuple], list[np.ndarray]]:
        """The side × side parts of the blocks holding untaken pixels of class c, and their gains."""
        regions, gains = [], []
        for j in order[avail[order, c] > 0]:
            r0, r1, c0, c1 = block_rect(j)
            for a in range(r0, r1, side):
                for b in range(c0, c1, side):
                    rr, cc = slice(a, min(a + side, r1)), slice(b, min(b + side, c1))
                    g = np.bincount(labels[rr, cc][lab[rr, cc] & ~train[rr, cc]], minlength=k)[:k]
                    if g[c] > 0:
                        regions.append((j, a, rr.stop, b, cc.stop))
                        gains.append(g)
        return regions, gains

    sides = [block]
    while sides[-1] > 1:
        sides.append((sides[-1] + 1) // 2)
    # Whole blocks compete with their quarters (a rare class rarely needs a whole block's worth of
    # other classes); finer parts are tried only when neither can serve the class.
    groups = [sides[:2]] + [[side] for side in sides[2:]]
    for c in np.argsort(avail.sum(axis=0), kind="stable"):  # rarest class first
        if s[c] > 0:
            continue
        for group in groups:
            regions, gains = [], []
            for side in group:
                r, g = parts(c, side)
                regions += r
                gains += g
            if regions and any(
                try_add(*regions[i]) for i in np.argsort(delta(np.array(gains)), kind="stable")
            ):
                break
        else:
            raise DataError(
                f"{names[c]} cannot get a training pixel in a disjoint split and keep a test pixel beyond "
                f"the {buffer}-pixel buffer; use a smaller --buffer"
            )
    greedy_add()
    for _ in range(nblocks):
        if not remove_one():
            break
        greedy_add()
    return train, near


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
        from pathlib import Path

        from blmkd.data.readers import _library_errors, _open_container, _pick_gt

        path = Path(m)
        with _open_container(path) as (fmt, entries):
            entry = _pick_gt(entries, None, path, tuple(scene.cube.shape), {})
            with _library_errors(path, fmt.split("-")[0]):
                arr = np.asarray(entry.load())
        arr = arr.reshape([s for s in arr.shape if s != 1]) if arr.ndim == 3 else arr
        source = str(path)
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
