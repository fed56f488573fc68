"""`blmkd datasets`, `blmkd datasets info` and `blmkd split`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from blmkd.bundle import DataOptions
from blmkd.cli.common import console
from blmkd.cli.options import DATA, command
from blmkd.data import load_scene
from blmkd.data.registry import list_datasets
from blmkd.data.scene import with_class_names
from blmkd.data.splits import make_split
from blmkd.io import atomic_write_json

datasets_app = typer.Typer(
    help="List the registered datasets (`blmkd datasets`) or describe one (`blmkd datasets info NAME`).",
    no_args_is_help=False,
)

Name = Annotated[str, typer.Argument(help="Registry name (see `blmkd datasets`) or path to a cube file.")]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Also write the result as JSON to this path.")]
Block = Annotated[
    int | None, typer.Option("--block", help="Disjoint split: block side in pixels (default max(P+3, 10)).")
]


@datasets_app.callback(invoke_without_command=True)
def datasets(ctx: typer.Context) -> None:
    """List the registered datasets: name, sensor, size, bands, classes and whether the files are here."""
    if ctx.invoked_subcommand is not None:
        return
    t = Table(title="datasets")
    for col in ("name", "sensor", "size", "bands", "classes", "cached"):
        t.add_column(col, justify="right" if col in ("bands", "classes") else "left")
    for row in list_datasets():
        cached = row.get("cached")
        where = (
            "embedded"
            if row.get("embedded")
            else ("yes" if cached else ("no" if row.get("downloadable", True) else "no (manual)"))
        )
        t.add_row(
            str(row.get("name", "?")),
            str(row.get("sensor", "")).split(",")[0],
            _size(row),
            str(row.get("bands", "?")),
            str(row.get("num_classes", row.get("classes", "?"))),
            where,
        )
    console.print(t)


def _size(row: dict) -> str:
    shape = row.get("shape") or row.get("size")
    if isinstance(shape, list | tuple) and len(shape) >= 2:
        return f"{shape[0]}×{shape[1]}"
    if "height" in row and "width" in row:
        return f"{row['height']}×{row['width']}"
    return "—"


#: The options that read a scene (not the ones that split it).
SCENE = DATA.but(drop=("dataset", "strategy", "train", "val", "seed", "patch", "buffer", "allow_small", "train_map",
                       "test_map"))  # fmt: skip


@datasets_app.command("info")
@command(data=SCENE)
def info(name: Name, json_out: JsonOut = None, *, data: DataOptions) -> None:
    """Describe a scene: shape, dtype, value range, bands, and its classes (original ids, names, counts)."""
    scene = load_scene(name, data.gt, cube_key=data.cube_key, gt_key=data.gt_key, fill=data.fill)
    if data.class_names is not None:
        scene = with_class_names(scene, data.class_names)
    lo, hi = _value_range(scene.cube)
    facts = {**scene.facts(), "value_range": [lo, hi], "labelled": int(scene.class_counts().sum())}
    if scene.wavelengths:
        facts["wavelength_range_nm"] = [min(scene.wavelengths), max(scene.wavelengths)]

    con = console
    con.print(f"[bold]{scene.name}[/bold]  ({scene.source or 'files'})")
    con.print(f"shape     {scene.height} × {scene.width} pixels × {scene.bands} bands")
    con.print(
        f"dtype     {scene.cube.dtype}{' (memory-mapped)' if isinstance(scene.cube, np.memmap) else ''}"
    )
    con.print(f"values    {lo:g} .. {hi:g}")
    if "wavelength_range_nm" in facts:
        wl = facts["wavelength_range_nm"]
        con.print(f"bands     {wl[0]:.0f}–{wl[1]:.0f} nm")
    total = scene.height * scene.width
    con.print(f"labelled  {facts['labelled']} of {total} pixels in {scene.num_classes} classes")
    t = Table(title="classes")
    for col in ("index", "id", "name", "pixels"):
        t.add_column(col, justify="left" if col == "name" else "right")
    for c in scene.classes():
        t.add_row(str(c["index"]), str(c["id"]), c["name"], str(c["count"]))
    con.print(t)
    if json_out is not None:
        atomic_write_json(json_out, facts)


def _value_range(cube) -> tuple[float, float]:
    # Row blocks: a memory-mapped cube is never read whole.
    step = max(1, (16 << 20) // max(1, int(np.prod(cube.shape[1:]))))
    lo, hi = np.inf, -np.inf
    for i in range(0, cube.shape[0], step):
        block = np.asarray(cube[i : i + step])
        lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
    return lo, hi


@command(data=DATA.but(drop=("dataset",)))
def split(name: Name, block: Block = None, json_out: JsonOut = None, *, data: DataOptions) -> None:
    """Make a seeded train/val/test split and print it per class, with its leakage.

    Leakage is the share of test pixels whose P×P window contains a training pixel; the disjoint
    strategy keeps it at 0.
    """
    scene = load_scene(name, data.gt, cube_key=data.cube_key, gt_key=data.gt_key, fill=data.fill)
    if data.class_names is not None:
        scene = with_class_names(scene, data.class_names)
    strategy, train, seed, patch = data.strategy, data.train, data.seed, data.patch
    amount: float | int = train
    if strategy in ("per-class", "disjoint") and float(train).is_integer() and train >= 1:
        amount = int(train)
    sp = make_split(scene, strategy, train=amount, val=data.val, seed=seed, patch_size=patch, buffer=data.buffer,
                    allow_small=data.allow_small, train_map=data.train_map, test_map=data.test_map, block=block)  # fmt: skip
    rows = sp.summary(scene)
    counts = scene.class_counts()

    t = Table(title=f"{scene.name}: {strategy} split, seed {seed}")
    for col in ("id", "name", "pixels", "train", "val", "test"):
        t.add_column(col, justify="left" if col == "name" else "right")
    for r, n in zip(rows, counts):
        t.add_row(str(r["id"]), r["name"], str(int(n)), str(r["train"]), str(r["val"]), str(r["test"]))
    totals = {key: sum(r[key] for r in rows) for key in ("train", "val", "test")}
    t.add_row(
        "",
        "total",
        str(int(counts.sum())),
        *(str(totals[k]) for k in ("train", "val", "test")),
        end_section=True,
    )
    console.print(t)
    dropped = int(counts.sum()) - sum(totals.values())
    if dropped:
        console.print(
            f"buffer    {dropped} labelled pixels within {sp.spec['buffer']} px of training pixels left out"
        )
    console.print(
        f"leakage   {100 * sp.leakage:.2f}% of test pixels have a training pixel in their {patch}×{patch} window"
    )
    if json_out is not None:
        atomic_write_json(
            json_out, {"spec": sp.spec, "leakage": sp.leakage, "classes": rows, "totals": totals}
        )


def register(app: typer.Typer) -> None:
    app.add_typer(datasets_app, name="datasets")
    app.command("split")(split)
