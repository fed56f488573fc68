"""What a run tells: which epoch was kept and why, the mean ± std over seeds, progress and tables."""

from __future__ import annotations

import math
import os
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from blmkd.io import atomic_write_json
from blmkd.metrics import mean_std


def better(val_oa: float, val_loss: float, best_oa: float, best_loss: float) -> bool:
    """Model selection: a higher validation OA wins; an equal one wins with a lower validation loss.

    With a few hundred validation pixels many epochs reach the same OA; the first of them is often
    an under-trained one, the loss tells the better-trained weights apart.
    """
    return val_oa > best_oa or (val_oa == best_oa and val_loss < best_loss)


def selection_facts(
    rows: list[dict], best_epoch: int, best_oa: float, best_loss: float, use_val: bool
) -> dict:
    """Which epoch was kept and why, from the ``metrics.jsonl`` rows of a run.

    Returns ``{"epoch", "val_oa", "val_loss", "tied_epochs", "first_epoch_at_best_oa", "on", "reason"}``;
    ``on`` is ``"validation"`` or ``"training"`` (a split without validation pixels), ``reason`` a
    sentence such as ``"val OA 0.9712 (tied with 14 epochs), lowest val loss 0.083"``.
    """
    on = "val" if use_val else "train"
    tied = [r["epoch"] for r in rows if r.get("val_oa") == best_oa and r["epoch"] != best_epoch]
    first = min([best_epoch, *tied])
    reason = f"{on} OA {best_oa:.4f}"
    if tied:
        reason += (
            f" (tied with {len(tied)} epoch{'s' if len(tied) > 1 else ''}), lowest {on} loss {best_loss:.4g}"
        )
    else:
        reason += " (highest)"
    return {"epoch": best_epoch, "val_oa": best_oa, "val_loss": None if math.isinf(best_loss) else best_loss,
            "tied_epochs": len(tied), "first_epoch_at_best_oa": first,
            "on": "validation" if use_val else "training", "reason": reason}  # fmt: skip


def write_summary(path: Path, runs: list[dict]) -> dict:
    """Aggregate per-seed test metrics into mean ± std (sample std) and write it as JSON."""
    summary: dict = {"runs": runs}
    for key in ("oa", "aa", "kappa"):
        vals = [r["test"][key] for r in runs]
        m, s = mean_std(vals)
        summary[key] = {"mean": m, "std": s, "values": vals}
    atomic_write_json(path, summary)
    return summary


def seeds_line(title: str, seeds: list[int], summary: dict) -> str:
    """``title over seeds [..]: OA m ± s  AA m ± s  KAPPA m ± s`` (in %, rich markup)."""
    return f"[bold]{title}[/] over seeds {seeds}: " + "  ".join(
        f"{k.upper()} {100 * summary[k]['mean']:.2f} ± {100 * summary[k]['std']:.2f}"
        for k in ("oa", "aa", "kappa")
    )


def report_table(title: str, rows: list[tuple[str, dict]]) -> Table:
    """A table of OA/AA/κ (in %) for one or more named reports."""
    t = Table(title=title)
    for col in ("model", "OA %", "AA %", "κ ×100"):
        t.add_column(col, justify="right" if col != "model" else "left")
    for name, rep in rows:
        t.add_row(name, f"{100 * rep['oa']:.2f}", f"{100 * rep['aa']:.2f}", f"{100 * rep['kappa']:.2f}")
    return t


class EpochProgress:
    """A rich progress bar over epochs showing loss, train/val OA and the ETA."""

    def __init__(self, enabled: bool, total: int, done: int):
        self.enabled = enabled and os.environ.get("BLMKD_NO_PROGRESS") != "1"
        self.total, self.done = total, done
        self._p = None

    def __enter__(self):
        if self.enabled:
            self._p = Progress(
                TextColumn("epoch"),
                MofNCompleteColumn(),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._p.__enter__()
            self._task = self._p.add_task("train", total=self.total, completed=self.done, info="")
        return self

    def update(self, row: dict, best: float) -> None:
        if self._p is not None:
            info = f"loss {row['loss']:.4f}  train OA {row['train_oa']:.4f}  val OA {row['val_oa']:.4f}  best {best:.4f}"
            self._p.update(self._task, advance=1, info=info)

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)
        return False
