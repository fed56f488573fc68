"""Kernels the models are built from, each fast kernel beside its slow, obvious reference.

=====================  ============================  ===================================
module                 fast                          reference
=====================  ============================  ===================================
:mod:`.ssm`            ``ssm_kernel`` + ``ssm_conv``  ``ssm_scan_ref`` (teacher's LTI SSM)
:mod:`.ssd`            ``ssd_dual``                  ``ssd_scan_ref`` (students' SSD)
:mod:`.conv`           ``causal_depthwise_conv``     ``causal_depthwise_conv_ref``
:mod:`.norm`           ``layer_norm``                ``nn.LayerNorm``
=====================  ============================  ===================================

:mod:`.chunked` runs a model's inference in chunks (:class:`ChunkedInference`) and :mod:`.tracing`
holds what traced and compiled graphs need. The models import these modules directly.
"""

from blmkd.ops.chunked import ChunkedInference
from blmkd.ops.conv import causal_depthwise_conv, causal_depthwise_conv_ref
from blmkd.ops.norm import NARROW_LN_ROWS, layer_norm
from blmkd.ops.ssd import ssd_dual, ssd_scan_ref
from blmkd.ops.ssm import ssm_conv, ssm_discretize, ssm_kernel, ssm_scan_ref

__all__ = [
    "NARROW_LN_ROWS",
    "ChunkedInference",
    "causal_depthwise_conv",
    "causal_depthwise_conv_ref",
    "layer_norm",
    "ssd_dual",
    "ssd_scan_ref",
    "ssm_conv",
    "ssm_discretize",
    "ssm_kernel",
    "ssm_scan_ref",
]
