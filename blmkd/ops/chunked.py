"""Inference in chunks: the same numbers as the whole batch, in bounded memory (a model mixin)."""

from __future__ import annotations

import torch


class ChunkedInference:
    """Mixin: inference batches larger than ``infer_chunk`` run in chunks of it when no graph is
    being recorded (no autograd, no tracing or compiling).

    The numbers are the same (every layer is per sample in eval mode), but each intermediate stays a
    few MB, which the allocator reuses from call to call; whole-batch intermediates of tens of MB are
    mmapped and page-faulted in afresh on every call. 0 disables it. Used as
    ``if self._chunked(x): return self._in_chunks(self.forward, x, ...)``.
    """

    infer_chunk = 256
    #: The same on a GPU, where the page-fault cost does not exist and big launches pay: chunks only
    #: bound the memory of huge batches (a 65,536-window student batch is one call).
    infer_chunk_gpu = 65536

    def _chunked(self, x: torch.Tensor) -> bool:
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.is_grad_enabled():
            return False
        return 0 < self._chunk_size(x) < x.shape[0]

    def _chunk_size(self, x: torch.Tensor) -> int:
        return self.infer_chunk if x.device.type == "cpu" else self.infer_chunk_gpu

    def _in_chunks(self, fn, x: torch.Tensor, *args):
        """``fn(x, *args)`` computed on chunks of ``infer_chunk`` and concatenated (tuples part by part)."""
        outs = [fn(c, *args) for c in x.split(self._chunk_size(x))]
        if isinstance(outs[0], tuple):
            return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))
        return torch.cat(outs)
