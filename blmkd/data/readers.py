"""Read a hyperspectral scene from a registry name or from files: :func:`load_scene`.

Formats, chosen by suffix:

- ``.mat``: MATLAB v4/v5/v7 through scipy, v7.3 (HDF5) through h5py. MATLAB stores arrays
  column-major, so an (H, W, B) MATLAB array reads as (B, W, H) in h5py; it is transposed back.
- ``.h5`` / ``.hdf5``: every dataset in the file; transposed back only where it carries MATLAB's
  ``MATLAB_class`` attribute.
- ``.npy`` (memory-mapped, read-only) and ``.npz``.
- ENVI: the ``.hdr`` (or the raw file beside it), memory-mapped through ``spectral``.
- ``.tif`` / ``.tiff``: GeoTIFF through rasterio, installed with the ``geo`` extra.

A file may hold the cube and the ground truth, or the ground truth comes from a second file
(``gt=``), which is how the public ``.mat`` benchmarks are laid out. The cube is the 3-D array
(the largest one where there are several) and the ground truth the integer-valued 2-D array with
the cube's spatial shape; ``cube_key`` / ``gt_key`` name them explicitly, and ``scene.extra``
records which keys were used.

The cube keeps the file's dtype and, for .npy and ENVI, stays memory-mapped: nothing here makes a
float copy. Ground-truth ids may be any non-negative integers (0 = unlabelled); they become
contiguous labels 0..K-1 in ``Scene.labels``, sorted by id, with the ids in ``Scene.class_ids``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from blmkd.data.scene import UNLABELLED, Scene
from blmkd.errors import DataError

log = logging.getLogger(__name__)

FORMATS = {
    ".mat": "mat",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".he5": "hdf5",
    ".npy": "npy",
    ".npz": "npz",
    ".hdr": "envi",
    ".tif": "geotiff",
    ".tiff": "geotiff",
}
_FORMAT_NAMES = {
    "mat": "a MATLAB .mat file",
    "hdf5": "an HDF5 file",
    "npy": "a .npy file",
    "npz": "a .npz file",
    "envi": "an ENVI image",
    "geotiff": "a GeoTIFF",
}
# Exceptions the readers' libraries raise for corrupt, truncated or unreadable files.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    TypeError,
    EOFError,
    KeyError,
    IndexError,
    NotImplementedError,
    UnicodeDecodeError,
    struct.error,
    zlib.error,
    zipfile.BadZipFile,
)
_GT_NAME_HINTS = ("gt", "label", "truth", "class", "map", "roi")
_SKIPPED_MATLAB_CLASSES = {"char", "cell", "struct", "function_handle", "object"}
_FINITE_CHECK_ELEMENTS = 1 << 24  # elements per block when scanning a cube for NaN/Inf


# ------------------------------------------------------------------------------------------
# Containers: every format is read as a set of named arrays, loaded on demand.


@dataclass
class _Entry:
    """A named array in a file: its shape and dtype without loading it, and how to load it."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    load: Callable[[], np.ndarray]
    meta: dict = field(default_factory=dict)  # wavelengths, class names where the format has them

    def describe(self) -> str:
        return f"{self.key} ({'x'.join(map(str, self.shape)) or 'scalar'} {self.dtype})"

    @property
    def numeric(self) -> bool:
        return self.dtype.kind in "biuf"


def _format_of(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is not None:
        return fmt
    if _envi_header(path) is not None:
        return "envi"
    raise DataError(
        f"unsupported file type {path.suffix or '(no suffix)'!r} for {path}; "
        f"supported: {', '.join(sorted(FORMATS))} and ENVI raw files with a .hdr"
    )


@contextlib.contextmanager
def _library_errors(path: Path, fmt: str) -> Iterator[None]:
    """Re-raise the libraries' exceptions for an unreadable file as one-line DataErrors."""
    errors = _READ_ERRORS
    if fmt == "mat":
        from scipy.io.matlab import MatReadError

        errors = (*errors, MatReadError)
    elif fmt == "envi":
        from spectral.utilities.errors import SpyException

        errors = (*errors, SpyException)
    try:
        yield
    except DataError:
        raise
    except errors as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"cannot read {path} as {_FORMAT_NAMES[fmt]} (corrupt or truncated?): {msg}") from e


