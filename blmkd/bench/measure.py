"""One artifact measured: accuracy on the test split, latency and throughput, memory, size and compute,
power on a Jetson, and (with a report) its whole-scene map.

Latency is batch-1 p50/p90/p99 after warm-up (:func:`blmkd.bench.timing.time_samples`: ``time.perf_counter``,
CUDA synchronized) over ``runs`` calls and at least :data:`LATENCY_MIN_SECONDS`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from blmkd.bench.jobs import Job, format_label, job_label, open_job
from blmkd.bench.memory import PeakMemory
from blmkd.bench.scene_data import Extractors, check_fits
from blmkd.bench.tegrastats import TegrastatsMonitor, energy_per_kpx_mj, tegrastats_status
from blmkd.bench.timing import percentiles, time_samples
from blmkd.errors import BlmkdError
from blmkd.flops import count_flops, count_params
from blmkd.inference.classifier import SceneClassifier
from blmkd.inference.scene import predict_scene
from blmkd.metrics import classification_report
from blmkd.models import create_model

_MAX_SAMPLES_KEPT = 2000  # raw latency samples kept per artifact for the distribution plot
#: Batch-1 latency is timed for at least this long (after ``runs`` calls, and a warm-up of a tenth
#: of it): ``--runs 100`` of a 30 µs C export alone are 3 ms, and the demo's short run once gave
#: that export a p50 of 0.056 ms where 2,000 calls give 0.033 (2-core AMD EPYC, 2026-12-03).
LATENCY_MIN_SECONDS = 0.5


def model_stats(runner, stats_cache: dict) -> dict:
    """Parameters and FLOPs per pixel: from the PyTorch model where there is one, else from the
    same source checkpoint benchmarked earlier, else from the preset rebuilt with its defaults."""
    if runner.meta.get("family") == "baseline":  # scikit-learn models: their export records both
        return {"parameters": runner.meta.get("parameters"), "flops_per_px": runner.meta.get("flops_per_px"),
                "stats_from": "artifact metadata"}  # fmt: skip
    key = runner.meta.get("source_sha256") or runner.meta.get("model")
    model = getattr(runner, "model", None) or getattr(getattr(runner, "base", None), "model", None)
    if model is None and key in stats_cache:
        return {**stats_cache[key], "stats_from": "source checkpoint"}
    how = "this model"
    if model is None:
        meta = runner.meta
        try:
            model = create_model(
                meta["model"], bands=int(meta["bands"]), num_classes=int(meta["num_classes"])
            ).eval()
        except (KeyError, BlmkdError):
            return {
                "parameters": None,
                "flops_per_px": None,
                "stats_from": "unknown (no model name in metadata)",
            }
        how = f"preset {meta['model']} (default config)"
    p = int(runner.meta.get("patch_size") or 7)
    dev = next(model.parameters()).device
    # batch 1, as everywhere FLOPs are shown (blmkd.flops): the teachers do per-call work a batch amortizes
    x = torch.zeros((1, int(runner.meta.get("bands") or model.config.bands), p, p), device=dev)
    if getattr(model, "input_kind", "float") == "uint8":
        x = x.to(torch.uint8)
    out = {"parameters": count_params(model), "flops_per_px": int(count_flops(model, x)), "stats_from": how}
    if how == "this model":
        stats_cache[key] = {k: out[k] for k in ("parameters", "flops_per_px")}
    return out


@dataclass
class BenchContext:
    bundle: object
    rows: np.ndarray
    cols: np.ndarray
    labels: np.ndarray
    extractors: Extractors
    batches: tuple[int, ...]
    runs: int
    threads: int | None
    maps: bool
    tile: int
    power: bool
    stats: dict = field(default_factory=dict)
    log: Callable[[str], None] = print


def _sync_for(job: Job):
    if job.device == "cuda" and job.kind == "checkpoint":
        return torch.cuda.synchronize
    return None


def bench_one(job: Job, ctx: BenchContext) -> tuple[dict, dict]:
    """Benchmark one job; returns (JSON row, extras with the predictions for agreement and maps)."""
    row: dict = {"name": job_label(job), "path": str(job.path), "kind": job.kind, "device": job.device,
                 "variant": job.variant, "status": "ok", "reason": ""}  # fmt: skip
    extras: dict = {}
    if job.skip:
        row.update(status="skipped", reason=job.skip, format=job_label(job))
        return row, extras
    mem_device = "cuda" if (job.device == "cuda" and job.kind == "checkpoint") else "cpu"
    try:
        with PeakMemory(mem_device) as mem:
            runner = open_job(job, ctx.threads)
            check_fits(runner, ctx.bundle)
            own = (runner.meta.get("split") or {}).get("digest")
            if own and own != ctx.bundle.split.spec.get("digest"):
                row["other_split"] = (
                    own  # trained on other pixels: some test pixels may be its training pixels
                )
            fmt = format_label(runner, job)
            model = runner.meta.get("model", "?")
            row.update(format=fmt, name=f"{model} · {fmt}", model=model, precision=runner.meta.get("precision", "fp32"),
                       family=runner.meta.get("family", ""), source_sha256=runner.meta.get("source_sha256"),
                       backend=getattr(runner, "backend", ""), providers=getattr(runner, "providers", None),
                       size_mb=runner.size_bytes / 1e6, input_kind=runner.input_kind)  # fmt: skip
            row["recorded"] = {k: runner.meta.get(k) for k in ("check", "checkpoint_test_oa", "split")}
            ex = ctx.extractors.get(runner.input_kind, runner.meta["preprocessing"])
            _evaluate(runner, ex, ctx, row, extras)
            _time(runner, ex, job, ctx, row)
        row["memory_mb"], row["memory_method"] = mem.peak_mb, mem.method
        row.update(model_stats(runner, ctx.stats))
        if ctx.maps:
            _map(runner, ctx, row, extras)
    except Exception as exc:  # noqa: BLE001  (a failing artifact keeps its row, with the reason)
        row.update(
            status="failed", reason=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        )
        row.setdefault("format", job_label(job))
        ctx.log(f"{row['name']}: failed: {row['reason']}")
    return row, extras


def _evaluate(runner, ex, ctx: BenchContext, row: dict, extras: dict) -> None:
    bs = max(ctx.batches)
    logits = [
        runner.run(ex.gather(ctx.rows[i : i + bs], ctx.cols[i : i + bs]).numpy())
        for i in range(0, len(ctx.rows), bs)
    ]
    pred = np.concatenate(logits).argmax(1)
    sc = ctx.bundle.scene
    rep = classification_report(ctx.labels, pred, sc.num_classes)
    d = rep.to_dict(sc.class_ids, sc.class_names)
    row.update(oa=d["oa"], aa=d["aa"], kappa=d["kappa"], per_class=d["per_class"], test_pixels=int(len(pred)))
    extras["test_pred"] = pred
    extras["confusion"] = rep.confusion


def _inputs(ex, ctx: BenchContext, n: int) -> np.ndarray:
    idx = np.resize(np.arange(len(ctx.rows)), n)  # repeats the test pixels if there are fewer than n
    return ex.gather(ctx.rows[idx], ctx.cols[idx]).numpy()


def _time(runner, ex, job: Job, ctx: BenchContext, row: dict) -> None:
    sync = _sync_for(job)
    x1 = _inputs(ex, ctx, 1)
    s = time_samples(
        lambda: runner.run(x1),
        warmup=10,
        runs=ctx.runs,
        max_seconds=10.0,
        sync=sync,
        min_seconds=LATENCY_MIN_SECONDS,
    )
    row["latency"] = percentiles(s).to_dict()
    row["latency_samples_ms"] = [float(v) for v in (s[:_MAX_SAMPLES_KEPT] * 1e3)]
    thr = [{"batch": 1, "p50_ms": row["latency"]["p50_ms"], "px_s": 1e3 / row["latency"]["p50_ms"]}]
    big = sorted({b for b in ctx.batches if b > 1})
    for b in big:
        xb = _inputs(ex, ctx, b)
        t = percentiles(
            time_samples(
                lambda xb=xb: runner.run(xb),
                warmup=2,
                runs=max(3, ctx.runs // 10),
                max_seconds=10.0,
                sync=sync,
            )
        )
        thr.append({"batch": b, "p50_ms": t.p50_ms, "px_s": b * 1e3 / t.p50_ms})
    row["throughput"] = thr
    row["best_px_s"] = max(t["px_s"] for t in thr)
    row["power_w"] = row["energy_mj_per_kpx"] = None
    if not ctx.power:
        row["power_note"] = tegrastats_status()[1] if not tegrastats_status()[0] else "disabled"
        return
    b = big[-1] if big else 1
    xb = _inputs(ex, ctx, b)
    with TegrastatsMonitor() as mon:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 2.0:  # long enough for ~20 tegrastats samples
            runner.run(xb)
            n += b
        if sync:
            sync()
        dt = time.perf_counter() - t0
    summ = mon.summary()
    if "power_w" in summ:
        row["power_w"], row["power_max_w"] = summ["power_w"], summ["max_power_w"]
        row["energy_mj_per_kpx"] = energy_per_kpx_mj(summ["power_w"], dt, n)
        row["power_note"] = f"tegrastats {summ['source']}, {summ['samples']} samples at batch {b}"
        row["board_ram_peak_mb"] = summ.get("ram_peak_mb")
    else:
        row["power_note"] = summ["error"]


def _map(runner, ctx: BenchContext, row: dict, extras: dict) -> None:
    clf = SceneClassifier.from_runner(runner, threads=ctx.threads)
    sm = predict_scene(clf, ctx.bundle.scene.cube, tile=ctx.tile)
    row["map"] = {
        "px_s": sm.px_per_s,
        "seconds": sm.seconds,
        "pixels": sm.pixels,
        "mode": sm.mode,
        "tile": sm.tile,
        "batch": sm.batch,
        "note": clf.note,
    }
    extras["map"] = sm.pred
