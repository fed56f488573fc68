"""``--patch auto``: choose the window size P on validation pixels, never on test pixels.

Each candidate P trains a short run of the same model, recipe and seed on the same training pixels
and is scored on the same validation pixels. The candidates' bundles carry the validation mask in
place of the test mask, so no candidate run reads a test pixel, not even to report it. The choice is
the highest validation OA; candidates within one validation pixel of it count as tied, and a tie
goes to the smaller P (less context, fewer FLOPs, less leakage across a split's borders).

The split must select the same pixels whatever P is. That holds for ``ratio``, ``per-class`` and
``fixed`` splits (their buffer, when given, is fixed). A ``disjoint`` split's blocks and default
buffer follow P, so the pixels P would be chosen on are not the pixels the final run is tested on:
``--patch auto`` refuses it (:class:`~blmkd.errors.DataError`) rather than select on pixels that
may end up in the test set.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from blmkd.bundle import Bundle, DataOptions, prepare_data, split_for
from blmkd.errors import DataError
from blmkd.io import atomic_write_json
from blmkd.training.config import TrainConfig
from blmkd.training.loop import fit

DEFAULT_CANDIDATES = (1, 3, 5, 7, 9, 11)


@dataclass
class PatchTrial:
    """One candidate's short run: its best validation OA and loss, and which epoch gave them."""

    patch: int
    val_oa: float
    val_loss: float | None
    best_epoch: int
    wall_s: float


@dataclass
class PatchChoice:
    """The chosen P, every candidate's result and why the choice was made."""

    patch: int
    trials: list[PatchTrial]
    epochs: int  # epochs of each candidate run
    val_pixels: int
    reason: str
    split: dict = field(default_factory=dict)  # strategy, seed, digest of the split chosen on

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def lines(self) -> list[str]:
        """The table of candidates (the chosen one marked) and the reason, one line each."""
        rows = [f"{'P':>3}  {'val OA %':>8}  {'val loss':>8}  {'epoch':>5}  {'time s':>6}"]
        for t in self.trials:
            loss = f"{t.val_loss:8.4f}" if t.val_loss is not None else f"{'—':>8}"
            mark = "  <- chosen" if t.patch == self.patch else ""
            rows.append(
                f"{t.patch:>3}  {100 * t.val_oa:8.2f}  {loss}  {t.best_epoch:>5}  {t.wall_s:6.1f}{mark}"
            )
        return [*rows, self.reason]

    def write(self, path: Path) -> None:
        atomic_write_json(Path(path), self.to_dict())


def choose(trials: Sequence[PatchTrial], val_pixels: int) -> tuple[int, str]:
    """The P to use and why: the highest validation OA, ties (within one validation pixel) to the smaller P."""
    if not trials:
        raise DataError("--patch auto: no candidate window fits this scene")
    best = max(t.val_oa for t in trials)
    tol = 1.0 / max(1, val_pixels) + 1e-9  # one validation pixel (and float rounding)
    tied = sorted(t.patch for t in trials if best - t.val_oa <= tol)
    p = tied[0]
    why = f"P = {p}: highest validation OA {100 * best:.2f}% on {val_pixels} validation pixels"
    if len(tied) > 1:
        why += f"; tied within one pixel with P = {', '.join(map(str, tied[1:]))}, the smaller P kept"
    return p, why


def check_patch_independent(bundle: Bundle, candidates: Sequence[int]) -> None:
    """Refuse a split whose pixels change with P (DataError): P would be chosen on other pixels."""
    if bundle.options.strategy == "disjoint":
        raise DataError(
            "--patch auto needs a split whose pixels do not depend on P (ratio, per-class or fixed): a disjoint "
            "split's blocks and buffer follow P; give --patch"
        )
    for p in candidates:
        if (
            split_for(bundle.scene, dataclasses.replace(bundle.options, patch=p)).spec["digest"]
            != bundle.split.spec["digest"]
        ):
            raise DataError(f"--patch auto: a {p}×{p} window changes this split's pixels; give --patch")


