"""`blmkd models`: the registered model presets with their size and compute."""

from __future__ import annotations

from typing import Annotated

import torch
import typer
from rich.table import Table

from blmkd.cli.common import console
from blmkd.errors import ModelError
from blmkd.flops import count_flops, count_params
from blmkd.models import create_model, list_models, model_entry

FAMILIES = ("teacher", "student")


def models(
    bands: Annotated[int, typer.Option("--bands", help="Spectral bands of the input patches.")] = 200,
    classes: Annotated[int, typer.Option("--classes", help="Number of output classes.")] = 16,
    patch: Annotated[
        int, typer.Option("--patch", help="Odd patch (window) size P; FLOPs are per P×P patch.")
    ] = 7,
    family: Annotated[
        str | None, typer.Option("--family", help="Only this family: teacher | student.")
    ] = None,
) -> None:
    """List every registered preset: family, parameters, FLOPs per pixel (one P×P patch) and description."""
    if family is not None and family not in FAMILIES:
        raise ModelError(f"--family must be one of {', '.join(FAMILIES)}, not {family!r}")
    if patch < 1 or patch % 2 == 0:
        raise ModelError(f"--patch must be a positive odd number, got {patch}")
    if bands < 1 or classes < 2:
        raise ModelError(f"need --bands >= 1 and --classes >= 2, got {bands} and {classes}")

    t = Table(title=f"models ({bands} bands, {classes} classes, {patch}×{patch} patches)")
    t.add_column("name")
    t.add_column("family")
    t.add_column("params", justify="right")
    t.add_column("FLOPs/pixel", justify="right")
    t.add_column("description")
    for name in list_models(family):
        model = create_model(name, bands, classes)
        kind = getattr(model, "input_kind", "float")
        dtype = torch.uint8 if kind == "uint8" else torch.float32
        x = torch.zeros(1, bands, patch, patch, dtype=dtype)
        t.add_row(
            name,
            model_entry(name).family,
            _si(count_params(model)),
            _si(count_flops(model, x)),
            model_entry(name).description,
        )
    console.print(t)
    console.print("FLOPs count matmuls and convolutions only (2 per multiply-add), per classified pixel.")


def _si(n: int) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return str(n)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
