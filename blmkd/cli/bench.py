"""`blmkd bench` (artifacts side by side, edge target verdicts, reports) and `blmkd predict` (scene maps)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich import progress as rp
from rich.table import Table

import blmkd.api as api
from blmkd.bench.report import main_table
from blmkd.cli.common import console
from blmkd.cli.options import GT, Progress
from blmkd.distributed import is_main
from blmkd.errors import BlmkdError

Threads = Annotated[
    int | None,
    typer.Option("--threads", help="torch / ONNX Runtime intra-op threads (default: the libraries' own)."),
]
Device = Annotated[str, typer.Option("--device", help="cpu or cuda.")]
Tile = Annotated[
    int, typer.Option("--tile", help="Rows per tile of the streamed scene (memory grows with it).")
]


def _ints(text: str, what: str) -> list[int]:
    try:
        vals = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise BlmkdError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise BlmkdError(f"{what} must be positive integers, got {text!r}")
    return vals


def bench(
    models: Annotated[
        list[Path],
        typer.Argument(
            help="Checkpoints (or run directories), ONNX files (also `blmkd baseline` ones), TensorRT engines, C exports (.c)."
        ),
    ],
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", "-d", help="Read this dataset instead of the one the first model records."),
    ] = None,
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            help="Target profile to judge (repeatable): cpu, cuda, jetson-orin-nano[@7W|@15W|@25W], jetson-agx-orin[@15W..@60W], drone, smallsat. Default: this machine's.",
        ),
    ] = None,
    targets_file: Annotated[
        Path | None,
        typer.Option(
            "--targets-file",
            help="TOML file overriding or adding target profiles (one table per target, named targets.NAME).",
        ),
    ] = None,
    sensor: Annotated[
        str | None,
        typer.Option(
            "--sensor",
            help="Judge throughput against a sensor's pixel rate: enmap, prisma, desis, hypso-1, uav-pushbroom, or swath=PX,rate=LINES_PER_S (or swath=PX,speed=M_S,gsd=M; swath=PX,altitude=M,gsd=M).",
        ),
    ] = None,
    batch: Annotated[
        str, typer.Option("--batch", help="Batch sizes: 1 gives the latency, the others the throughput.")
    ] = "1,64,1024",
    report: Annotated[
        Path | None, typer.Option("--report", help="Write report.md/.html/.json and plots into this folder.")
    ] = None,
    device: Device = "cpu",
    runs: Annotated[
        int,
        typer.Option(
            "--runs",
            help="Timed batch-1 calls after warm-up, at least (timing goes on for 0.5 s; a tenth of the calls at the larger batches).",
        ),
    ] = 100,
    threads: Threads = None,
    eval_size: Annotated[
        int | None,
        typer.Option(
            "--eval-size",
            help="Evaluate accuracy on a seeded sample of this many test pixels (default: all).",
        ),
    ] = None,
    maps: Annotated[
        bool | None,
        typer.Option(
            "--maps/--no-maps", help="Classify the whole scene with every artifact (default: with --report)."
        ),
    ] = None,
    tile: Tile = 256,
    bf16: Annotated[
        bool,
        typer.Option(
            "--bf16/--no-bf16",
            help="On CPU, also run checkpoints under BF16 autocast (pays on CPUs with AVX512-BF16 or AMX; not exact, so its agreement is shown).",
        ),
    ] = False,
) -> None:
    """Benchmark artifacts of a model on the same test split: accuracy, latency, throughput, memory.

    Every artifact is evaluated on the test split recorded in the first checkpoint (or the first
    ONNX file's metadata) and timed the same way; a row that fails keeps its reason. With
    --device cuda, PyTorch runs in FP32 and FP16/BF16 autocast and ONNX files on the ONNX Runtime
    CUDA and TensorRT providers, each skipped with the reason where this machine lacks it.
    """

    def log(s: str) -> None:
        console.print(s, markup=False, highlight=False)

    targets = [t for item in (target or []) for t in item.split(",") if t] or None
    cfg = api.BenchConfig(dataset=dataset, targets=targets, targets_file=targets_file, sensor=sensor,
                          batches=tuple(_ints(batch, "--batch")), device=device, runs=runs, threads=threads,
                          eval_size=eval_size, maps=maps, tile=tile, cpu_bf16=bf16)  # fmt: skip
    with console.status("benchmarking ..."):
        res = api.bench(models, report, cfg, log=log)
    console.print(_table(res))
    for v in res["verdicts"]:
        colour = {"PASS": "green", "FAIL": "red"}.get(v["verdict"], "yellow")
        checks = "; ".join(c["text"] for c in v["checks"])
        console.print(
            f"[{colour}]{v['target']}: {v['verdict']}[/] {v['artifact']}: {checks}"
            + (f" ({v['caveat']})" if v["caveat"] else ""),
            highlight=False,
        )
    for line in res.get("baselines", []):
        console.print(line, highlight=False, markup=False)
    if res.get("report"):
        console.print(f"report: {res['report']['html']}")
    if not any(r["status"] == "ok" for r in res["rows"]):
        raise BlmkdError(
            f"no artifact could be benchmarked: {len(res['rows'])} failed or were skipped (reasons above)"
        )


def _table(res: dict):
    head, body = main_table(res["rows"])
    pk = res["matmul_peak"].get("gflops")
    t = Table(title=f"blmkd bench on {res['data']['scene']} ({res['data']['evaluated_pixels']} test px)"
              + (f", matmul peak {pk:.1f} GFLOP/s" if pk else ""))  # fmt: skip
    for h in head:
        t.add_column(h, justify="left" if h in ("Model · format", "Status") else "right", overflow="fold")
    for row in body:
        t.add_row(*row)
    return t


def predict(
    model: Annotated[
        Path,
        typer.Argument(help="Checkpoint (or run directory), ONNX file, TensorRT engine or C export (.c)."),
    ],
    scene: Annotated[
        str, typer.Option("--scene", help="Registry name or cube file (a .npy is memory-mapped).")
    ],
    out: Annotated[
        list[Path],
        typer.Option(
            "--out",
            "-o",
            help="Map file(s): .png (colour map + legend), .npy (class ids), .tif (GeoTIFF, needs rasterio). Repeatable.",
        ),
    ],
    gt: GT = None,
    mask_unlabelled: Annotated[
        bool,
        typer.Option(
            "--mask-unlabelled",
            help="Classify only pixels labelled in the ground truth (the rest is 0 / black).",
        ),
    ] = False,
    tile: Tile = 256,
    batch: Annotated[
        int | None,
        typer.Option(
            "--batch", help="Windows per model call (default: 64 for ONNX Runtime, 256 for PyTorch)."
        ),
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="auto | encode (students: encoder once per tile) | encode-ort (same, windows in ONNX Runtime; auto for students on CPU) | encode-c (C exports: per-pixel part once, windows in C; auto for .c) | patch (per-window inference).",
        ),
    ] = "auto",
    device: Device = "cpu",
    threads: Threads = None,
    progress: Progress = True,
) -> None:
    """Classify every pixel of a scene and write the map, streaming row tiles in bounded memory."""
    cfg = api.PredictConfig(mask_unlabelled=mask_unlabelled, tile=tile, batch=batch, mode=mode, device=device,
                            threads=threads)  # fmt: skip
    with _progress(progress and is_main()) as cb:
        res = api.predict(model, scene, out, cfg, gt=gt, progress=cb, console=console)
    if res is None:  # another torchrun rank: rank 0 writes the map
        return
    sm = res.summary
    counts = np.bincount(res.pred[res.pred >= 0].ravel(), minlength=len(sm["classes"]))
    console.print(
        f"{sm['pixels']:,} px in {sm['seconds']:.2f} s = {sm['px_s']:,.0f} px/s; peak RSS {sm['peak_rss_mb']:.0f} MB; "
        f"{int((counts > 0).sum())} classes present" + (f"; OA over labelled px {100 * sm['oa_labelled']:.2f}% (includes training px)"
        if sm.get("oa_labelled") is not None else ""), highlight=False)  # fmt: skip
    console.print("wrote " + ", ".join(str(p) for p in res.paths) + f" in {res.wall_s:.1f} s")


class _progress:
    """A rich progress bar over scene rows (no callback when disabled)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and os.environ.get("BLMKD_NO_PROGRESS") != "1"
        self._p = None

    def __enter__(self):
        if not self.enabled:
            return None
        self._p = rp.Progress(
            rp.TextColumn("rows"),
            rp.MofNCompleteColumn(),
            rp.BarColumn(),
            rp.TimeRemainingColumn(),
            console=console,
        )
        self._p.__enter__()
        task = self._p.add_task("rows", total=None)
        return lambda done, total: self._p.update(task, completed=done, total=total)

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)
        return False


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
    app.command("predict")(predict)
