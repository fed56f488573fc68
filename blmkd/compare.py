"""Paired comparison of two groups of runs over the same splits: is A better than B beyond noise?

"Distillation beats the student trained alone" is a claim about a difference of a few tenths of a
point between runs whose seed-to-seed spread is about as large. Comparing two means ± std hides
that the runs are paired: seed ``s`` of A and seed ``s`` of B were trained and tested on the same
split, so the split's own difficulty cancels in the per-seed difference. :func:`compare_runs` pairs
the runs of two groups by their split digest (same scene, split spec and seed: same pixels),
and :func:`paired_stats` reports

* the per-pair differences, their mean and sample std, wins / losses / ties;
* a 95% confidence interval for the mean difference (Student's t, ``n − 1`` degrees of freedom);
* the paired t-test p-value, and an exact two-sided sign-flip permutation p-value (no normality
  assumption: under "no difference" each pair's sign is a coin flip; all ``2ⁿ`` flips are
  enumerated for ``n ≤ 20``). With 5 pairs the smallest possible two-sided permutation p-value is
  2/32 = 0.0625: five seeds cannot show a difference at the 5% level by that test, whatever it is.

Runs are read from their ``best.json`` (JSON only, nothing unpickled): the test metrics written at
the end of training, or, with ``metrics_file``, an ``blmkd evaluate --json`` report stored in the
run directory (e.g. the same checkpoints evaluated with ``--tta``).
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from blmkd.checkpoint import load_checkpoint
from blmkd.errors import BlmkdError
from blmkd.metrics import mean_std

METRICS = ("oa", "aa", "kappa")


@dataclass(frozen=True)
class RunResult:
    """One trained run: where it is, which split it was tested on, and its test metrics."""

    dir: Path
    model: str
    scene: str
    seed: int | None
    digest: str
    metrics: dict[str, float]  # oa, aa, kappa as fractions
    per_class: tuple[dict, ...] = ()  # {"id", "name", "accuracy", "support"} per class, when recorded


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BlmkdError(f"cannot read {path}: {exc}") from None


def _verified_sidecar(run_dir: Path) -> dict:
    """``best.json``, checked against the sealed metadata of ``best.safetensors`` beside it: the
    sidecar is for people and tools, so an edited one must not change a comparison."""
    meta = _read_json(run_dir / "best.json")
    ck = run_dir / "best.safetensors"
    if not ck.is_file():
        return meta
    sealed = load_checkpoint(ck).meta  # verifies the seal
    if meta != sealed:
        keys = sorted(k for k in set(meta) | set(sealed) if meta.get(k) != sealed.get(k))
        raise BlmkdError(
            f"{run_dir / 'best.json'} does not match the sealed metadata of {ck.name} ({', '.join(keys)} differ); "
            "it was edited: delete it and re-save, or compare the checkpoints' own numbers"
        )
    return meta


def load_run(run_dir: Path, metrics_file: str | None = None) -> RunResult:
    """The :class:`RunResult` of one run directory (one that holds ``best.json``)."""
    meta = _verified_sidecar(run_dir)
    split = meta.get("split") or {}
    if not split.get("digest"):
        raise BlmkdError(f"{run_dir / 'best.json'} records no split digest; cannot pair it with other runs")
    if metrics_file:
        src = run_dir / metrics_file
        if not src.exists():
            raise BlmkdError(f"{src} not found (write it with `blmkd evaluate {run_dir} --json {src}`)")
        metrics = _read_json(src)
    else:
        src = run_dir / "best.json"
        metrics = (meta.get("metrics") or {}).get("test") or {}
    missing = [k for k in METRICS if not isinstance(metrics.get(k), (int, float))]
    if missing:
        raise BlmkdError(f"{src} has no test {', '.join(missing)} (a run that did not finish?)")
    return RunResult(
        dir=run_dir,
        model=str((meta.get("model") or {}).get("name", "?")),
        scene=str(split.get("scene") or (meta.get("data") or {}).get("name", "?")),
        seed=split.get("seed"),
        digest=str(split["digest"]),
        metrics={k: float(metrics[k]) for k in METRICS},
        per_class=_per_class(metrics.get("per_class")),
    )


def _per_class(rows) -> tuple[dict, ...]:
    """The per-class test accuracies of a metrics dict, or ``()`` where they are missing or malformed."""
    if not isinstance(rows, list):
        return ()
    out = []
    for r in rows:
        if not isinstance(r, dict) or not isinstance(r.get("accuracy"), (int, float)):
            return ()
        out.append({"id": r.get("id"), "name": str(r.get("name", r.get("id"))), "accuracy": float(r["accuracy"]),
                    "support": int(r.get("support", 0))})  # fmt: skip
    return tuple(out)


def per_class_pairs(pairs: list[tuple[RunResult, RunResult]]) -> list[dict]:
    """Per-class test accuracy of paired runs: for each class its mean test pixels, the mean accuracy
    in A and in B, their mean difference and on how many pairs A was higher. ``[]`` unless every run
    recorded per-class accuracies for the same class ids in the same order."""
    tables = [(ra.per_class, rb.per_class) for ra, rb in pairs]
    if not tables or any(not ta or not tb for ta, tb in tables):
        return []
    ids = [c["id"] for c in tables[0][0]]
    if any([c["id"] for c in t] != ids for ta, tb in tables for t in (ta, tb)):
        return []
    out = []
    for i, first in enumerate(tables[0][0]):
        acc_a = np.array([ta[i]["accuracy"] for ta, _ in tables])
        acc_b = np.array([tb[i]["accuracy"] for _, tb in tables])
        out.append({
            "id": first["id"], "name": first["name"],
            "support": float(np.mean([ta[i]["support"] for ta, _ in tables])),
            "mean_a": float(acc_a.mean()), "mean_b": float(acc_b.mean()),
            "mean_delta": float((acc_a - acc_b).mean()), "wins": int((acc_a > acc_b).sum()), "n": len(tables),
        })  # fmt: skip
    return out


def collect_runs(path: str | Path, metrics_file: str | None = None) -> list[RunResult]:
    """Every run under ``path``: the run itself if it holds ``best.json``, else each run directory
    below it (e.g. the ``seed_<s>/`` folders of ``--seeds``), sorted by path.

    Raises:
        BlmkdError: ``path`` is missing or holds no run, or two runs share a split (they could
            not be paired unambiguously).
    """
    root = Path(path)
    if not root.exists():
        raise BlmkdError(f"{root} not found")
    dirs = [root] if (root / "best.json").is_file() else _run_dirs(root)
    if not dirs:
        raise BlmkdError(f"no runs under {root} (a run directory holds best.json)")
    runs = [load_run(d, metrics_file) for d in dirs]
    seen: dict[str, Path] = {}
    for r in runs:
        if r.digest in seen:
            raise BlmkdError(
                f"{seen[r.digest]} and {r.dir} were tested on the same split; compare one of them"
            )
        seen[r.digest] = r.dir
    return runs


def _run_dirs(root: Path) -> list[Path]:
    """Folders under ``root`` holding ``best.json``, following symlinked folders (each real folder
    once, so a link loop ends)."""
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        if "best.json" in filenames:
            found.append(Path(dirpath))
    return sorted(found)


def _signflip_p(deltas: np.ndarray) -> float | None:
    """Exact two-sided sign-flip permutation p-value of the mean of ``deltas`` (None for n > 20)."""
    n = deltas.size
    if n == 0 or n > 20:
        return None
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))  # (2ⁿ, n)
    means = np.abs(signs @ deltas) / n  # (2ⁿ,)
    observed = abs(float(deltas.mean()))
    return float((means >= observed - 1e-12).mean())


def paired_stats(a, b) -> dict:
    """Statistics of the paired differences ``a − b`` (equal-length sequences, same order = same split).

    Returns a JSON-ready dict: ``n``, ``mean_a``/``std_a``, ``mean_b``/``std_b``, ``deltas``,
    ``mean_delta``/``std_delta``, ``ci95`` (``[lo, hi]``, None for n < 2), ``p_t`` (paired t-test;
    None for n < 2 or no spread), ``p_signflip``, ``wins``/``losses``/``ties`` (for A) and
    ``verdict``: ``"A > B"`` or ``"A < B"`` when the 95% interval excludes 0, else ``"no difference
    shown"``.
    """
    from scipy import stats  # 1–2 s to import: only `blmkd compare` pays it, not every command

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(
            f"paired_stats needs two equal-length non-empty sequences, got {a.shape} and {b.shape}"
        )
    d = a - b
    n = d.size
    (ma, sa), (mb, sb), (md, sd) = mean_std(a), mean_std(b), mean_std(d)
    ci = p_t = None
    if n >= 2:
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        ci = [md - half, md + half]
        if sd > 0:
            p_t = float(stats.ttest_rel(a, b).pvalue)
    if ci is not None and (ci[0] > 0 or ci[1] < 0):
        verdict = "A > B" if md > 0 else "A < B"
    else:
        verdict = "no difference shown"
    return {
        "n": n, "mean_a": ma, "std_a": sa, "mean_b": mb, "std_b": sb,
        "deltas": d.tolist(), "mean_delta": md, "std_delta": sd, "ci95": ci,
        "p_t": p_t, "p_signflip": _signflip_p(d),
        "wins": int((d > 0).sum()), "losses": int((d < 0).sum()), "ties": int((d == 0).sum()),
        "verdict": verdict,
    }  # fmt: skip


def compare_runs(a: list[RunResult], b: list[RunResult]) -> dict:
    """Pair the runs of ``a`` and ``b`` by split and compute :func:`paired_stats` for OA, AA and κ.

    Returns ``{"pairs": [...], "unpaired_a": [...], "unpaired_b": [...], "stats": {metric: ...},
    "per_class": [...]}`` (see :func:`per_class_pairs`).

    Raises:
        BlmkdError: no split is shared by the two groups.
    """
    by_digest = {r.digest: r for r in b}
    pairs = [(r, by_digest[r.digest]) for r in a if r.digest in by_digest]
    if not pairs:
        raise BlmkdError(
            "the two groups share no split: pair runs trained on the same scene, split and seed "
            f"(A: {', '.join(sorted({r.scene for r in a}))}; B: {', '.join(sorted({r.scene for r in b}))})"
        )
    pairs.sort(key=lambda p: (p[0].seed if p[0].seed is not None else math.inf, p[0].digest))
    paired = {r.digest for r, _ in pairs}
    return {
        "pairs": [
            {
                "seed": ra.seed,
                "digest": ra.digest,
                "a": str(ra.dir),
                "b": str(rb.dir),
                **{f"{k}_a": ra.metrics[k] for k in METRICS},
                **{f"{k}_b": rb.metrics[k] for k in METRICS},
            }
            for ra, rb in pairs
        ],  # fmt: skip
        "unpaired_a": [str(r.dir) for r in a if r.digest not in paired],
        "unpaired_b": [str(r.dir) for r in b if r.digest not in paired],
        "stats": {
            k: paired_stats([ra.metrics[k] for ra, _ in pairs], [rb.metrics[k] for _, rb in pairs])
            for k in METRICS
        },
        "per_class": per_class_pairs(pairs),
    }