@contextlib.contextmanager
def _open_container(path: Path) -> Iterator[tuple[str, dict[str, _Entry]]]:
    """Yield (format, {key: entry}); entries can be loaded until the block exits."""
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    fmt = _format_of(path)
    with contextlib.ExitStack() as stack:
        with _library_errors(path, fmt):
            fmt_name, entries = _open(path, fmt, stack)
        yield fmt_name, entries


def _open(path: Path, fmt: str, stack: contextlib.ExitStack) -> tuple[str, dict[str, _Entry]]:
    if fmt in ("mat", "hdf5"):
        import h5py

        if h5py.is_hdf5(path):
            f = stack.enter_context(h5py.File(path, "r"))
            return ("mat-v7.3" if fmt == "mat" else "hdf5"), _hdf5_entries(f, matlab=fmt == "mat")
        if fmt == "hdf5":
            raise DataError(f"cannot read {path}: not an HDF5 file")
        return "mat-v5", _mat5_entries(path)
    if fmt == "npy":
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        return fmt, {path.stem: _Entry(path.stem, arr.shape, arr.dtype, lambda: arr)}
    if fmt == "npz":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return fmt, {k: _Entry(k, a.shape, a.dtype, lambda a=a: a) for k, a in arrays.items()}
    if fmt == "envi":
        return fmt, _envi_entries(path)
    return fmt, _geotiff_entries(path)


def _mat5_entries(path: Path) -> dict[str, _Entry]:
    import scipy.io

    contents = scipy.io.loadmat(path)
    return {
        k: _Entry(k, v.shape, v.dtype, lambda v=v: v)
        for k, v in contents.items()
        if not k.startswith("__") and isinstance(v, np.ndarray)
    }


def _hdf5_entries(f, *, matlab: bool) -> dict[str, _Entry]:
    import h5py

    entries: dict[str, _Entry] = {}

    def visit(name: str, obj) -> None:
        if not isinstance(obj, h5py.Dataset) or name.startswith("#"):  # MATLAB's #refs#, #subsystem#
            return
        mclass = obj.attrs.get("MATLAB_class")
        if isinstance(mclass, bytes):
            mclass = mclass.decode()
        if mclass in _SKIPPED_MATLAB_CLASSES or "MATLAB_empty" in obj.attrs or obj.dtype.kind not in "biuf":
            return
        if matlab or mclass is not None:
            # Column-major MATLAB array: h5py sees the axes reversed.
            entries[name] = _Entry(
                name, obj.shape[::-1], obj.dtype, lambda obj=obj: np.ascontiguousarray(obj[()].T)
            )
        else:
            entries[name] = _Entry(name, obj.shape, obj.dtype, lambda obj=obj: obj[()])

    if matlab:  # MATLAB writes variables at the top level only
        for name, obj in f.items():
            visit(name, obj)
    else:
        f.visititems(visit)
    return entries


def _envi_header(path: Path) -> Path | None:
    if path.suffix.lower() == ".hdr":
        return path
    for hdr in (path.with_suffix(".hdr"), path.with_name(path.name + ".hdr")):
        if hdr.is_file():
            return hdr
    return None


def _envi_entries(path: Path) -> dict[str, _Entry]:
    import spectral.io.envi as envi

    hdr = _envi_header(path)
    image = None if path.suffix.lower() == ".hdr" else str(path)
    img = envi.open(str(hdr), image)
    arr = img.open_memmap(interleave="bip", writable=False)  # (rows, cols, bands) view of the file
    meta: dict = {}
    wl = img.metadata.get("wavelength")
    if wl:
        values = [float(w) for w in wl]
        units = str(img.metadata.get("wavelength units", "")).lower()
        if units.startswith(("micro", "um", "µm")) or (not units and max(values) < 30):
            values = [w * 1000.0 for w in values]
        meta["wavelengths"] = values
    names = img.metadata.get("class names")
    if names:
        meta["class_names"] = {i: str(n) for i, n in enumerate(names)}
    key = hdr.stem
    return {key: _Entry(key, arr.shape, arr.dtype, lambda: arr, meta)}


