"""The model preset registry that teachers and students fill.

A model family registers each preset with the :func:`register_model` decorator; the preset's name
is the decorated function's ``__name__`` and the function is a factory
``fn(bands, num_classes, **overrides) -> nn.Module``. Every family registers a tiny ``*_test``
preset so tests can parametrize over :func:`blmkd.models.list_models`. Look presets up and build
them through :mod:`blmkd.models`, which imports every family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

FAMILIES = ("teacher", "student")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str  # "teacher" or "student"
    factory: Callable[..., nn.Module]
    description: str


REGISTRY: dict[str, ModelEntry] = {}


def register_model(*, family: str, description: str = ""):
    """Decorator: register ``fn(bands, num_classes, **overrides) -> nn.Module`` as preset ``fn.__name__``.

    Args:
        family: ``"teacher"`` or ``"student"``.
        description: one line for ``blmkd models``; the first line of the docstring by default.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        REGISTRY[name] = ModelEntry(
            name, family, fn, description or (fn.__doc__ or "").strip().split("\n")[0]
        )
        return fn

    return deco
