"""Scene maps shared out over ``torchrun`` ranks: row tiles round-robin, stitched on rank 0.

The row tiles of every scene (``tile`` rows each, the tiles of :func:`blmkd.inference.scene.predict_scene`)
are numbered in order, scene after scene, and tile ``i`` goes to rank ``i % world_size``. Each rank
runs :func:`~blmkd.inference.scene.predict_scene` itself with a mask that keeps only its own tiles
(a tile with no pixel to classify is skipped before it is read), so the per-tile path, halos and
preprocessing are exactly the single-process ones and the stitched map is identical to the
single-process map. The tiles are then gathered to rank 0 (``gather_object``: an int16 block per
tile, ``tile × W`` values) and written into the map there.

Without a process group this is :func:`predict_scene` on one process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

import blmkd.distributed as D
from blmkd.inference.classifier import SceneClassifier
from blmkd.inference.scene import SceneMap, predict_scene


def row_tiles(height: int, tile: int) -> list[tuple[int, int]]:
    """``(r0, r1)`` of each row tile of a scene ``height`` rows high, top to bottom."""
    return [(r0, min(height, r0 + tile)) for r0 in range(0, height, tile)]


def assign_round_robin(n_items: int, rank: int, world_size: int) -> list[int]:
    """The items of ``rank``: ``rank, rank + world_size, ...`` (neighbouring tiles go to different ranks,
    which evens out scenes whose top and bottom differ in masked pixels)."""
    return list(range(rank, n_items, world_size))


def predict_scenes_sharded(
    clf: SceneClassifier,
    cubes: Sequence,
    *,
    tile: int = 256,
    batch: int | None = None,
    masks: Sequence[np.ndarray | None] | None = None,
    return_logits: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[SceneMap] | None:
    """Classify ``cubes`` with their row tiles shared out over the ranks; the maps on rank 0.

    Args:
        clf: the classifier, opened on every rank (on ``cuda:LOCAL_RANK`` for GPUs).
        cubes: ``(H, W, bands)`` scenes (memory maps are fine: each rank reads only its tiles).
        tile, batch, return_logits: as for :func:`predict_scene`.
        masks: one ``(H, W)`` bool mask or None per cube.
        progress: ``progress(tiles_done, tiles_total)`` over this rank's tiles.

    Returns:
        On rank 0 one :class:`SceneMap` per cube: ``pixels`` summed over the ranks, ``seconds``
        the wall time from the start to the stitched maps. None on the other ranks.
    """
    ctx = D.init_from_env()
    masks = list(masks) if masks is not None else [None] * len(cubes)
    items = [(s, r0, r1) for s, cube in enumerate(cubes) for r0, r1 in row_tiles(int(cube.shape[0]), tile)]
    mine = assign_round_robin(len(items), ctx.rank, ctx.world_size)
    t0 = time.perf_counter()
    blocks, used_batch, done = [], batch or clf.default_batch, 0
    for s, cube in enumerate(cubes):
        h, w = int(cube.shape[0]), int(cube.shape[1])
        tiles = [items[i][1:] for i in mine if items[i][0] == s]  # this rank's (r0, r1) of scene s
        keep = np.zeros((h, w), bool)
        for r0, r1 in tiles:
            keep[r0:r1] = True
        if masks[s] is not None:
            keep &= np.asarray(masks[s], bool)
        ends = {r1 for _, r1 in tiles}

        def tick(r1: int, _h: int, ends=ends) -> None:  # predict_scene reports every tile, ours or not
            nonlocal done
            if r1 in ends:
                done += 1
                if progress:
                    progress(done, len(mine))

        sm = predict_scene(
            clf, cube, tile=tile, batch=batch, mask=keep, return_logits=return_logits, progress=tick
        )
        used_batch = sm.batch
        for r0, r1 in tiles:
            pb = sm.pred[r0:r1]
            lb = sm.logits[r0:r1] if return_logits else None
            blocks.append((s, r0, r1, pb, lb, int((pb >= 0).sum())))
    gathered = D.gather_object(blocks, dst=0)
    if not ctx.is_main:
        return None
    maps = []
    for cube in cubes:
        h, w = int(cube.shape[0]), int(cube.shape[1])
        pred = np.full((h, w), -1, dtype=np.int16)
        logits = np.zeros((h, w, clf.num_classes), np.float32) if return_logits else None
        maps.append([pred, logits, 0])
    for part in gathered:
        for s, r0, r1, pb, lb, n in part:
            maps[s][0][r0:r1] = pb
            if lb is not None:
                maps[s][1][r0:r1] = lb
            maps[s][2] += n
    seconds = time.perf_counter() - t0
    return [SceneMap(p, n, seconds, clf.mode, tile, used_batch, lg) for p, lg, n in maps]


def predict_scene_sharded(
    clf: SceneClassifier,
    cube,
    *,
    tile: int = 256,
    batch: int | None = None,
    mask: np.ndarray | None = None,
    return_logits: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SceneMap | None:
    """:func:`predict_scene` with the row tiles shared out over the torchrun ranks.

    Returns the stitched map on rank 0 (identical to the single-process map) and None on the
    other ranks; in a single process it is :func:`predict_scene`. ``progress(rows_done, rows_total)``
    counts this rank's rows on a multi-rank run.
    """
    if not D.init_from_env().distributed:
        return predict_scene(
            clf, cube, tile=tile, batch=batch, mask=mask, return_logits=return_logits, progress=progress
        )
    cb = None
    if progress:
        rows = int(cube.shape[0])

        def cb(done: int, total: int) -> None:
            progress(min(rows, round(rows * done / max(1, total))), rows)

    maps = predict_scenes_sharded(
        clf, [cube], tile=tile, batch=batch, masks=[mask], return_logits=return_logits, progress=cb
    )
    return None if maps is None else maps[0]
