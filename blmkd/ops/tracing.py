"""Helpers for graphs that are traced (ONNX export) or compiled (``torch.compile``)."""

from __future__ import annotations

import warnings

import torch


def static(v, kind=int):
    """``v`` as a Python ``int``/``bool``. Patch geometry and flags are fixed in an exported graph, so
    the tracer's warning about freezing a traced value into a constant does not apply here."""
    if torch.compiler.is_compiling():  # no tracer warnings there, and a warnings context breaks the graph
        return kind(v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return kind(v)