def _geotiff_entries(path: Path) -> dict[str, _Entry]:
    try:
        import rasterio
    except ImportError as e:
        raise DataError(
            f"reading GeoTIFF {path} needs rasterio, which is not installed: pip install 'blmkd[geo]'"
        ) from e
    with rasterio.open(path) as src:
        arr = src.read()  # (bands, H, W)
    arr = np.moveaxis(arr, 0, -1)  # (H, W, bands)
    return {path.stem: _Entry(path.stem, arr.shape, arr.dtype, lambda: arr)}


# ------------------------------------------------------------------------------------------
# Picking the cube and the ground truth among a file's arrays.


def _seen(entries: Mapping[str, _Entry]) -> str:
    return ", ".join(e.describe() for e in entries.values()) or "none"


def _named(entries: Mapping[str, _Entry], key: str, what: str, path: Path) -> _Entry:
    if key not in entries:
        raise DataError(f"no array {key!r} ({what}) in {path}; keys seen: {_seen(entries)}")
    return entries[key]


def _pick_cube(entries: Mapping[str, _Entry], key: str | None, path: Path, extra: dict) -> _Entry:
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
    entries: Mapping[str, _Entry],
    key: str | None,
    path: Path,
    cube_shape: tuple[int, ...],
    extra: dict,
    exclude: str | None = None,
) -> _Entry:
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

        def rank(e: _Entry) -> tuple:
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


# ------------------------------------------------------------------------------------------
# Arrays to a Scene.


