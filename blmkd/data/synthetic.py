"""Synthetic hyperspectral scenes: plausible spectra, field-like regions, sensor noise.

The scene is built like an agricultural/peri-urban image:

- Materials come from four families with the features a classifier can use: vegetation (green
  peak, red absorption, red edge near 700 nm, NIR plateau, leaf-water dips), soil (a smooth rising
  curve with hydroxyl and clay dips), water (dark, absorbing in the NIR) and man-made surfaces
  (flat, bright or dark).
- Classes come in groups of spectrally similar members (small perturbations of a shared base
  spectrum, like Indian Pines' corn and soybean tillage variants), so that the task is not trivial.
- Fields are the Voronoi cells of seeded, jittered grid centres; each is one class (or an
  unlabelled background material), with its own brightness. Pixels near a field edge are linear
  mixtures of the two neighbouring fields' spectra.
- Optional thin linear features (``lines``: roads or rivers 1-2 px wide, their own class) cross the
  fields with mixed-pixel edges; ``border`` widens the mixed borders between fields and
  ``label_fraction`` keeps the ground truth only near each field's centre (few labels per class).
- The sensor sees reflectance through an atmosphere with absorption bands near 940, 1130, 1400
  and 1900 nm, and adds noise whose level rises in those bands (much lower SNR there).

Everything is deterministic for a seed. With ``out=`` the cube is written block by block to a
memory-mapped .npy, so even XiongAn-sized scenes (3750 x 1580 x 256) are made in bounded memory.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from blmkd.data.scene import Scene, scene_from_arrays
from blmkd.data.spectra import (
    FAMILY_PARAMS,
    atmosphere,
    class_spectra,
    draw_params,
    material_spectrum,
    smooth_ripples,
)
from blmkd.errors import DataError
from blmkd.io import atomic_path

# Output dtype -> factor from reflectance to stored value (reflectance = value / scale).
SCALES = {
    "uint8": 400.0,
    "uint16": 10000.0,
    "int16": 10000.0,
    "int32": 10000.0,
    "float32": 1.0,
    "float64": 1.0,
}
WAVELENGTH_RANGE = (400.0, 2500.0)  # nm, AVIRIS-like
FIELD_AREA = 900  # target pixels per field (about 30 x 30, like Indian Pines' fields)
BORDER = 2.0  # px: pixels with d2 - d1 below this are mixtures of two fields
BLOCK_ELEMENTS = 1 << 18  # cube elements generated at a time (1 MB of float32)
NOISE = 0.004  # reflectance units: sensor noise away from the absorption bands (SNR ~100 at 0.4)
# The class ``lines`` adds, named after its material.
LINE_NAMES = {"man-made": "road", "water": "river", "soil": "track", "vegetation": "hedge"}


def _fields(
    height: int, width: int, num_classes: int, rng: np.random.Generator
) -> tuple[int, int, np.ndarray]:
    """A jittered grid of field centres: (rows, cols, centres (rows, cols, 2) in pixels)."""
    n_target = max(2 * num_classes, round(height * width / FIELD_AREA))
    cell = max(2.0, math.sqrt(height * width / n_target))
    gy = min(height, max(1, round(height / cell)))
    gx = min(width, max(1, round(width / cell)))
    while gy * gx < num_classes and (gy < height or gx < width):
        if gy < height and (gy / height <= gx / width or gx >= width):
            gy += 1
        else:
            gx += 1
    if gy * gx < num_classes:
        raise DataError(f"a {height}x{width} scene is too small for {num_classes} classes")
    ch, cw = height / gy, width / gx
    # Centres in the inner half of their cell: every cell keeps its own field.
    jitter = rng.uniform(0.25, 0.75, size=(gy, gx, 2))
    iy, ix = np.meshgrid(np.arange(gy), np.arange(gx), indexing="ij")
    centres = np.stack([(iy + jitter[..., 0]) * ch, (ix + jitter[..., 1]) * cw], axis=-1)
    return gy, gx, centres


def _nearest_two(
    rows: np.ndarray, width: int, gy: int, gx: int, centres: np.ndarray, height: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nearest and second-nearest field (flat index) and distances for the pixels of ``rows``."""
    ch, cw = height / gy, width / gx
    y = rows[:, None] + 0.5  # (r, 1)
    x = np.arange(width)[None, :] + 0.5  # (1, W)
    ci = np.minimum((y // ch).astype(int), gy - 1)
    cj = np.minimum((x // cw).astype(int), gx - 1)
    shape = (rows.size, width)
    d1 = np.full(shape, np.inf)
    d2 = np.full(shape, np.inf)
    f1 = np.zeros(shape, dtype=np.int64)
    f2 = np.zeros(shape, dtype=np.int64)
    for di in range(-2, 3):
        for dj in range(-2, 3):
            ni, nj = ci + di, cj + dj  # (r, 1), (1, W)
            valid = (ni >= 0) & (ni < gy) & (nj >= 0) & (nj < gx)  # (r, W)
            ni_c, nj_c = np.clip(ni, 0, gy - 1), np.clip(nj, 0, gx - 1)
            c = centres[ni_c, nj_c]  # (r, W, 2)
            d = np.hypot(c[..., 0] - y, c[..., 1] - x)
            d = np.where(valid, d, np.inf)
            f = ni_c * gx + nj_c
            closer = d < d1
            second = ~closer & (d < d2)
            d2 = np.where(closer, d1, np.where(second, d, d2))
            f2 = np.where(closer, f1, np.where(second, f, f2))
            d1 = np.where(closer, d, d1)
            f1 = np.where(closer, f, f1)
    f2 = np.where(np.isfinite(d2), f2, f1)  # a single field: nothing to mix with
    return f1, d1, f2, d2


def _row_blocks(height: int, width: int, bands: int) -> Iterator[tuple[int, int]]:
    rows = max(1, min(64, BLOCK_ELEMENTS // max(1, width * bands)))
    for r0 in range(0, height, rows):
        yield r0, min(height, r0 + rows)


def make_synthetic_scene(
    height: int,
    width: int,
    bands: int,
    num_classes: int,
    seed: int = 0,
    *,
    dtype: str = "uint16",
    out: str | os.PathLike | None = None,
    lines: int = 0,
    line_family: str = "man-made",
    border: float = BORDER,
    label_fraction: float = 1.0,
) -> Scene:
    """Make a deterministic synthetic scene.

    Args:
        height, width: image size in pixels.
        bands: spectral bands, evenly spaced over 400-2500 nm.
        num_classes: labelled classes K (ids 1..K in the ground truth).
        seed: the same seed gives the same scene (in memory or written with ``out``).
        dtype: stored dtype: ``uint16`` / ``int16`` / ``int32`` (reflectance x 10000; int16 keeps the
            negative values noise gives in dark absorption bands), ``uint8`` (x 400, clipped),
            ``float32`` / ``float64`` (reflectance).
        out: a ``.npy`` path: the cube is written there block by block through a memory map (never
            held in RAM), the ground truth to ``<stem>_gt.npy`` beside it, and the returned
            scene's cube is the read-only memmap. ``load_scene(out, gt=<stem>_gt.npy)`` reads
            them back.
        lines: thin straight features (roads, rivers) crossing the scene, 1 or 2 px wide, all of
            one extra class (id ``num_classes + 1``, named after ``line_family``). A pixel at least
            half covered by a line is labelled with it; partly covered pixels on either side mix the
            line's spectrum with the field's. 0 (default) draws none.
        line_family: material of the lines: ``man-made`` (a road), ``water`` (a river), ``soil``
            (a track) or ``vegetation`` (a hedge).
        border: width in pixels of the mixed-pixel band between two fields (default 2).
        label_fraction: share of each field kept in the ground truth, in (0, 1]: below 1 only the
            pixels nearest the field's centre stay labelled (the others become 0, unlabelled, with
            unchanged spectra), as in surveys that label the middle of fields. Lines stay labelled.

    Returns:
        The scene; ``extra`` records the seed, the value scale and, with ``out``, ``gt_path``.
    """
    if dtype not in SCALES:
        raise DataError(f"unsupported synthetic dtype {dtype!r}; choose from {', '.join(SCALES)}")
    if min(height, width, bands, num_classes) < 1:
        raise DataError("height, width, bands and num_classes must all be >= 1")
    if int(lines) != lines or lines < 0:
        raise DataError(f"lines must be a non-negative integer, got {lines!r}")
    if line_family not in FAMILY_PARAMS:
        raise DataError(f"unknown line_family {line_family!r}; choose from {', '.join(FAMILY_PARAMS)}")
    if not (math.isfinite(border) and border > 0):
        raise DataError(f"border must be a positive number of pixels, got {border!r}")
    if not (0.0 < label_fraction <= 1.0):
        raise DataError(f"label_fraction must be in (0, 1], got {label_fraction!r}")
    rng = np.random.default_rng(seed)
    wl = np.linspace(*WAVELENGTH_RANGE, bands)
    class_spec, names, families = class_spectra(num_classes, wl, rng)  # (K, B)
    background = np.stack(
        [material_spectrum(f, wl, draw_params(f, rng)) for f in ("soil", "man-made", "vegetation")]
    )  # (3, B) unlabelled materials

    gy, gx, centres = _fields(height, width, num_classes, rng)
    n_fields = gy * gx
    n_background = min(int(0.15 * n_fields), n_fields - num_classes)
    order = rng.permutation(n_fields)
    field_id = np.zeros(n_fields, dtype=np.int64)  # ground-truth id per field, 0 = background
    labelled = order[n_background:]
    field_id[labelled[:num_classes]] = np.arange(1, num_classes + 1)  # every class gets a field
    field_id[labelled[num_classes:]] = rng.integers(1, num_classes + 1, size=labelled.size - num_classes)
    bg_material = rng.integers(0, len(background), size=n_fields)
    base = np.where(field_id[:, None] > 0, class_spec[np.maximum(field_id - 1, 0)], background[bg_material])
    brightness = rng.normal(1.0, 0.04, size=(n_fields, 1))
    field_spec = (base * brightness * (1.0 + 0.01 * smooth_ripples(wl, rng, n_fields))).astype(
        np.float32
    )  # (F, B)

    transmission = atmosphere(wl).astype(np.float32)  # (B,)
    sigma = (NOISE * (1.0 + 10.0 * (1.0 - transmission))).astype(np.float32)  # (B,)
    scale = SCALES[dtype]
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None

    n_labels = num_classes + (1 if lines else 0)
    gt = np.zeros((height, width), dtype=np.uint8 if n_labels < 255 else np.uint16)
    # Drawn from their own stream, after everything else: a scene with lines is the same scene
    # with the lines painted over it.
    line_rng = np.random.default_rng([seed, 7919])
    line_geom = [
        (
            line_rng.uniform(0.2, 0.8) * height,  # a point of the line (row, col)
            line_rng.uniform(0.2, 0.8) * width,
            line_rng.uniform(0.0, np.pi),  # direction
            1.0 + (i % 2),  # width in pixels: 1, 2, 1, ...
        )
        for i in range(int(lines))
    ]
    line_spec = (
        material_spectrum(line_family, wl, draw_params(line_family, line_rng)).astype(np.float32)
        if lines
        else None
    )  # (B,)
    label_radius = math.sqrt(label_fraction * (height / gy) * (width / gx) / math.pi)

    def line_cover(rows: np.ndarray) -> np.ndarray:
        """Share of each pixel of ``rows`` a line covers, (r, W) in [0, 1] (the largest over lines)."""
        y = rows[:, None] + 0.5  # (r, 1)
        x = np.arange(width)[None, :] + 0.5  # (1, W)
        cover = np.zeros((rows.size, width), dtype=np.float32)
        for y0, x0, theta, w in line_geom:
            d = np.abs((x - x0) * math.sin(theta) - (y - y0) * math.cos(theta))  # (r, W) distance to the line
            np.maximum(cover, np.clip(w / 2 + 0.5 - d, 0.0, 1.0), out=cover)
        return cover

    def blocks() -> Iterator[tuple[int, int, np.ndarray]]:
        for r0, r1 in _row_blocks(height, width, bands):
            f1, d1, f2, d2 = _nearest_two(np.arange(r0, r1), width, gy, gx, centres, height)
            gt[r0:r1] = field_id[f1]
            if label_fraction < 1.0:
                gt[r0:r1][d1 > label_radius] = 0
            alpha = (0.5 * np.clip(1.0 - (d2 - d1) / border, 0.0, 1.0)).astype(np.float32)  # (r, W)
            block = field_spec[f1]  # (r, W, B)
            block *= (1.0 - alpha)[..., None]
            other = field_spec[f2]
            other *= alpha[..., None]
            block += other
            del other
            if line_geom:
                cover = line_cover(np.arange(r0, r1))  # (r, W)
                block *= (1.0 - cover)[..., None]
                block += cover[..., None] * line_spec
                gt[r0:r1][cover >= 0.5] = num_classes + 1
            noise = np.empty_like(block)
            pixel_scale = np.empty((r1 - r0, width, 1), dtype=np.float32)
            for i, row in enumerate(range(r0, r1)):
                row_rng = np.random.default_rng([seed, row])  # per row: the same cube for any block size
                pixel_scale[i, :, 0] = row_rng.normal(1.0, 0.02, size=width)
                row_rng.standard_normal(out=noise[i], dtype=np.float32)
            block *= pixel_scale
            block *= transmission
            noise *= sigma
            block += noise
            del noise
            if info is not None:
                block *= scale
                np.rint(block, out=block)
                np.clip(block, info.min, info.max, out=block)
            yield r0, r1, block.astype(dtype)

    extra = {
        "generator": "blmkd.data.synthetic v1",
        "seed": seed,
        "scale": scale,
        "value": f"reflectance x {scale:g}" if scale != 1 else "reflectance",
        "families": families,
        "fields": int(n_fields),
    }
    if lines:
        names = [*names, LINE_NAMES[line_family]]
        extra["families"] = [*families, line_family]
        extra["lines"] = int(lines)
    if border != BORDER:
        extra["border"] = float(border)
    if label_fraction < 1.0:
        extra["label_fraction"] = float(label_fraction)
    if out is None:
        cube = np.empty((height, width, bands), dtype=dtype)
        for r0, r1, block in blocks():
            cube[r0:r1] = block
        source = f"synthetic:seed={seed}"
    else:
        out = Path(out)
        if out.suffix != ".npy":
            raise DataError(f"out must be a .npy path, got {out}")
        gt_path = out.with_name(out.stem + "_gt.npy")
        with atomic_path(out, suffix=".npy") as tmp:
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(height, width, bands))
            for r0, r1, block in blocks():
                mm[r0:r1] = block
            mm.flush()
            del mm
        with atomic_path(gt_path, suffix=".npy") as tmp:
            np.save(tmp, gt)
        cube = np.load(out, mmap_mode="r")
        source = str(out)
        extra["gt_path"] = str(gt_path)

    return scene_from_arrays(
        "synthetic",
        cube,
        gt,
        class_names=dict(enumerate(names, start=1)),
        source=source,
        wavelengths=[float(w) for w in wl],
        extra=extra,
        check_finite=False,
    )
