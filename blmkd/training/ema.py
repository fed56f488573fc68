"""An exponential moving average of a model's weights, validated and kept in their place (``--ema``)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from blmkd.checkpoint import Checkpoint
from blmkd.errors import TrainingError


class WeightEMA:
    """Exponential moving average of a model's weights and buffers, updated after every optimizer step.

    ``decay`` is per step, warmed up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates so the
    first epochs are not dominated by the random initialisation. BatchNorm running statistics are
    averaged like the weights; integer buffers (``num_batches_tracked``) are copied.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._pairs = list(zip(self.module.state_dict().values(), model.state_dict().values(), strict=True))

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, m in self._pairs:
            if e.dtype.is_floating_point:
                e.lerp_(m.detach(), 1.0 - d)
            else:
                e.copy_(m)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The averaged state, keyed ``ema.<name>`` (stored in ``last.safetensors`` for ``--resume``)."""
        return {f"ema.{k}": v for k, v in self.module.state_dict().items()}

    def state_from(self, ck: Checkpoint) -> dict[str, torch.Tensor]:
        """The averaged state stored by :meth:`tensors` in ``ck``."""
        state = {k: ck.extra(f"ema.{k}") for k in self.module.state_dict()}
        if any(v is None for v in state.values()):
            raise TrainingError(
                f"--resume with --ema: {ck.path} holds no averaged weights (trained without --ema?)"
            )
        return state
