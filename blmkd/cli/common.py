"""The console every command prints to, and what several commands parse or print the same way."""

from __future__ import annotations

import os
import sys

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


def parse_seeds(text: str | None) -> list[int] | None:
    """The seeds of ``--seeds 0,1,2``: non-negative, each once (None when the option is not given)."""
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


def per_class_table(rep: dict) -> Table:
    t = Table(title="per-class accuracy (test)")
    for col in ("id", "name", "test px", "acc %"):
        t.add_column(col)
    for c in rep.get("per_class", []):
        acc = "—" if c["accuracy"] is None else f"{100 * c['accuracy']:.2f}"
        t.add_row(str(c["id"]), c["name"], str(c.get("support", "")), acc)
    return t


def confusion_table(rep: dict) -> Table | None:
    """The confusion matrix of a report, by original class ids (None where the report has none)."""
    cm = rep.get("confusion")
    if cm is None:
        return None
    t = Table(title="confusion matrix (rows: true, columns: predicted; original ids)")
    ids = [str(c["id"]) for c in rep.get("per_class", [])] or [str(i) for i in range(len(cm))]
    t.add_column("")
    for i in ids:
        t.add_column(i, justify="right")
    for i, row in zip(ids, cm):
        t.add_row(i, *[str(v) if v else "·" for v in row])
    return t