def candidate_bundle(bundle: Bundle, patch: int) -> Bundle:
    """``bundle`` seen through ``patch × patch`` windows, its test mask replaced by the validation mask."""
    split = dataclasses.replace(bundle.split, test=bundle.split.val.copy())
    return Bundle(dataclasses.replace(bundle.options, patch=patch), bundle.scene, split, bundle.prep)


def select_patch(
    bundle: Bundle,
    build: Callable[[Bundle], nn.Module],
    cfg: TrainConfig,
    *,
    candidates: Sequence[int] = DEFAULT_CANDIDATES,
    epochs: int | None = None,
    say: Callable[[str], None] = print,
    progress: bool = False,
) -> PatchChoice:
    """Short runs at each candidate P on ``bundle``'s split; the P with the best validation OA.

    Args:
        bundle: the scene, split and preprocessing of the run P is chosen for.
        build: makes a fresh model for a bundle (byte models get the bundle's dequantization here).
        cfg: the run's training settings; each candidate trains ``epochs`` of them.
        candidates: odd window sizes to try; those larger than the scene are skipped.
        epochs: epochs per candidate, default a quarter of ``cfg.epochs`` (at least 5, at most
            ``cfg.epochs``).
        say: where each candidate's line goes as it finishes.

    Raises:
        DataError: a disjoint split, a split that changes with P, no validation pixels, or a
            candidate that is not a positive odd integer.
    """
    h, w = bundle.scene.height, bundle.scene.width
    bad = [p for p in candidates if int(p) != p or p < 1 or p % 2 == 0]
    if bad:
        raise DataError(f"--patch auto: candidate windows must be positive odd integers, got {bad}")
    cands = sorted({int(p) for p in candidates if p <= min(h, w)})
    n_val = int(bundle.split.val.sum())
    if n_val == 0:
        raise DataError("--patch auto chooses P on validation pixels and this split has none; give --val > 0")
    check_patch_independent(bundle, cands)
    n_ep = epochs or min(cfg.epochs, max(5, cfg.epochs // 4))
    short = dataclasses.replace(cfg, epochs=n_ep, warmup_epochs=min(cfg.warmup_epochs, max(0, n_ep // 4)))
    trials = []
    say(f"--patch auto: {len(cands)} candidates × {n_ep} epochs, chosen on {n_val} validation pixels")
    with tempfile.TemporaryDirectory(prefix="blmkd-patch-") as tmp:
        for p in cands:
            b = candidate_bundle(bundle, p)
            torch.manual_seed(cfg.seed)
            model = build(b)
            if hasattr(model, "set_dequant"):
                model.set_dequant(*[torch.as_tensor(a) for a in b.prep.dequant_affine()])
            t0 = time.perf_counter()
            res = fit(model, b, short, Path(tmp) / f"p{p}", progress=progress)
            loss = res.selection.get("val_loss") if res.selection else None
            trials.append(
                PatchTrial(p, float(res.best_val_oa), loss, res.best_epoch, time.perf_counter() - t0)
            )
            say(f"  P = {p:>2}: val OA {100 * res.best_val_oa:.2f}% (epoch {res.best_epoch})")
            shutil.rmtree(Path(tmp) / f"p{p}", ignore_errors=True)
    p, why = choose(trials, n_val)
    say(why)
    spec = bundle.split.spec
    return PatchChoice(p, trials, n_ep, n_val, why, {k: spec.get(k) for k in ("strategy", "seed", "digest")})


def select_patch_for(
    opts: DataOptions, build: Callable[[Bundle], nn.Module], cfg: TrainConfig, **kw
) -> PatchChoice:
    """:func:`select_patch` on the data ``opts`` describe (their ``patch`` is ignored)."""
    bundle = prepare_data(dataclasses.replace(opts, patch=1))
    return select_patch(bundle, build, cfg, **kw)
