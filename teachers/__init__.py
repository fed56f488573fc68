"""Teacher models. Importing this package registers their presets in :mod:`blmkd.registry`."""

from blmkd.teachers.ssa_mamba import SSAMamba, SSAMambaConfig

__all__ = ["SSAMamba", "SSAMambaConfig"]
