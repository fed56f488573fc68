"""Read a scene from a cube file and, optionally, a second ground-truth file: :func:`read_scene_files`.

A file may hold the cube and the ground truth, or the ground truth comes from a second file
(``gt=``), which is how the public ``.mat`` benchmarks are laid out. The cube is the 3-D array
(the largest one where there are several) and the ground truth the integer-valued 2-D array with
the cube's spatial shape; ``cube_key`` / ``gt_key`` name them explicitly, and ``scene.extra``
records which keys were used. The formats are those of :mod:`blmkd.data.containers`.

The cube keeps the file's dtype and, for .npy and ENVI, stays memory-mapped: nothing here makes a
float copy. Ground-truth ids may be any non-negative integers (0 = unlabelled); they become
contiguous labels 0..K-1 in ``Scene.labels``, sorted by id, with the ids in ``Scene.class_ids``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from blmkd.data.containers import Entry, library_errors, open_container
from blmkd.data.scene import Scene, scene_from_arrays
from blmkd.errors import DataError

_GT_NAME_HINTS = ("gt", "label", "truth", "class", "map", "roi")

# ------------------------------------------------------------------------------------------
# Picking the cube and the ground truth among a file's arrays.


def _seen(entries: Mapping[str, Entry]) -> str:
    return ", ".join(e.describe() for e in entries.values()) or "none"


def _named(entries: Mapping[str, Entry], key: str, what: str, path: Path) -> Entry:
    if key not in entries:
        raise DataError(f"no array {key!r} ({what}) in {path}; keys seen: {_seen(entries)}")
    return entries[key]


def _pick_cube(entries: Mapping[str, Entry], key: str | None, path: Path, extra: dict) -> Entry:
    if key is not None:
        entry = _named(entries, key, "cube_key", path)
        if len(entry.shape) != 3:
            raise DataError(f"array {key!r} in {path} is not a 3-D cube: shape {entry.shape}")
    else:
        cands = [e for e in entries.values() if len(e.shape) == 3 and e.numeric]
        if not cands:
            raise DataError(f"no cube (3-D numeric array) in {path}; keys seen: {_seen(entries)}")
        entry = max(cands, key=lambda e: int(np.prod(e.shape)))
        if len(cands) > 1:
            others = ", ".join(e.key for e in cands if e is not entry)
            extra["cube_key_note"] = (
                f"several 3-D arrays; used the largest, {entry.key!r} (others: {others}); pass cube_key= to choose"
            )
    if not entry.numeric:
        raise DataError(f"cube {entry.key!r} in {path} has unsupported dtype {entry.dtype}")
    extra["cube_key"] = entry.key
    return entry


def _as_2d(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The 2-D shape of a ground truth, allowing one singleton band axis; None if not 2-D."""
    if len(shape) == 2:
        return tuple(shape)
    if len(shape) == 3 and shape[2] == 1:  # (H, W, 1): ENVI, or GeoTIFF after moving bands last
        return tuple(shape[:2])
    if len(shape) == 3 and shape[0] == 1:  # (1, H, W)
        return tuple(shape[1:])
    return None


def _pick_gt(
    entries: Mapping[str, Entry],
    key: str | None,
    path: Path,
    cube_shape: tuple[int, ...],
    extra: dict,
    exclude: str | None = None,
) -> Entry:
    if key is not None:
        entry = _named(entries, key, "gt_key", path)
    else:
        cands = [
            e for e in entries.values() if e.key != exclude and e.numeric and _as_2d(e.shape) is not None
        ]
        if not cands:
            hint = "" if exclude is None else "; pass gt=PATH for a ground truth in a second file"
            raise DataError(
                f"no ground truth (2-D integer array) in {path}; keys seen: {_seen(entries)}{hint}"
            )
        spatial = {tuple(cube_shape[:2]), tuple(cube_shape[1:])}
        matching = [e for e in cands if _as_2d(e.shape) in spatial]
        if not matching:
            e = cands[0]
            raise DataError(
                f"ground truth {e.key!r} in {path} has shape {e.shape} but the cube has shape "
                f"{tuple(cube_shape)}; their spatial sizes must match"
            )

        def rank(e: Entry) -> tuple:
            hinted = any(h in e.key.lower() for h in _GT_NAME_HINTS)
            return (e.dtype.kind in "biu", hinted, _as_2d(e.shape) == tuple(cube_shape[:2]))

        matching.sort(key=rank, reverse=True)
        entry = matching[0]
        if len(matching) > 1:
            others = ", ".join(e.key for e in matching[1:])
            extra["gt_key_note"] = (
                f"several candidate ground truths; used {entry.key!r} (others: {others}); pass gt_key= to choose"
            )
    if _as_2d(entry.shape) is None:
        raise DataError(f"ground truth {entry.key!r} in {path} is not 2-D: shape {entry.shape}")
    extra["gt_key"] = entry.key
    return entry


