"""`blmkd bench`: every artifact of a model on the same test split, timed the same way, in one table.

For each artifact (PyTorch checkpoint, ONNX FP32/FP16/INT8, TensorRT engine) :func:`run_bench`
measures, in this order and in this process:

* accuracy: OA/AA/κ on the test split the first checkpoint (or the first ONNX file's metadata)
  was tested on, each artifact fed through its own recorded preprocessing, and the argmax
  agreement with the model's FP32 reference (the first FP32 artifact with the same source
  checkpoint);
* latency: batch-1 p50/p90/p99 after warm-up (``time.perf_counter``; CUDA synchronized), over
  ``runs`` calls and at least :data:`blmkd.bench.measure.LATENCY_MIN_SECONDS`;
* throughput: pixels per second at the larger batches;
* peak memory while it is opened, evaluated and timed (:class:`blmkd.bench.memory.PeakMemory`);
* size, parameters, FLOPs per pixel, and the fraction of this machine's measured FP32 matmul peak
  the model's FLOPs reach at its best throughput;
* on a Jetson, board power from tegrastats during the largest batch, and energy per 1,000 pixels;
* with a report, the whole-scene classification map (:mod:`blmkd.inference.scene`) and its speed.

An artifact that fails (cannot load, wrong bands, a device this machine lacks) keeps its row with
the reason. The result is a JSON-ready dict; :mod:`blmkd.bench.report` turns it into a report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from blmkd.bench.budgets import default_target, get_profile, judge, load_profiles, with_sensor
from blmkd.bench.jobs import artifact_kind, job_label, plan_jobs
from blmkd.bench.machine import cuda_status, jetson_model, machine_info, matmul_peak_gflops
from blmkd.bench.measure import BenchContext, bench_one
from blmkd.bench.report import baseline_lines, write_report
from blmkd.bench.scene_data import Extractors, bench_bundle
from blmkd.bench.sensors import get_sensor
from blmkd.bench.tegrastats import tegrastats_status
from blmkd.errors import BlmkdError, DataError, ModelError
from blmkd.io import check_writable_dir

FORMAT = "blmkd-bench/1"
DEFAULT_BATCHES = (1, 64, 1024)


@contextmanager
def _torch_threads(n: int | None):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run_bench(
    models,
    report_dir: str | Path | None = None,
    *,
    dataset: str | None = None,
    targets: list[str] | None = None,
    targets_file: str | Path | None = None,
    sensor: str | None = None,
    batches: tuple[int, ...] | list[int] = DEFAULT_BATCHES,
    device: str = "cpu",
    runs: int = 100,
    threads: int | None = None,
    eval_size: int | None = None,
    maps: bool | None = None,
    tile: int = 256,
    seed: int = 0,
    cpu_bf16: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Benchmark artifacts on one test split and (with ``report_dir``) write the report.

    Args:
        models: checkpoint files or run directories, ONNX files, TensorRT engines.
        report_dir: folder for report.md/.html/.json and the plots (None: no report).
        dataset: read this dataset (registry name or path) instead of the recorded one.
        targets: target profile names (``jetson-orin-nano@7W`` picks a power mode); default the one
            describing this machine.
        targets_file: TOML overriding or adding profiles (see :mod:`blmkd.bench.budgets`).
        sensor: a sensor preset (``enmap``, ...) or ``swath=PX,rate=LINES_PER_S`` (see
            :func:`blmkd.bench.budgets.get_sensor`): every target's throughput budget becomes the
            pixel rate of that sensor, and the verdicts say with what margin the artifact keeps up.
        batches: batch sizes; 1 gives the latency, the others the throughput.
        device: ``cpu`` or ``cuda``.
        cpu_bf16: on CPU, also run checkpoints under BF16 autocast (skipped with the reason on a CPU
            without BF16 dot products).
        runs: timed calls at batch 1 (a tenth of it, at least 3, at the larger batches).
        threads: torch and ONNX Runtime intra-op threads (default: the libraries' own).
        eval_size: evaluate on a seeded sample of this many test pixels (default: all).
        maps: classify the whole scene with every artifact (default: only with a report).
        tile: rows per tile of the scene maps.
        seed: seed of the ``eval_size`` sample.
        log: where progress lines go.

    Returns:
        A JSON-serialisable dict: ``machine``, ``matmul_peak``, ``data``, ``settings``, ``rows`` (one
        per artifact and device variant, failed ones with their ``reason``), ``targets``,
        ``verdicts`` and, with a report, ``report`` (the files written).
    """
    paths = [Path(m) for m in models]
    if not paths:
        raise BlmkdError("no models given")
    for p in paths:
        if not p.exists():
            raise ModelError(f"model not found: {p}")
        artifact_kind(p)
    batches = tuple(sorted({int(b) for b in batches}))
    if not batches or min(batches) < 1:
        raise BlmkdError("--batch sizes must be positive integers")
    if runs < 1:
        raise BlmkdError("--runs must be at least 1")
    if device not in ("cpu", "cuda"):
        raise BlmkdError(f"--device must be cpu or cuda, not {device!r}")
    if report_dir is not None:
        check_writable_dir(report_dir, "--report")  # before the benchmark, not after it
    profiles = load_profiles(targets_file)
    chosen = [get_profile(t, profiles) for t in (targets or [default_target(device)])]
    sensor_obj = get_sensor(sensor) if sensor else None
    if sensor_obj is not None:
        chosen = [with_sensor(p, sensor_obj) for p in chosen]
        log(f"sensor {sensor_obj.text()}")
    maps = bool(report_dir) if maps is None else maps

    bundle, data_source = bench_bundle(paths, dataset)
    rows_, cols_, labels_ = bundle.coords("test")
    if len(rows_) == 0:
        raise DataError("the split has no test pixels to benchmark on")
    if eval_size is not None and eval_size < len(rows_):
        if eval_size < 1:
            raise BlmkdError("--eval-size must be at least 1")
        pick = np.sort(np.random.default_rng(seed).choice(len(rows_), eval_size, replace=False))
        rows_, cols_, labels_ = rows_[pick], cols_[pick], labels_[pick]
    jobs = plan_jobs(paths, device, cpu_bf16=cpu_bf16)
    power_ok = tegrastats_status()[0]
    ctx = BenchContext(bundle, rows_, cols_, labels_, Extractors(bundle.scene, bundle.patch_size), batches, runs, threads,
               maps, tile, power_ok, log=log)  # fmt: skip

    with _torch_threads(threads):
        peak_dev = device if (device == "cpu" or cuda_status()[0]) else None
        peak = matmul_peak_gflops(peak_dev) if peak_dev else {"gflops": None, "note": cuda_status()[1]}
        log(
            f"matmul peak here: {peak['gflops']:.1f} GFLOP/s (FP32)"
            if peak["gflops"]
            else f"matmul peak: {peak['note']}"
        )
        rows, extras = [], []
        for job in jobs:
            log(f"benchmarking {job_label(job)}")
            r, e = bench_one(job, ctx)
            rows.append(r)
            extras.append(e)

    _agreement(rows, extras)
    _check_recorded(rows, bundle, evaluated_all=len(rows_) == len(bundle.coords("test")[0]))
    _unique_names(rows)
    for r in rows:
        if r["status"] == "ok" and peak.get("gflops") and r.get("flops_per_px"):
            r["peak_fraction"] = r["flops_per_px"] * r["best_px_s"] / (peak["gflops"] * 1e9)
    measured_on = "jetson" if jetson_model() else device
    verdicts = [judge(p, r, measured_on).to_dict() for p in chosen for r in rows if r["status"] == "ok"]
    sc = bundle.scene
    result = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(device),
        "matmul_peak": peak,
        "data": {
            "scene": sc.name, "shape": [sc.height, sc.width, sc.bands], "classes": sc.classes(),
            "split": {k: v for k, v in bundle.split.spec.items() if k != "counts"},
            "patch_size": bundle.patch_size, "test_pixels": int(len(bundle.coords("test")[0])),
            "evaluated_pixels": int(len(rows_)), "from": data_source,
        },
        "settings": {"batches": list(batches), "runs": runs, "device": device, "threads": threads,
                     "eval_size": eval_size, "maps": maps, "tile": tile},
        "rows": rows,
        "targets": [p.to_dict() for p in chosen],
        "sensor": sensor_obj.to_dict() if sensor_obj is not None else None,
        "verdicts": verdicts,
        "baselines": baseline_lines(rows),
    }  # fmt: skip
    if report_dir is not None:
        result["report"] = write_report(result, extras, Path(report_dir), bundle)
    return json.loads(json.dumps(result, default=_json_default))


