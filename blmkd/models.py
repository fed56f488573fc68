"""One model registry shared by teachers and students.

Each model family registers its presets with :func:`register_model`; a preset is a factory
``fn(bands, num_classes, **overrides) -> nn.Module``. Every family registers a tiny ``*_test``
preset so tests can parametrize over :func:`list_models`.

A model built here carries ``model.blmkd_name`` (the preset) and ``model.config`` (a dataclass),
which is what a checkpoint stores to rebuild it without unpickling anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from blmkd.errors import ModelError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str  # "teacher" or "student"
    factory: Callable[..., nn.Module]
    description: str


_REGISTRY: dict[str, ModelEntry] = {}


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


def register_model(name: str, family: str, description: str = ""):
    """Decorator: register ``fn(bands, num_classes, **overrides) -> nn.Module`` as preset ``name``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(
            name, family, fn, description or (fn.__doc__ or "").strip().split("\n")[0]
        )
        return fn

    return deco


def _ensure_loaded() -> None:
    # Importing the families registers their presets.
    import blmkd.students  # noqa: F401
    import blmkd.teachers  # noqa: F401


def list_models(family: str | None = None) -> list[str]:
    """Names of the registered presets, optionally only ``"teacher"`` or ``"student"`` ones."""
    _ensure_loaded()
    return sorted(n for n, e in _REGISTRY.items() if family is None or e.family == family)


def model_entry(name: str) -> ModelEntry:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise ModelError(f"unknown model preset {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_model(name: str, bands: int, num_classes: int, **overrides) -> nn.Module:
    """Build preset ``name`` for ``bands`` input bands and ``num_classes`` classes."""
    entry = model_entry(name)
    try:
        model = entry.factory(bands=bands, num_classes=num_classes, **overrides)
    except TypeError as exc:
        raise ModelError(f"bad options for model {name!r}: {exc}") from None
    model.blmkd_name = name
    model.blmkd_family = entry.family
    return model


def model_config_dict(model: nn.Module) -> dict:
    """The model's config dataclass as a plain dict (what checkpoints store)."""
    return dataclasses.asdict(model.config)