def labels_from_ground_truth(gt: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Map a ground truth with arbitrary non-negative ids to contiguous labels.

    Args:
        gt: (H, W) integer-valued array (float arrays holding whole numbers are accepted);
            0 = unlabelled.

    Returns:
        (labels, class_ids): labels is (H, W) int32 with 0..K-1 (class k is the k-th smallest
        id) and ``UNLABELLED`` where gt is 0; class_ids are the K original ids, ascending.

    Raises:
        DataError: non-integer values, NaN, or negative ids.
    """
    gt = np.asarray(gt)
    if gt.dtype.kind == "b":
        gt = gt.astype(np.uint8)
    elif gt.dtype.kind == "f":
        bad = ~np.isfinite(gt) | (gt != np.round(gt))
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise DataError(
                f"ground truth is not integer-valued: {int(bad.sum())} values like {gt[r, c]} at ({r}, {c})"
            )
        gt = gt.astype(np.int64)
    elif gt.dtype.kind not in "iu":
        raise DataError(f"ground truth has unsupported dtype {gt.dtype}; expected integer class ids")
    if gt.dtype.kind == "i" and gt.size and gt.min() < 0:
        raise DataError(
            f"ground truth has negative ids (min {int(gt.min())}); ids must be >= 0 with 0 = unlabelled"
        )
    mask = gt > 0
    ids = np.unique(gt[mask])
    labels = np.full(gt.shape, UNLABELLED, dtype=np.int32)
    labels[mask] = np.searchsorted(ids, gt[mask]).astype(np.int32)
    return labels, [int(i) for i in ids]


def count_nonfinite(cube: np.ndarray) -> int:
    """NaN and ±Inf values in a cube, scanned in row blocks so a memory-mapped cube stays on disk."""
    if cube.dtype.kind not in "fc":
        return 0
    rows = max(1, _FINITE_CHECK_ELEMENTS // max(1, int(np.prod(cube.shape[1:]))))
    return sum(int(np.count_nonzero(~np.isfinite(cube[r : r + rows]))) for r in range(0, cube.shape[0], rows))


def _fill_nonfinite(cube: np.ndarray, value: float) -> np.ndarray:
    out = np.array(cube)  # in memory, same dtype
    rows = max(1, _FINITE_CHECK_ELEMENTS // max(1, int(np.prod(out.shape[1:]))))
    for r in range(0, out.shape[0], rows):
        block = out[r : r + rows]
        block[~np.isfinite(block)] = value
    return out


def scene_from_arrays(
    name: str,
    cube: np.ndarray,
    gt: np.ndarray,
    *,
    class_names: Mapping[int, str] | Callable[[int], str] | None = None,
    source: str = "",
    wavelengths: list[float] | None = None,
    extra: dict | None = None,
    fill: float | None = None,
    check_finite: bool = True,
) -> Scene:
    """Build a validated :class:`Scene` from an (H, W, bands) cube and an (H, W) ground truth.

    Args:
        name: scene name.
        cube: (H, W, bands) array, any numeric dtype; kept as is (no copy) unless ``fill`` is used.
        gt: (H, W) ground-truth ids, 0 = unlabelled.
        class_names: id -> name (a mapping or a function); ``"class <id>"`` where missing.
        source: where the data came from.
        wavelengths: band centres in nm (must have one per band).
        extra: facts recorded in ``scene.extra``.
        fill: replace NaN/Inf in a float cube by this value (makes an in-memory copy).
        check_finite: scan a float cube for NaN/Inf (skip only for cubes known to be finite).

    Raises:
        DataError: shape mismatch, bad ground truth, NaN/Inf without ``fill``, no labelled pixel.
    """
    extra = dict(extra or {})
    cube_shape, gt_shape = tuple(cube.shape), tuple(np.shape(gt))
    if cube.ndim != 3:
        raise DataError(f"cube must be 3-D (H, W, bands), got shape {cube_shape}")
    if cube.dtype.kind not in "biuf":
        raise DataError(f"cube has unsupported dtype {cube.dtype}")
    if gt_shape != cube_shape[:2]:
        raise DataError(f"cube shape {cube_shape} and ground-truth shape {gt_shape} do not match (H, W)")
    labels, class_ids = labels_from_ground_truth(gt)
    if not class_ids:
        raise DataError("ground truth has no labelled pixel (every value is 0)")
    if wavelengths is not None and len(wavelengths) != cube_shape[2]:
        raise DataError(f"{len(wavelengths)} wavelengths for a cube with {cube_shape[2]} bands")
    if check_finite:
        bad = count_nonfinite(cube)
        if bad and fill is None:
            raise DataError(
                f"cube has {bad} NaN/Inf values; pass --fill VALUE (fill=VALUE in Python) to replace them"
            )
        if bad:
            cube = _fill_nonfinite(cube, fill)
            extra["filled"] = {"count": bad, "value": float(fill)}
    if callable(class_names):
        names = [class_names(i) for i in class_ids]
    else:
        lookup = class_names or {}
        names = [lookup.get(i, f"class {i}") for i in class_ids]
    return Scene(
        name=name,
        cube=cube,
        labels=labels,
        class_ids=class_ids,
        class_names=names,
        source=source,
        wavelengths=[float(w) for w in wavelengths] if wavelengths is not None else None,
        extra=extra,
    )


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

    with _open_container(cube_path) as (fmt, entries):
        extra["format"] = fmt
        cube_entry = _pick_cube(entries, cube_key, cube_path, extra)
        with _library_errors(cube_path, fmt.split("-")[0]):
            cube = cube_entry.load()
        wavelengths = cube_entry.meta.get("wavelengths")
        if gt_path is None:
            gt_entry = _pick_gt(entries, gt_key, cube_path, cube.shape, extra, exclude=cube_entry.key)
            with _library_errors(cube_path, fmt.split("-")[0]):
                gt = gt_entry.load()
            file_class_names = gt_entry.meta.get("class_names", {})
    if gt_path is not None:
        extra["gt_path"] = str(gt_path)
        with _open_container(gt_path) as (gt_fmt, gt_entries):
            extra["gt_format"] = gt_fmt
            gt_entry = _pick_gt(gt_entries, gt_key, gt_path, cube.shape, extra)
            with _library_errors(gt_path, gt_fmt.split("-")[0]):
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


# ------------------------------------------------------------------------------------------
# The entry point.


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
    from blmkd.data import registry

    if (
        isinstance(name_or_path, os.PathLike)
        or Path(name_or_path).is_file()
        or _looks_like_path(name_or_path)
    ):
        path = Path(name_or_path)
        return read_scene_files(path, gt, cube_key=cube_key, gt_key=gt_key, fill=fill)

    info = registry.get_dataset(name_or_path)
    if gt is not None:
        raise DataError(f"gt= applies to a file path, not to the registered dataset {info.name!r}")
    if info.embedded:
        if cube_key is not None or gt_key is not None:
            raise DataError(
                f"cube_key/gt_key do not apply to the embedded {info.title}; pass the file path instead"
            )
        from blmkd.data.embedded import load_indian_pines

        return load_indian_pines()

    from blmkd.data.download import download_dataset

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
