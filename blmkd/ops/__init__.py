"""Kernels the models are built from, each fast kernel beside its slow, obvious reference.

- :mod:`.ssm`, the teacher's LTI SSM: ``ssm_kernel`` + ``ssm_conv`` (a Toeplitz matmul), reference
  ``ssm_scan_ref``;
- :mod:`.ssd`, the students' selective SSM: ``ssd_dual``, reference ``ssd_scan_ref``;
- :mod:`.conv`: ``causal_depthwise_conv`` (shifted multiply-adds), reference
  ``causal_depthwise_conv_ref`` (``F.conv1d``);
- :mod:`.norm`: ``layer_norm`` (two reductions for many narrow rows on a GPU), reference
  ``nn.LayerNorm``.

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
