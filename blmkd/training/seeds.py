"""Runs of one recipe over several seeds: each claimed, trained, measured and summarised.

:func:`train_seeds` trains one run per seed (OUT itself for a single seed, OUT/seed_<s> for
several), claims each run folder first (:func:`blmkd.runs.claim_run`: locked, cleaned, refused if
it holds a run and neither ``resume`` nor ``force`` is given) and, with several seeds, locks OUT
and writes the mean ± std of OA/AA/κ to OUT/summary.json. Under torchrun every rank trains and
rank 0 alone prints, locks and writes the summary. :class:`RunConfig` says where and how a run
goes, :class:`TrainResult` what it gave.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

import blmkd.distributed as D
from blmkd.bundle import Bundle
from blmkd.errors import BlmkdError, RunError
from blmkd.flops import count_flops, count_params
from blmkd.io import check_writable_dir
from blmkd.runs import RunLock, claim_run, existing_run, last_epoch
from blmkd.training.config import TrainConfig
from blmkd.training.loop import fit
from blmkd.training.summary import report_table, seeds_line, write_summary


@dataclass
class RunConfig:
    """Where and how a training run goes (not what it learns)."""

    out: str | Path = "runs/run"  # run folder: checkpoints, metrics.jsonl (OUT/seed_<s> with several seeds)
    seeds: list[int] | None = None  # one run per seed and OUT/summary.json; None: the data's (teacher's) seed
    resume: bool = False  # continue from OUT/last.safetensors
    force: bool = False  # replace the run already in OUT
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    progress: bool = False  # rich progress bars
    console: Console | None = None  # where to print what happens; None: silent

    def say(self, *objects, **kw) -> None:
        if self.console is not None and D.is_main():
            self.console.print(*objects, **kw)

    def status(self, message: str):
        return (
            self.console.status(message)
            if self.console is not None and D.is_main()
            else contextlib.nullcontext()
        )


@dataclass
class TrainResult:
    """The runs of one training call (one per seed) and their mean ± std."""

    out: Path
    runs: list[
        dict
    ]  # per seed: seed, dir, test, best_epoch, epochs_run, selection, wall_s, leakage, parameters, ...
    summary: dict | None = None  # OA/AA/κ mean ± std over seeds (OUT/summary.json), None for one seed
    side_by_side: list[dict] = field(default_factory=list)  # distill: teacher(s) vs student, per seed
    patch_choice: object | None = None  # --patch auto: the PatchChoice (blmkd.training.patch_select)

    @property
    def checkpoint(self) -> Path:
        """The first run's ``best.safetensors``."""
        return Path(self.runs[0]["dir"]) / "best.safetensors"

    @property
    def test(self) -> dict:
        """The first run's test report (OA, AA, κ, per class, confusion)."""
        return self.runs[0]["test"]


#: ``say(*objects, **print_kwargs)``: where a run reports what it does (a rich console's ``print``).
Say = Callable[..., None]


def silent(*_args, **_kwargs) -> None:
    """A ``say`` that prints nothing."""


def train_seeds(
    seeds: list[int],
    out: Path,
    bundle_for: Callable[[int], Bundle],
    build: Callable[[Bundle], nn.Module],
    cfg: TrainConfig,
    *,
    resume: bool,
    force: bool,
    progress: bool,
    title: str,
    setup: Callable[[int, Bundle, nn.Module], dict] | None = None,
    say: Say = silent,
) -> tuple[list[dict], dict | None]:
    """Train one run per seed; the per-seed facts as ``summary.json`` lists them, and the summary
    (mean ± std over several seeds; None for one seed, and on ranks other than 0).

    ``bundle_for(s)`` gives seed ``s``'s data, ``build(bundle)`` the model (built right after
    ``torch.manual_seed(s)``, so the same command and seed give the same run) and ``setup(s,
    bundle, model)`` extra :func:`~blmkd.training.loop.fit` arguments (distillation's objective).
    Under ``resume`` a seed whose folder holds no run yet starts at epoch 1.
    """
    say = say if D.is_main() else silent
    check_writable_dir(out, "--out")  # before any data loads or model trains
    runs, summary = [], None
    with contextlib.ExitStack() as stack:
        if len(seeds) > 1:
            out.mkdir(parents=True, exist_ok=True)
            root = on_main(lambda: RunLock(out).acquire())
            if root is not None:
                stack.enter_context(root)
        for s in seeds:
            run_dir = out if len(seeds) == 1 else out / f"seed_{s}"
            bundle = bundle_for(s)
            cfg_s = replace(cfg, seed=s)
            resume_s = resume and (len(seeds) == 1 or bool(existing_run(run_dir)))
            if resume and not resume_s:
                say(f"[bold]{title}[/] seed {s}: no run in {run_dir} yet, starting at epoch 1")
            lock = on_main(lambda run_dir=run_dir, r=resume_s: claim_run(run_dir, resume=r, force=force))
            try:
                if resume_s:
                    _say_resuming(say, title, s, run_dir, cfg_s.epochs)
                torch.manual_seed(s)  # the initial weights are the seed's, not whatever ran before
                model = build(bundle)
                kwargs = setup(s, bundle, model) if setup else {}
                say(f"[bold]{title}[/] seed {s}: {_data_line(bundle)}")
                res = fit(model, bundle, cfg_s, run_dir, resume=resume_s, progress=progress, **kwargs)
            finally:
                if lock is not None:
                    lock.release()
            x = bundle.extractor(getattr(model, "input_kind", "float")).gather([0], [0])
            stats = {"parameters": count_params(model), "flops_per_pixel": count_flops(model, x)}
            runs.append({"seed": s, "dir": str(run_dir), "test": res.test, "best_epoch": res.best_epoch,
                         "epochs_run": res.epochs_run, "selection": res.selection, "wall_s": res.wall_s,
                         "leakage": float(bundle.split.leakage), **stats})  # fmt: skip
            head = f"{title} seed {s}: test split (best epoch {res.best_epoch}, {res.wall_s:.0f} s)"
            say(report_table(head, [(title, res.test)]))
            if res.selection:
                say(
                    f"kept epoch {res.best_epoch} of {res.epochs_run}: {res.selection['reason']}",
                    highlight=False,
                )
        if len(seeds) > 1 and D.is_main():
            summary = write_summary(out / "summary.json", runs)
            say(seeds_line(title, seeds, summary))
    return runs, summary


def _say_resuming(say: Say, title: str, seed: int, run_dir: Path, epochs: int) -> None:
    ep = last_epoch(run_dir) if D.is_main() else None
    left = f"epochs {ep + 1}–{epochs} to go" if ep is not None and ep < epochs else "no epochs left"
    say(f"[bold]{title}[/] seed {seed}: resuming {run_dir} from last.safetensors after epoch {ep} ({left})")


def _data_line(bundle: Bundle) -> str:
    sc, sp = bundle.scene, bundle.split
    return (f"{sc.name} {sc.height}×{sc.width}×{sc.bands}, {int(sp.train.sum())} train / {int(sp.val.sum())} val / "
            f"{int(sp.test.sum())} test px, leakage {sp.leakage:.3f}")  # fmt: skip


def on_main(claim):
    """``claim()`` (a lock) on rank 0 alone (None elsewhere); its refusal is raised on every rank, so none trains."""
    D.init_from_env()
    lock, err = None, None
    if D.is_main():
        try:
            lock = claim()
        except BlmkdError as exc:
            err = str(exc)
    err = D.broadcast_object(err)
    if err is not None:
        raise RunError(err)
    return lock
