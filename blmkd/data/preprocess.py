"""Per-band standardization and byte quantization, fitted on training pixels only.

Two views of the same scene feed the models: float32 ``(x − mean) / std`` for the teachers, and
uint8 bytes ``round(clip((x − lo) / (hi − lo), 0, 1) · 255)`` for the byte-latent students. The
statistics come from the training pixels alone, so nothing about the test pixels leaks into the
model. ``dequant_affine`` links the two views: ``u8 · scale + offset ≈ standardize(x)``, which lets a
byte model fold the dequantization into its first layer.

Cubes are processed in blocks of rows, so a np.memmap cube is never loaded whole as float.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from blmkd.errors import DataError

EPS = 1e-6  # floor of std and of hi − lo, so constant bands do not divide by zero
_BLOCK_BYTES = 64 << 20  # float32 working set per row block


@dataclass
class Preprocessing:
    """Fitted per-band statistics; all arrays are (bands,) float32.

    Attributes:
        mean: mean of the training pixels.
        std: standard deviation of the training pixels, at least ``EPS``.
        lo: lower end of the byte range (the ``clip[0]`` percentile of the training pixels).
        hi: upper end of the byte range (the ``clip[1]`` percentile).
        clip: the percentiles ``lo`` and ``hi`` were taken at (recorded, not used after fitting).
    """

    mean: np.ndarray
    std: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    clip: tuple[float, float] = (0.5, 99.5)

    def __post_init__(self) -> None:
        for name in ("mean", "std", "lo", "hi"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float32).reshape(-1))
        sizes = {len(self.mean), len(self.std), len(self.lo), len(self.hi)}
        if len(sizes) != 1:
            raise DataError(f"preprocessing arrays differ in length: {sorted(sizes)}")
        self.std = np.maximum(self.std, np.float32(EPS))
        self.clip = (float(self.clip[0]), float(self.clip[1]))

    @property
    def bands(self) -> int:
        return len(self.mean)

    def _range(self) -> np.ndarray:
        return np.maximum(self.hi - self.lo, np.float32(EPS))  # (bands,)

    def standardize(self, cube) -> np.ndarray:
        """``(x − mean) / std`` as float32, same shape as ``cube`` (…, bands)."""
        return self._blockwise(cube, np.float32, lambda x: (x - self.mean) / self.std)

    def to_bytes(self, cube) -> np.ndarray:
        """``round(clip((x − lo) / (hi − lo), 0, 1) · 255)`` as uint8, same shape as ``cube``."""
        gain = (np.float32(255.0) / self._range()).astype(np.float32)

        def f(x: np.ndarray) -> np.ndarray:
            y = (x - self.lo) * gain
            np.clip(y, 0.0, 255.0, out=y)
            return np.rint(y, out=y)

        return self._blockwise(cube, np.uint8, f)

    def dequant_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, offset), (bands,) float32 each, with ``u8 · scale + offset ≈ standardize(x)``.

        From ``x ≈ lo + u8 · (hi − lo) / 255``: scale = (hi − lo) / (255 · std) and
        offset = (lo − mean) / std. The error is at most scale / 2 for x inside [lo, hi]; values
        outside the range were clipped by ``to_bytes``.
        """
        rng = self._range().astype(np.float64)
        std = self.std.astype(np.float64)
        scale = rng / (255.0 * std)
        offset = (self.lo.astype(np.float64) - self.mean) / std
        return scale.astype(np.float32), offset.astype(np.float32)

    def to_dict(self) -> dict:
        """JSON-safe form (plain lists); :meth:`from_dict` reads it back."""
        return {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "lo": self.lo.tolist(),
            "hi": self.hi.tolist(),
            "clip": list(self.clip),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        try:
            return cls(
                mean=d["mean"], std=d["std"], lo=d["lo"], hi=d["hi"], clip=tuple(d.get("clip", (0.5, 99.5)))
            )
        except KeyError as exc:
            raise DataError(f"preprocessing record lacks {exc.args[0]!r}") from None

    def _blockwise(self, cube, dtype, f) -> np.ndarray:
        # Row blocks keep the float32 working set bounded; a memmap is read one block at a time.
        if cube.ndim < 1 or cube.shape[-1] != self.bands:
            raise DataError(
                f"cube has {cube.shape[-1] if cube.ndim else 0} bands, preprocessing was fitted on {self.bands}"
            )
        out = np.empty(cube.shape, dtype=dtype)
        if cube.ndim == 1 or cube.shape[0] == 0:
            out[...] = f(np.asarray(cube, dtype=np.float32))
            return out
        row_bytes = max(1, int(np.prod(cube.shape[1:])) * 4)
        step = max(1, _BLOCK_BYTES // row_bytes)
        for i in range(0, cube.shape[0], step):
            out[i : i + step] = f(np.asarray(cube[i : i + step], dtype=np.float32))
        return out


def fit_preprocessing(cube, train_mask, *, clip: tuple[float, float] | None = (0.5, 99.5)) -> Preprocessing:
    """Fit mean, std and the byte range per band on the training pixels only.

    Args:
        cube: (H, W, bands) array of any dtype (a memmap is fine: only training pixels are read).
        train_mask: (H, W) bool, the training pixels.
        clip: percentiles of the byte range; ``None`` uses the training minimum and maximum.
    """
    mask = np.asarray(train_mask, dtype=bool)
    if cube.ndim != 3 or mask.shape != tuple(cube.shape[:2]):
        raise DataError(f"train mask {mask.shape} does not match the cube {tuple(cube.shape)}")
    if not mask.any():
        raise DataError("cannot fit preprocessing: the training mask is empty")
    rows = np.flatnonzero(mask.any(axis=1))
    # Read only the rows that hold training pixels (one row at a time for a memmap cube).
    x = np.concatenate([np.asarray(cube[r][mask[r]], dtype=np.float64) for r in rows])  # (N, bands)
    if not np.isfinite(x).all():
        raise DataError("training pixels contain NaN or Inf values; load the scene with --fill")
    lo_p, hi_p = clip if clip is not None else (0.0, 100.0)
    if not 0.0 <= lo_p < hi_p <= 100.0:
        raise DataError(f"clip percentiles must satisfy 0 <= lo < hi <= 100, got {clip}")
    lo, hi = np.percentile(x, [lo_p, hi_p], axis=0)
    return Preprocessing(mean=x.mean(axis=0), std=x.std(axis=0), lo=lo, hi=hi, clip=(lo_p, hi_p))
