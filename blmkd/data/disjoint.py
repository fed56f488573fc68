"""Spatially disjoint training blocks: the ``disjoint`` strategy of :func:`blmkd.data.splits.make_split`.

The scene is tiled into ``block`` × ``block`` squares (grid origin shifted at random by the seed) and
regions go to training, chosen greedily for the objective Σ_k |s_k − t_k| / t_k (s_k training pixels
of class k, t_k its target):

1. :meth:`_BlockPicker.serve` — each class without training pixels, rarest first, gets the block or
   block quarter that hurts the objective least (eighths, sixteenths... down to single pixels where
   none will do);
2. :meth:`_BlockPicker.add_blocks` — whole blocks are added, best first, while they lower the
   objective;
3. :meth:`_BlockPicker.drop_one` — a taken region that no longer pays for itself is dropped, and
   step 2 runs again (local search; every move lowers the objective, so it ends).

A region is taken only if every class keeps at least one test pixel beyond ``buffer``
(:meth:`_BlockPicker.try_add`).
"""

from __future__ import annotations

import numpy as np

from blmkd.data.masks import dilate
from blmkd.errors import DataError


def disjoint_blocks(
    labels: np.ndarray, k: int, targets: np.ndarray, block: int, buffer: int, rng, names: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Choose blocks for training; return (train mask, train dilated by ``buffer``).

    Args:
        labels: (H, W) class indices, negative where unlabelled.
        k: number of classes.
        targets: (K,) training pixels wanted per class.
        block: block side in pixels.
        buffer: test pixels within this Chebyshev distance of a training pixel are lost to test.
        rng: ``np.random.Generator``: the grid offset and the tie-breaking order.
        names: a description per class, for the error message.

    Raises:
        DataError: a class cannot get a training pixel and keep a test pixel beyond the buffer.
    """
    picker = _BlockPicker(labels, k, targets, block, buffer, rng)
    for c in np.argsort(picker.avail.sum(axis=0), kind="stable"):  # rarest class first
        if picker.s[c] == 0 and not picker.serve(c):
            raise DataError(
                f"{names[c]} cannot get a training pixel in a disjoint split and keep a test pixel beyond "
                f"the {buffer}-pixel buffer; use a smaller --buffer"
            )
    picker.add_blocks()
    for _ in range(picker.nblocks):
        if not picker.drop_one():
            break
        picker.add_blocks()
    return picker.train, picker.near


class _BlockPicker:
    """The greedy choice's state: the block grid, what is taken and what each class has left."""

    def __init__(self, labels: np.ndarray, k: int, targets: np.ndarray, block: int, buffer: int, rng) -> None:
        h, w = labels.shape
        self.labels, self.k, self.targets, self.block, self.buffer = labels, k, targets, block, buffer
        self.h, self.w = h, w
        self.off_r, self.off_c = (int(v) for v in rng.integers(0, block, size=2))
        br = (np.arange(h) + self.off_r) // block  # (H,) block row of each pixel row
        bc = (np.arange(w) + self.off_c) // block  # (W,)
        self.nbc = int(bc[-1]) + 1
        self.nblocks = (int(br[-1]) + 1) * self.nbc
        bid = br[:, None] * self.nbc + bc[None, :]  # (H, W)
        self.lab = lab = labels >= 0
        self.avail = np.bincount(bid[lab] * k + labels[lab], minlength=self.nblocks * k).reshape(
            self.nblocks, k
        )  # (nblocks, K) not yet train
        self.weight = 1.0 / np.maximum(targets, 1.0)  # (K,)

        self.s = np.zeros(k)  # training pixels per class so far
        self.excluded = np.zeros(
            self.nblocks, dtype=bool
        )  # used up, or infeasible (until a removal frees space)
        self.train = np.zeros((h, w), dtype=bool)
        self.near = np.zeros((h, w), dtype=bool)
        self.left = self.avail.sum(axis=0)  # test candidates per class (labelled, not train, not near)
        self.order = rng.permutation(self.nblocks)  # tie-breaking among equal scores
        self.taken: list[tuple] = []  # regions added: (block, r0, r1, c0, c1, pixels added, gain per class)

    def delta(self, gain: np.ndarray) -> np.ndarray:
        """(m, K) gains → (m,) change of the objective."""
        return (np.abs(self.s + gain - self.targets) - np.abs(self.s - self.targets)) @ self.weight

    def block_rect(self, j: int) -> tuple[int, int, int, int]:
        """Rows ``r0:r1`` and columns ``c0:c1`` of block ``j``, clipped to the scene."""
        i, jj = divmod(int(j), self.nbc)
        b, h, w = self.block, self.h, self.w
        return (max(0, i * b - self.off_r), min(h, (i + 1) * b - self.off_r),
                max(0, jj * b - self.off_c), min(w, (jj + 1) * b - self.off_c))  # fmt: skip

    def try_add(self, j: int, r0: int, r1: int, c0: int, c1: int) -> bool:
        """Take region ``[r0:r1, c0:c1]`` of block ``j`` for training unless a class would lose its
        last test pixel to the buffer; True if taken."""
        h, w, buffer, labels, k = self.h, self.w, self.buffer, self.labels, self.k
        new_px = self.lab[r0:r1, c0:c1] & ~self.train[r0:r1, c0:c1]
        # The region changes `near` within `buffer` of it; that needs `train` within 2·buffer.
        R0, R1, C0, C1 = (
            max(0, r0 - 2 * buffer),
            min(h, r1 + 2 * buffer),
            max(0, c0 - 2 * buffer),
            min(w, c1 + 2 * buffer),
        )
        sub = self.train[R0:R1, C0:C1].copy()
        sub[r0 - R0 : r1 - R0, c0 - C0 : c1 - C0] |= new_px
        i0, i1, j0, j1 = max(0, r0 - buffer), min(h, r1 + buffer), max(0, c0 - buffer), min(w, c1 + buffer)
        new_near = dilate(sub, buffer)[i0 - R0 : i1 - R0, j0 - C0 : j1 - C0] | self.near[i0:i1, j0:j1]
        was_cand = self.lab[i0:i1, j0:j1] & ~self.near[i0:i1, j0:j1]
        lost = np.bincount(labels[i0:i1, j0:j1][was_cand & new_near], minlength=k)[:k]
        if np.any(self.left - lost < 1):
            return False
        gain = np.bincount(labels[r0:r1, c0:c1][new_px], minlength=k)[:k]
        self.near[i0:i1, j0:j1] = new_near
        self.train[r0:r1, c0:c1] |= new_px
        self.left = self.left - lost
        self.s[:] += gain
        self.avail[j] -= gain
        if not self.avail[j].any():
            self.excluded[j] = True
        self.taken.append((j, r0, r1, c0, c1, new_px, gain))
        return True

    def add_blocks(self) -> None:
        """Add whole blocks, best first, while one lowers the objective."""
        while True:
            js = self.order[~self.excluded[self.order]]
            if js.size == 0:
                return
            d = self.delta(self.avail[js])
            better = d < -1e-12
            if not better.any() or not self._add_first(js[better][np.argsort(d[better], kind="stable")]):
                return

    def _add_first(self, js: np.ndarray) -> bool:
        """Take the first block of ``js`` that can be taken; each one tried is excluded from then on."""
        for j in js:
            ok = self.try_add(j, *self.block_rect(j))
            self.excluded[j] = True  # taken whole, or infeasible
            if ok:
                return True
        return False

    def drop_one(self) -> bool:
        """Drop the taken region whose removal lowers the objective most (never a class's last pixels)."""
        if not self.taken:
            return False
        gains = np.array([g for *_, g in self.taken])  # (m, K)
        d = self.delta(-gains)
        d[np.any(((self.s - gains) == 0) & (gains > 0), axis=1)] = np.inf
        i = int(np.argmin(d))
        if d[i] >= -1e-12:
            return False
        j, r0, r1, c0, c1, new_px, gain = self.taken.pop(i)
        self.train[r0:r1, c0:c1] &= ~new_px
        self.s[:] -= gain
        self.avail[j] += gain
        self.near[:] = dilate(self.train, self.buffer)
        self.left = np.bincount(self.labels[self.lab & ~self.near], minlength=self.k)[: self.k]
        self.excluded[:] = ~self.avail.any(axis=1)  # removal can make infeasible blocks feasible again
        return True

    def parts(self, c: int, side: int) -> tuple[list[tuple], list[np.ndarray]]:
        """The side × side parts of the blocks holding untaken pixels of class c, and their gains."""
        labels, lab, k = self.labels, self.lab, self.k
        regions, gains = [], []
        for j in self.order[self.avail[self.order, c] > 0]:
            r0, r1, c0, c1 = self.block_rect(j)
            for a in range(r0, r1, side):
                for b in range(c0, c1, side):
                    rr, cc = slice(a, min(a + side, r1)), slice(b, min(b + side, c1))
                    g = np.bincount(labels[rr, cc][lab[rr, cc] & ~self.train[rr, cc]], minlength=k)[:k]
                    if g[c] > 0:
                        regions.append((j, a, rr.stop, b, cc.stop))
                        gains.append(g)
        return regions, gains

    def serve(self, c: int) -> bool:
        """Give class ``c`` its first training pixels: the part that hurts the objective least, by
        whole blocks and quarters first, finer parts only when neither will do. False if none can."""
        sides = [self.block]
        while sides[-1] > 1:
            sides.append((sides[-1] + 1) // 2)
        # Whole blocks compete with their quarters (a rare class rarely needs a whole block's worth of
        # other classes); finer parts are tried only when neither can serve the class.
        for group in [sides[:2]] + [[side] for side in sides[2:]]:
            regions, gains = [], []
            for side in group:
                r, g = self.parts(c, side)
                regions += r
                gains += g
            if regions and any(
                self.try_add(*regions[i]) for i in np.argsort(self.delta(np.array(gains)), kind="stable")
            ):
                return True
        return False