def read_scene_files(
    cube_path: str | os.PathLike,
    gt_path: str | os.PathLike | None = None,
    *,
    cube_key: str | None = None,
    gt_key: str | None = None,
    fill: float | None = None,
    name: str | None = None,
    class_names: Mapping[int, str] | Callable[[int], str] | None = None,
) -> Scene:
    """Read a scene from a cube file and, optionally, a second ground-truth file.

    See :func:`load_scene` for the arguments; ``name`` defaults to the cube file's stem and
    ``class_names`` maps ground-truth ids to names.
    """
    cube_path = Path(cube_path)
    gt_path = Path(gt_path) if gt_path is not None else None
    extra: dict = {"cube_path": str(cube_path)}
    wavelengths = None
    file_class_names: dict[int, str] = {}

    with open_container(cube_path) as (fmt, entries):
        extra["format"] = fmt
        cube_entry = _pick_cube(entries, cube_key, cube_path, extra)
        with library_errors(cube_path, fmt.split("-")[0]):
            cube = cube_entry.load()
        wavelengths = cube_entry.meta.get("wavelengths")
        if gt_path is None:
            gt_entry = _pick_gt(entries, gt_key, cube_path, cube.shape, extra, exclude=cube_entry.key)
            with library_errors(cube_path, fmt.split("-")[0]):
                gt = gt_entry.load()
            file_class_names = gt_entry.meta.get("class_names", {})
    if gt_path is not None:
        extra["gt_path"] = str(gt_path)
        with open_container(gt_path) as (gt_fmt, gt_entries):
            extra["gt_format"] = gt_fmt
            gt_entry = _pick_gt(gt_entries, gt_key, gt_path, cube.shape, extra)
            with library_errors(gt_path, gt_fmt.split("-")[0]):
                gt = gt_entry.load()
            file_class_names = gt_entry.meta.get("class_names", {})

    gt = np.asarray(gt)
    if gt.ndim == 3:
        gt = gt.reshape(_as_2d(gt.shape))
    if gt.shape != cube.shape[:2] and gt.shape == cube.shape[1:]:
        # The ground truth proves the layout is (bands, H, W).
        cube = np.transpose(cube, (1, 2, 0))
        extra["transposed"] = "cube stored as (bands, H, W); read as (H, W, bands)"
    if class_names is None and file_class_names:
        class_names = file_class_names
    return scene_from_arrays(
        name or cube_path.stem,
        cube,
        gt,
        class_names=class_names,
        source=str(cube_path),
        wavelengths=wavelengths,
        extra=extra,
        fill=fill,
    )


def read_label_map(path: str | os.PathLike, cube_shape: tuple[int, ...]) -> np.ndarray:
    """The ground-truth-like map in ``path`` (2-D, the cube's spatial size), as stored; e.g. a fixed
    split's training or test map.

    Raises:
        DataError: missing or unreadable file, or no 2-D numeric array matching ``cube_shape``.
    """
    path = Path(path)
    with open_container(path) as (fmt, entries):
        entry = _pick_gt(entries, None, path, tuple(cube_shape), {})
        with library_errors(path, fmt.split("-")[0]):
            arr = np.asarray(entry.load())
    return arr.reshape([s for s in arr.shape if s != 1]) if arr.ndim == 3 else arr
