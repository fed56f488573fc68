"""Every file format read as a set of named arrays, loaded on demand: :func:`open_container`.

Formats, chosen by suffix:

- ``.mat``: MATLAB v4/v5/v7 through scipy, v7.3 (HDF5) through h5py. MATLAB stores arrays
  column-major, so an (H, W, B) MATLAB array reads as (B, W, H) in h5py; it is transposed back.
- ``.h5`` / ``.hdf5``: every dataset in the file; transposed back only where it carries MATLAB's
  ``MATLAB_class`` attribute.
- ``.npy`` (memory-mapped, read-only) and ``.npz``.
- ENVI: the ``.hdr`` (or the raw file beside it), memory-mapped through ``spectral``.
- ``.tif`` / ``.tiff``: GeoTIFF through rasterio, installed with the ``geo`` extra.

The libraries' exceptions for corrupt or truncated files become one-line DataErrors
(:func:`library_errors`). Which array is the cube and which the ground truth is decided by
:mod:`blmkd.data.readers`.
"""

from __future__ import annotations

import contextlib
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from blmkd.errors import DataError

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
_SKIPPED_MATLAB_CLASSES = {"char", "cell", "struct", "function_handle", "object"}


# ------------------------------------------------------------------------------------------
# Containers: every format is read as a set of named arrays, loaded on demand.


@dataclass
class Entry:
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
def library_errors(path: Path, fmt: str) -> Iterator[None]:
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
def open_container(path: Path) -> Iterator[tuple[str, dict[str, Entry]]]:
    """Yield (format, {key: entry}); entries can be loaded until the block exits."""
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    fmt = _format_of(path)
    with contextlib.ExitStack() as stack:
        with library_errors(path, fmt):
            fmt_name, entries = _open(path, fmt, stack)
        yield fmt_name, entries


def _open(path: Path, fmt: str, stack: contextlib.ExitStack) -> tuple[str, dict[str, Entry]]:
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
        return fmt, {path.stem: Entry(path.stem, arr.shape, arr.dtype, lambda: arr)}
    if fmt == "npz":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return fmt, {k: Entry(k, a.shape, a.dtype, lambda a=a: a) for k, a in arrays.items()}
    if fmt == "envi":
        return fmt, _envi_entries(path)
    return fmt, _geotiff_entries(path)


def _mat5_entries(path: Path) -> dict[str, Entry]:
    import scipy.io

    contents = scipy.io.loadmat(path)
    return {
        k: Entry(k, v.shape, v.dtype, lambda v=v: v)
        for k, v in contents.items()
        if not k.startswith("__") and isinstance(v, np.ndarray)
    }


def _hdf5_entries(f, *, matlab: bool) -> dict[str, Entry]:
    import h5py

    entries: dict[str, Entry] = {}

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
            entries[name] = Entry(
                name, obj.shape[::-1], obj.dtype, lambda obj=obj: np.ascontiguousarray(obj[()].T)
            )
        else:
            entries[name] = Entry(name, obj.shape, obj.dtype, lambda obj=obj: obj[()])

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


def _envi_entries(path: Path) -> dict[str, Entry]:
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
    return {key: Entry(key, arr.shape, arr.dtype, lambda: arr, meta)}


def _geotiff_entries(path: Path) -> dict[str, Entry]:
    try:
        import rasterio
    except ImportError as e:
        raise DataError(
            f"reading GeoTIFF {path} needs rasterio, which is not installed: pip install 'blmkd[geo]'"
        ) from e
    with rasterio.open(path) as src:
        arr = src.read()  # (bands, H, W)
    arr = np.moveaxis(arr, 0, -1)  # (H, W, bands)
    return {path.stem: Entry(path.stem, arr.shape, arr.dtype, lambda: arr)}
