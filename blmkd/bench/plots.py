"""The benchmark report's plots (matplotlib, imported where a plot is drawn; Agg backend).

* ``maps.png``: ground truth and every artifact's whole-scene classification map side by side;
* ``confusion.png``: the row-normalised test confusion matrix of the deployed artifact;
* ``pareto.png``: test OA against batch-1 latency of all artifacts, with the Pareto front;
* ``latency.png``: the batch-1 latency distribution per artifact and throughput against batch size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blmkd.inference.maps import legend_handles, rgb_map
from blmkd.io import atomic_path

PLOTS = ("maps.png", "confusion.png", "pareto.png", "latency.png")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    plt = _plt()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def short_name(row: dict) -> str:
    return row.get("name", row.get("path", "?"))


def plot_maps(
    path: Path, labels: np.ndarray, maps: list[tuple[str, np.ndarray]], class_ids, class_names
) -> None:
    """Ground truth and each (title, class-index map) side by side, one shared legend."""
    plt = _plt()
    panels = [("ground truth", labels)] + maps
    n = len(panels)
    ncol = n if n <= 4 else min(4, -(-n // 2))
    nrow = -(-n // ncol)
    h, w = labels.shape
    cell = 3.4
    fig, axes = plt.subplots(nrow, ncol, figsize=(cell * ncol * min(2.0, max(0.5, w / h)) + 2.6, (cell + 0.45) * nrow),
                             squeeze=False, layout="constrained")  # fmt: skip
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, (title, m) in zip(axes.ravel(), panels):
        ax.imshow(rgb_map(m, len(class_ids)), interpolation="nearest")
        ax.set_title(title, fontsize=9)
    fig.legend(
        handles=legend_handles(class_ids, class_names), loc="outside right center", fontsize=7, frameon=False
    )
    _save(fig, path)


def plot_confusion(path: Path, cm: np.ndarray, class_names, title: str) -> None:
    """Row-normalised confusion matrix (rows: true class) with the counts on the diagonal."""
    plt = _plt()
    k = len(class_names)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.38 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), [n[:18] for n in class_names], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(k), [n[:18] for n in class_names], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=5.5,
                            color="white" if norm[i, j] > 0.6 else "black")  # fmt: skip
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    _save(fig, path)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (lower latency and higher-or-equal accuracy),
    in order of latency. ``points`` are (latency, accuracy)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(path: Path, rows: list[dict]) -> None:
    plt = _plt()
    ok = [r for r in rows if r["status"] == "ok" and r.get("latency")]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    pts = [(r["latency"]["p50_ms"], 100 * r["oa"]) for r in ok]
    front = pareto_front(pts)
    # Numbered points and a legend: names of artifacts with similar latency would overlap.
    for i, (r, (x, y)) in enumerate(zip(ok, pts)):
        on = i in front
        ax.scatter(
            x,
            y,
            s=90,
            color="C3" if on else "C0",
            zorder=3,
            label=f"{i + 1}  {short_name(r)}" + (" (Pareto)" if on else ""),
        )
        ax.annotate(str(i + 1), (x, y), ha="center", va="center", fontsize=7, color="white", zorder=4)
    if len(front) > 1:
        fx, fy = zip(*[pts[i] for i in front])
        ax.step(fx, fy, where="post", color="C3", lw=1, alpha=0.7)
    if ok:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, handletextpad=0.3)
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel("batch-1 latency p50 (ms, log scale)")
    ax.set_ylabel("test OA (%)")
    ax.set_title("accuracy vs latency", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if pts:
        lo, hi = min(p[1] for p in pts), max(p[1] for p in pts)
        ax.set_ylim(lo - max(1.0, 0.1 * (hi - lo)), hi + max(1.0, 0.1 * (hi - lo)))
    _save(fig, path)


def _horizontal() -> dict:
    import matplotlib

    major, minor = (int(v) for v in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def _plain_log_ticks(axis) -> None:
    """``0.05`` rather than ``5×10⁻²`` on a log axis."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def plot_latency(path: Path, rows: list[dict]) -> None:
    plt = _plt()
    ok = [r for r in rows if r["status"] == "ok" and r.get("latency_samples_ms")]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, max(3.5, 0.45 * len(ok) + 1.5)))
    if ok:
        a1.boxplot([r["latency_samples_ms"] for r in ok], **_horizontal(), whis=(1, 99), showfliers=True,
                   flierprops={"markersize": 2, "alpha": 0.4})  # fmt: skip
        a1.set_yticks(range(1, len(ok) + 1), [short_name(r) for r in ok], fontsize=7)
        a1.set_xscale("log")
        _plain_log_ticks(a1.xaxis)
    a1.set_xlabel("batch-1 latency (ms, log scale; whiskers p1-p99)")
    a1.set_title("latency distribution", fontsize=10)
    a1.grid(True, axis="x", which="both", alpha=0.3)
    for r in ok:
        t = r.get("throughput") or []
        a2.plot([e["batch"] for e in t], [e["px_s"] for e in t], marker="o", ms=3, label=short_name(r))
    a2.set_xscale("log")
    a2.set_yscale("log")
    a2.set_xlabel("batch size")
    a2.set_ylabel("pixels / s")
    a2.set_title("throughput", fontsize=10)
    a2.grid(True, which="both", alpha=0.3)
    if ok:
        a2.legend(fontsize=6)
    fig.tight_layout()
    _save(fig, path)
