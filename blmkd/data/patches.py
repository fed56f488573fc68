"""P×P windows around pixels, gathered in batches from a once-padded cube.

The cube is padded once with reflection (``np.pad(mode="reflect")``: the edge pixel is not
repeated) and kept channels-first as a torch tensor ``(B, H + 2r, W + 2r)``. A batch of windows is
one fancy index into a strided sliding-window *view* of that tensor's memory: the view's strides
are the precomputed offsets of a window's elements, so there is no per-sample Python loop and no
copy of the cube per sample, and the cost depends on the batch, not on the scene size.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from blmkd.errors import DataError

_PAD_CHUNK_BYTES = 64 << 20  # bands are padded in chunks of about this size


def check_patch_size(patch_size: int, height: int, width: int) -> int:
    """Return ``patch_size`` if it is a positive odd integer no larger than the scene, else raise DataError."""
    if isinstance(patch_size, bool) or int(patch_size) != patch_size:
        raise DataError(f"patch size must be an integer, got {patch_size!r}")
    p = int(patch_size)
    if p < 1 or p % 2 == 0:
        raise DataError(f"patch size must be a positive odd number, got {p}")
    if p > min(height, width):
        raise DataError(f"patch size {p} is larger than the scene ({height}×{width} pixels)")
    return p


def labelled_coords(mask) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns (int64) of the True pixels of an (H, W) mask, in row-major order."""
    rows, cols = np.nonzero(np.asarray(mask, dtype=bool))
    return rows.astype(np.int64), cols.astype(np.int64)


class PatchExtractor:
    """Gathers (N, B, P, P) windows centred at given pixels of a (H, W, B) cube.

    Args:
        cube: (H, W, B) numpy array, typically float32 standardized or uint8 bytes; its dtype is
            kept. A np.memmap is read band-chunk by band-chunk while padding.
        patch_size: odd window size P, at most min(H, W).
        device: where the padded cube lives and windows are gathered (default CPU).

    Attributes:
        padded: (B, H + 2r, W + 2r) contiguous tensor, r = P // 2.
    """

    def __init__(self, cube, patch_size: int, *, device: str | torch.device | None = None) -> None:
        if isinstance(cube, torch.Tensor):
            cube = cube.detach().cpu().numpy()
        if getattr(cube, "ndim", 0) != 3:
            raise DataError(f"cube must be (H, W, bands), got shape {tuple(getattr(cube, 'shape', ()))}")
        h, w, b = (int(s) for s in cube.shape)
        self.patch_size = check_patch_size(patch_size, h, w)
        self.height, self.width, self.bands = h, w, b
        r = self.radius = self.patch_size // 2

        padded = np.empty((b, h + 2 * r, w + 2 * r), dtype=cube.dtype)  # (B, Hp, Wp)
        step = max(1, _PAD_CHUNK_BYTES // max(1, h * w * cube.dtype.itemsize))
        for b0 in range(0, b, step):
            chunk = np.moveaxis(np.asarray(cube[:, :, b0 : b0 + step]), 2, 0)  # (b, H, W)
            padded[b0 : b0 + step] = np.pad(chunk, ((0, 0), (r, r), (r, r)), mode="reflect")
        dev = torch.device(device) if device is not None else torch.device("cpu")
        self._place(torch.from_numpy(padded).to(dev), dev)  # on the CPU it shares memory with `padded`

    def _place(self, padded: torch.Tensor, device: torch.device) -> None:
        """Keep the padded cube ``(B, Hp, Wp)`` on ``device`` and the window view of it."""
        self.padded, self.device = padded, device
        p = self.patch_size
        if device.type == "cpu":
            # (H, W, B, P, P) strided view of the padded memory; indexing it copies only the windows.
            self._windows = sliding_window_view(padded.numpy(), (p, p), axis=(1, 2)).transpose(1, 2, 0, 3, 4)
        else:
            self._windows = padded.unfold(1, p, 1).unfold(2, p, 1).permute(1, 2, 0, 3, 4)  # (H, W, B, P, P)

    def to(self, device: str | torch.device) -> PatchExtractor:
        """This extractor on ``device``: the padded cube copied there as it is (in its own dtype,
        not padded again); ``self`` where it already is."""
        dev = torch.device(device)
        if dev == self.device:
            return self
        moved = object.__new__(PatchExtractor)
        moved.patch_size, moved.radius = self.patch_size, self.radius
        moved.height, moved.width, moved.bands = self.height, self.width, self.bands
        moved._place(self.padded.to(dev), dev)
        return moved

    @property
    def dtype(self) -> torch.dtype:
        return self.padded.dtype

    def gather(self, rows, cols) -> torch.Tensor:
        """(N, B, P, P) windows centred at (rows[i], cols[i]), same dtype as the cube.

        Args:
            rows, cols: N pixel coordinates in the unpadded scene (numpy arrays, lists or tensors).
        """
        rows, cols = _as_index(rows), _as_index(cols)
        if rows.shape != cols.shape:
            raise ValueError(f"rows and cols differ in length: {rows.shape} vs {cols.shape}")
        if rows.size and (
            rows.min() < 0 or rows.max() >= self.height or cols.min() < 0 or cols.max() >= self.width
        ):
            raise IndexError(f"pixel coordinates outside the {self.height}×{self.width} scene")
        if self.device.type == "cpu":
            return torch.from_numpy(self._windows[rows, cols])
        r = torch.from_numpy(rows).to(self.device)
        c = torch.from_numpy(cols).to(self.device)
        return self._windows[r, c]

    def gather_ref(self, rows, cols) -> torch.Tensor:
        """Slow, obvious reference of :meth:`gather`: one slice of the padded cube per pixel."""
        p = self.patch_size
        wins = [
            self.padded[:, int(i) : int(i) + p, int(j) : int(j) + p]
            for i, j in zip(_as_index(rows), _as_index(cols))
        ]
        if not wins:
            return self.padded.new_empty((0, self.bands, p, p))
        return torch.stack(wins)


def _as_index(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"coordinates must be a 1-D integer array, got {a.dtype} with shape {a.shape}")
    return a.astype(np.int64, copy=False)
