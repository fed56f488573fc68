"""Build models by preset name: the facade over the registry that teachers and students fill.

Importing this module imports every model family (:mod:`blmkd.teachers`, :mod:`blmkd.students`),
which registers their presets in :mod:`blmkd.registry`.

A model built here carries ``model.blmkd_name`` (the preset) and ``model.config`` (a dataclass),
which is what a checkpoint stores to rebuild it without unpickling anything.
"""

from __future__ import annotations

import dataclasses

from torch import nn

import blmkd.students  # noqa: F401  (registers the student presets)
import blmkd.teachers  # noqa: F401  (registers the teacher presets)
from blmkd.errors import ModelError
from blmkd.registry import REGISTRY, ModelEntry


def list_models(family: str | None = None) -> list[str]:
    """Names of the registered presets, optionally only ``"teacher"`` or ``"student"`` ones."""
    return sorted(n for n, e in REGISTRY.items() if family is None or e.family == family)


def model_entry(name: str) -> ModelEntry:
    if name not in REGISTRY:
        raise ModelError(f"unknown model preset {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


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