def _agreement(rows: list[dict], extras: list[dict]) -> None:
    """Argmax agreement of each artifact with its model's FP32 reference on the test pixels."""
    refs: dict = {}
    for i, r in enumerate(rows):
        if r["status"] != "ok":
            continue
        key = r.get("source_sha256") or r.get("model")
        if key not in refs and r.get("precision") == "fp32":
            refs[key] = i
    for i, r in enumerate(rows):
        if r["status"] != "ok":
            continue
        j = refs.get(r.get("source_sha256") or r.get("model"))
        if j is None:
            r["agreement"], r["reference"] = None, None
            continue
        r["agreement"] = float((extras[i]["test_pred"] == extras[j]["test_pred"]).mean())
        r["reference"] = rows[j]["name"]


#: How far an export may fall below what its own export check recorded before bench refuses it:
#: bench's pixels are not the check's, so a little slack, but never the ✅ of a broken file.
RECORDED_SLACK = 0.05


def _check_recorded(rows: list[dict], bundle, evaluated_all: bool) -> None:
    """Fail an export whose results here contradict the check recorded when it was exported:
    its argmax agreement with its PyTorch checkpoint (when that is benchmarked too), else its OA
    against the checkpoint's recorded test OA (on the same split, all test pixels)."""
    split_digest = bundle.split.spec.get("digest")
    for r in rows:
        rec = r.pop("recorded", None)
        if r["status"] != "ok" or r["kind"] == "checkpoint" or not rec:
            continue
        check = rec.get("check") or {}
        why = ""
        if r.get("agreement") is not None and isinstance(check.get("agreement"), (int, float)):
            want = float(check["agreement"]) - RECORDED_SLACK
            if r["agreement"] < want:
                why = (f"agrees with its PyTorch checkpoint on {100 * r['agreement']:.2f}% of the test pixels; "
                       f"its export check recorded {100 * check['agreement']:.2f}%")  # fmt: skip
        elif evaluated_all and isinstance(rec.get("checkpoint_test_oa"), (int, float)):
            same_split = split_digest and (rec.get("split") or {}).get("digest") == split_digest
            if same_split and r["oa"] < float(rec["checkpoint_test_oa"]) - RECORDED_SLACK:
                why = (f"OA {100 * r['oa']:.2f}% on its own test split, its checkpoint recorded "
                       f"{100 * rec['checkpoint_test_oa']:.2f}%")  # fmt: skip
        if why:
            r.update(status="failed", reason=f"fails its recorded export check: {why}")


def _unique_names(rows: list[dict]) -> None:
    """Give rows that share a label (two checkpoints of one preset) their file names too."""
    seen: dict[str, int] = {}
    for r in rows:
        seen[r["name"]] = seen.get(r["name"], 0) + 1
    for r in rows:
        if seen[r["name"]] > 1:
            p = Path(r["path"])
            r["name"] = (
                f"{r['name']} ({p.parent.name}/{p.name})" if p.parent.name else f"{r['name']} ({p.name})"
            )
    counts: dict[str, int] = {}
    for r in rows:  # the same file twice (or two run folders of one name): number them
        counts[r["name"]] = counts.get(r["name"], 0) + 1
    again = {k for k, v in counts.items() if v > 1}
    index: dict[str, int] = {}
    for r in rows:
        if r["name"] in again:
            index[r["name"]] = index.get(r["name"], 0) + 1
            r["name"] = f"{r['name']} #{index[r['name']]}"


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
