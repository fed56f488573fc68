"""Load a hyperspectral scene from a registry name or from files: :func:`load_scene`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from blmkd.data.containers import FORMATS
from blmkd.data.download import download_dataset
from blmkd.data.embedded import load_indian_pines
from blmkd.data.readers import read_scene_files
from blmkd.data.registry import get_dataset
from blmkd.data.scene import Scene
from blmkd.errors import DataError

log = logging.getLogger(__name__)


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or Path(value).suffix.lower() in (*FORMATS, ".img", ".raw", ".dat")


def load_scene(
    name_or_path: str | os.PathLike,
    gt: str | os.PathLike | None = None,
    *,
    cube_key: str | None = None,
    gt_key: str | None = None,
    fill: float | None = None,
    progress: bool = True,
) -> Scene:
    """Load a scene from the dataset registry or from files.

    Args:
        name_or_path: a registry name (case-, underscore- and dash-insensitive: ``"indian_pines"``,
            ``"IndianPines"``, ``"salinas"``...) or the path of the cube file (which may also
            hold the ground truth). A registry dataset missing from the cache is downloaded
            (see :mod:`blmkd.data.download`). ``"indian_pines"`` is always the copy embedded in
            the tensorly wheel (:func:`blmkd.data.embedded.load_indian_pines`), even when the
            .mat files are cached; that scene is shared per process and must not be mutated.
        gt: path of a separate ground-truth file (only with a path).
        cube_key: name of the cube array in a .mat/.npz/.h5 file (default: the largest 3-D array).
        gt_key: name of the ground-truth array (default: the 2-D integer array with the cube's
            height and width).
        fill: replace NaN/Inf in a float cube by this value; without it such a cube is an error.
        progress: show a progress bar while downloading.

    Returns:
        The scene, its cube in the file's dtype (memory-mapped for .npy and ENVI).

    Raises:
        DataError: unknown name, missing or unreadable file, no cube or ground truth, mismatched
            shapes, bad ground-truth values, NaN/Inf without ``fill``.
    """
    if (
        isinstance(name_or_path, os.PathLike)
        or Path(name_or_path).is_file()
        or _looks_like_path(name_or_path)
    ):
        path = Path(name_or_path)
        return read_scene_files(path, gt, cube_key=cube_key, gt_key=gt_key, fill=fill)

    info = get_dataset(name_or_path)
    if gt is not None:
        raise DataError(f"gt= applies to a file path, not to the registered dataset {info.name!r}")
    if info.embedded:
        if cube_key is not None or gt_key is not None:
            raise DataError(
                f"cube_key/gt_key do not apply to the embedded {info.title}; pass the file path instead"
            )
        return load_indian_pines()

    cube_path, gt_path = download_dataset(info, progress=progress)
    scene = read_scene_files(
        cube_path,
        gt_path,
        cube_key=cube_key or info.cube.key,
        gt_key=gt_key or info.gt.key,
        fill=fill,
        name=info.name,
        class_names=info.class_name,
    )
    scene.extra.update(dataset=info.title, sensor=info.sensor, citation=info.citation)
    if scene.bands != info.bands:
        log.warning("%s: %d bands in %s, expected %d", info.name, scene.bands, cube_path, info.bands)
        scene.extra["bands_note"] = f"{scene.bands} bands; the registry expects {info.bands}"
    return scene
