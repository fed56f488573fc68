"""Class maps written out: ``.npy`` original class ids, ``.png`` colour map with legend, ``.tif`` GeoTIFF.

matplotlib and rasterio (the optional extra ``geo``) are imported where a map is drawn or written.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np

from blmkd.data import load_scene
from blmkd.errors import BlmkdError, DataError
from blmkd.io import atomic_path

MAP_SUFFIXES = (".png", ".npy", ".tif", ".tiff")


# ----------------------------------------------------------------------------------------------
# Writing maps


def class_colors(k: int) -> np.ndarray:
    """``(k, 3)`` RGB in [0, 1]: tab20 and tab20b/c first (distinct), then evenly spaced hues."""
    import matplotlib

    cols = [matplotlib.colormaps[name](i)[:3] for name in ("tab20", "tab20b", "tab20c") for i in range(20)]
    if k > len(cols):
        cols += [colorsys.hsv_to_rgb(i / (k - len(cols)), 0.8, 0.9) for i in range(k - len(cols))]
    return np.asarray(cols[:k], dtype=np.float64)


def to_class_ids(pred: np.ndarray, class_ids: list[int]) -> np.ndarray:
    """Class indices → original ground-truth ids (0 where ``pred`` is -1), in the smallest unsigned dtype."""
    lut = np.asarray([0, *class_ids], dtype=np.int64)
    dtype = np.uint8 if lut.max() < 256 else (np.uint16 if lut.max() < 65536 else np.uint32)
    return lut[pred.astype(np.int64) + 1].astype(dtype)


def rgb_map(pred: np.ndarray, k: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 image of class indices; -1 is black."""
    lut = np.vstack([np.zeros((1, 3)), class_colors(k)])
    return np.rint(255 * lut).astype(np.uint8)[pred.astype(np.intp) + 1]


def legend_handles(class_ids: list[int], class_names: list[str]):
    from matplotlib.patches import Patch

    colors = class_colors(len(class_ids))
    return [
        Patch(facecolor=colors[i], edgecolor="none", label=f"{cid} {name}")
        for i, (cid, name) in enumerate(zip(class_ids, class_names))
    ]


def check_map_path(path: str | Path) -> Path:
    """Refuse an output whose suffix is not a map format, or a GeoTIFF without rasterio (before any work)."""
    p = Path(path)
    suf = p.suffix.lower()
    if suf not in MAP_SUFFIXES:
        raise BlmkdError(f"{p.name}: map output must end in {', '.join(MAP_SUFFIXES)}")
    if suf in (".tif", ".tiff"):
        try:
            import rasterio  # noqa: F401
        except ImportError:
            raise BlmkdError(
                f"{p.name}: writing GeoTIFF needs rasterio (pip install 'blmkd[geo]'); use .png or .npy"
            ) from None
    return p


def write_map(
    path: str | Path, pred: np.ndarray, class_ids: list[int], class_names: list[str], title: str = ""
) -> Path:
    """Write a map by suffix: ``.npy`` original class ids, ``.png`` colour map with legend, ``.tif`` GeoTIFF."""
    p = check_map_path(path)
    suf = p.suffix.lower()
    if suf == ".npy":
        with atomic_path(p, suffix=".npy") as tmp:
            np.save(tmp, to_class_ids(pred, class_ids))
    elif suf == ".png":
        _write_png(p, pred, class_ids, class_names, title)
    else:
        _write_geotiff(p, to_class_ids(pred, class_ids))
    return p


def _write_png(path: Path, pred: np.ndarray, class_ids, class_names, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    side = max(pred.shape)
    if side > 2000:  # nearest-neighbour subsampling: a display map; the .npy keeps every pixel
        step = -(-side // 2000)
        pred = pred[::step, ::step]
    h, w = pred.shape
    scale = min(2000, max(600, max(h, w))) / max(h, w)  # long side 600..2000 px at 100 dpi
    img_w, img_h = w * scale / 100, h * scale / 100  # inches
    ncol = 1 if len(class_ids) <= 24 else 2
    legend_w, top = 2.6 * ncol, 0.35 if title else 0.05
    fig_w, fig_h = img_w + legend_w, max(img_h + top, 0.2 * len(class_ids) / ncol + 0.6)
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=100)
    ax = fig.add_axes((0.0, (fig_h - top - img_h) / fig_h, img_w / fig_w, img_h / fig_h))
    ax.imshow(rgb_map(pred, len(class_ids)), interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    fig.legend(handles=legend_handles(class_ids, class_names), loc="center left",
               bbox_to_anchor=(img_w / fig_w + 0.01, 0.5), fontsize=7, frameon=False, ncol=ncol)  # fmt: skip
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _write_geotiff(path: Path, ids: np.ndarray) -> None:
    import rasterio

    with atomic_path(path, suffix=".tif") as tmp:
        with rasterio.open(tmp, "w", driver="GTiff", height=ids.shape[0], width=ids.shape[1], count=1,
                           dtype=str(ids.dtype), nodata=0, compress="deflate") as dst:  # fmt: skip
            dst.write(ids, 1)


def load_scene_for_map(scene: str, gt: str | None = None):
    """``(cube, labels or None, name, class_ids or None)`` of a registry name or a file; a ``.npy``
    without ``--gt`` is a bare cube (a .npy file holds one array, so it cannot carry ground truth)."""
    p = Path(scene)
    if gt is None and p.suffix.lower() == ".npy" and p.is_file():
        try:
            cube = np.load(p, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataError(f"{p}: not a readable .npy cube ({exc})") from None
        if cube.ndim != 3:
            raise DataError(f"{p}: a cube must be (H, W, bands), got shape {cube.shape}")
        return cube, None, p.stem, None
    s = load_scene(scene, gt)
    return s.cube, s.labels, s.name, list(s.class_ids)
