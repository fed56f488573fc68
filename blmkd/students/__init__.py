"""Student models. Importing this package registers their presets in :mod:`blmkd.registry`."""

from blmkd.students.blm import BLMConfig, BLMStudent

__all__ = ["BLMConfig", "BLMStudent"]
