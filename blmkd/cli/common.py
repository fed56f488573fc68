"""Option types and helpers shared by the CLI command groups."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from blmkd.defaults import DEFAULT_STUDENT  # noqa: F401  (the commands' default --student)
from blmkd.errors import BlmkdError

#: Width of the console when stdout is a file or a pipe (a log, CI) and COLUMNS is not set: rich
#: would use 80 columns there and cut preset names and numbers in the wider tables with "…".
LOG_WIDTH = 160


def _console() -> Console:
    if sys.stdout.isatty() or "COLUMNS" in os.environ:
        return Console()
    return Console(width=LOG_WIDTH)


console = _console()


# Dataset and split options: the same names as `blmkd split` wherever data is read.
Dataset = Annotated[
    str, typer.Option("--dataset", "-d", help="Registry name (see `blmkd datasets`) or path to a cube file.")
]
GT = Annotated[
    Path | None, typer.Option("--gt", help="Ground-truth file, when it is not inside the cube file.")
]
CubeKey = Annotated[
    str | None,
    typer.Option(
        "--cube-key", help="Variable holding the cube in a .mat/.npz/.h5 (default: found automatically)."
    ),
]
GTKey = Annotated[
    str | None,
    typer.Option("--gt-key", help="Variable holding the ground truth (default: found automatically)."),
]
ClassNames = Annotated[
    Path | None,
    typer.Option(
        "--class-names",
        help="Text file naming the classes of a scene read by path: one name per line in the order of the ground-truth ids, or `ID: NAME` lines.",
    ),
]
Fill = Annotated[float | None, typer.Option("--fill", help="Replace NaN/Inf cube values with this number.")]
Strategy = Annotated[str, typer.Option("--strategy", help="Split: ratio | per-class | disjoint | fixed.")]
TrainAmount = Annotated[
    float,
    typer.Option(
        "--train",
        help="Training pixels: a fraction per class (ratio, disjoint) or a count per class (per-class).",
    ),
]
Val = Annotated[
    float, typer.Option("--val", help="Validation pixels: fraction of each class's non-training pixels.")
]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the split and of the model initialisation.")]
Patch = Annotated[int, typer.Option("--patch", help="Odd patch (window) size P; the model sees P×P pixels.")]
Buffer = Annotated[
    int | None,
    typer.Option("--buffer", help="Disjoint split: pixels between train and test (default: P // 2)."),
]
AllowSmall = Annotated[
    bool,
    typer.Option(
        "--allow-small", help="Give a class too small for the split one training pixel instead of failing."
    ),
]
TrainMap = Annotated[
    Path | None,
    typer.Option("--train-map", help="Fixed split: map of training pixels (ground-truth ids, 0 = not used)."),
]
TestMap = Annotated[Path | None, typer.Option("--test-map", help="Fixed split: map of test pixels.")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]
TrainDevice = Annotated[
    str,
    typer.Option(
        "--device",
        help="Where to train: auto (a CUDA GPU where one is visible, else the CPU), cpu, cuda or cuda:N. Under torchrun each rank uses its own GPU.",
    ),
]
Amp = Annotated[
    str,
    typer.Option(
        "--amp",
        help="Mixed precision of the training steps: off (FP32) or bf16 (bfloat16 autocast; CUDA GPUs and CPUs with BF16 units).",
    ),
]


def data_options(**kw):
    """Build :class:`blmkd.bundle.DataOptions` from CLI values (paths become strings)."""
    from blmkd.bundle import DataOptions
    from blmkd.data.scene import read_class_names

    if kw.get("class_names") is not None:
        kw["class_names"] = read_class_names(kw["class_names"])
    return DataOptions(**{k: (str(v) if isinstance(v, Path) else v) for k, v in kw.items()})


def parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    items = text.replace(" ", "").split(",")
    if not text.strip() or any(not s for s in items):
        raise BlmkdError(f"--seeds must be comma-separated integers without empty items, got {text!r}")
    try:
        seeds = [int(s) for s in items]
    except ValueError:
        raise BlmkdError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if min(seeds) < 0:
        raise BlmkdError(f"--seeds must be non-negative, got {text!r}")
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:  # each seed is one run folder: a repeat would train over itself and count twice in the summary
        raise BlmkdError(f"--seeds repeats {', '.join(map(str, dup))}: give each seed once")
    return seeds


def report_table(title: str, rows: list[tuple[str, dict]]) -> Table:
    """A table of OA/AA/κ (in %) for one or more named reports."""
    t = Table(title=title)
    for col in ("model", "OA %", "AA %", "κ ×100"):
        t.add_column(col, justify="right" if col != "model" else "left")
    for name, rep in rows:
        t.add_row(name, f"{100 * rep['oa']:.2f}", f"{100 * rep['aa']:.2f}", f"{100 * rep['kappa']:.2f}")
    return t


def per_class_table(rep: dict) -> Table:
    t = Table(title="per-class accuracy (test)")
    for col in ("id", "name", "test px", "acc %"):
        t.add_column(col)
    for c in rep.get("per_class", []):
        acc = "—" if c["accuracy"] is None else f"{100 * c['accuracy']:.2f}"
        t.add_row(str(c["id"]), c["name"], str(c.get("support", "")), acc)
    return t
