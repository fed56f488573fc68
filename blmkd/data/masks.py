"""Boolean pixel masks: dilation by a window radius (the buffer around training pixels, leakage)."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import maximum_filter


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within Chebyshev distance ``radius`` of a True pixel (the mask itself for radius 0): with
    ``radius = P // 2``, the pixels whose P×P window holds a True pixel."""
    if radius <= 0:
        return mask.copy()
    return maximum_filter(mask, size=2 * radius + 1, mode="constant", cval=False)
