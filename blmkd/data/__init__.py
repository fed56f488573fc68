"""Data layer: readers, the dataset registry, preprocessing, splits and patch extraction."""

from blmkd.data.scene import UNLABELLED, Scene

__all__ = ["Scene", "UNLABELLED"]
