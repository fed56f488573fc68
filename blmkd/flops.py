"""Model size and compute: parameter counts and FLOPs per sample.

FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode`, which counts only the matmul-like
aten ops (mm, addmm, bmm, baddbmm, convolution, scaled-dot-product attention), each multiply-add as
2 FLOPs. Elementwise work (activations, normalization, the SSM kernel's exponentials, softmax) is
not counted; for the models here it is a few percent of the total.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, example_input: torch.Tensor) -> int:
    """FLOPs of one forward pass per sample: counted on ``example_input`` and divided by its batch.

    Every table blmkd prints counts at batch 1: the SSA-Mamba teachers do some work once per call
    (on their weights, not per sample), which a larger batch amortizes (``ssa_mamba_t``: 13.03 M
    per patch at batch 1, 12.79 M at batch 2, 12.56 M at batch 64), so counts at other batches
    would not match across commands.

    The model runs in eval mode under ``torch.no_grad`` (its training flag is restored afterwards).
    Only matmul/convolution/attention FLOPs are counted (see the module docstring).
    """
    batch = example_input.shape[0]
    if batch < 1:
        raise ValueError("example_input needs a batch of at least one sample")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example_input)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // batch
