"""Student models. Importing this package registers their presets in :mod:`blmkd.models`."""

from blmkd.students.blm import BLMConfig, BLMStudent, ssd_dual, ssd_scan_ref

__all__ = ["BLMConfig", "BLMStudent", "ssd_dual", "ssd_scan_ref"]
