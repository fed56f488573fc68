"""Teacher models. Importing this package registers their presets in :mod:`blmkd.models`."""

from blmkd.teachers.ssa_mamba import SSAMamba, SSAMambaConfig, ssm_conv, ssm_kernel, ssm_scan_ref

__all__ = ["SSAMamba", "SSAMambaConfig", "ssm_conv", "ssm_kernel", "ssm_scan_ref"]
