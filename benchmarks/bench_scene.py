"""Whole-scene mapping speed and batch-1 latency of the default student on this CPU, per path.

Targets: the default student (``blm_t``) maps a full scene at >= 50,000 px/s (the best of
its FP32/INT8 artifacts and mapping paths) and answers one patch in <= 0.05 ms (p50, batch 1).

For the student checkpoint (default ``runs/bench_quant/<default student>/best.safetensors``) this exports FP32
and INT8 ONNX (checked against PyTorch by the exporter) into a temporary folder, then

* maps the checkpoint's whole scene (Indian Pines: 145 x 145 = 21,025 px) with every path:
  PyTorch per patch, PyTorch ``encode`` (encoder once per tile), ``encode-ort`` (windows in ONNX
  Runtime; 1 and 2 worker threads), ONNX FP32 / INT8 / INT8 byte-input per patch (1 and 2 ORT threads), the C export (``encode-c``: per-pixel part once per tile, windows in C; and per patch; 1 and 2 threads); the time
  covers reading, preprocessing and inference of the whole scene, best and median of repeats;
* times batch-1 latency (p50/p90/p99 after warm-up) of PyTorch and of the ONNX files with 1 and 2
  ORT threads, and of the C export (``export --c``, where a C compiler is present) in the calling
  thread.

It also reports how much CPU the process got (process CPU time / wall time) and this machine's FP32
GEMM speed at the start and the end: the box has two cores that other tenants share, and the same
code ran 1.4x slower on one day than on another, so compare runs by those figures too.

    .venv/bin/python benchmarks/bench_scene.py [--checkpoint PATH] [--repeats 5] [--json logs/bench_scene.json] [--only "c "]

The C export is compiled with ``$BLMKD_CFLAGS`` where set (e.g. ``-O3 -ffp-contract=fast -fno-math-errno
-std=c99 -march=x86-64-v3`` for an AVX2 build on an AVX-512 machine), else ``-march=native``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from blmkd.api import DEFAULT_STUDENT
from blmkd.bench.predict import SceneClassifier, open_runner, predict_scene
from blmkd.bench.timing import time_call
from blmkd.bundle import bundle_from_checkpoint
from blmkd.checkpoint import load_checkpoint
from blmkd.export.c_export import c_compiler

TARGET_PX_S = 50_000
TARGET_P50_MS = 0.05


def machine_speed() -> dict:
    """Best FP32 GEMM GFLOP/s with 1 thread and with torch's threads: how fast this shared machine is right now."""
    from blmkd.bench.machine import matmul_peak_gflops

    threads = torch.get_num_threads()
    out = {}
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        out[str(n)] = matmul_peak_gflops("cpu")["gflops"]
    torch.set_num_threads(threads)
    return out


def cpu_share(fn):
    """Run ``fn``; return (its result, process CPU seconds / wall seconds)."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, (time.process_time() - c0) / max(1e-9, time.perf_counter() - t0)


def _engine(fmt: str) -> str:
    return "C" if fmt == "c" else "ORT"


def map_speed(clf: SceneClassifier, cube, repeats: int, labels) -> dict:
    predict_scene(clf, cube[:32])  # warm-up: allocator, ORT arenas, lazy inits
    runs = []
    for _ in range(repeats):
        sm, share = cpu_share(lambda: predict_scene(clf, cube))
        runs.append((sm.px_per_s, share))
    lab = labels >= 0
    pxs = [r[0] for r in runs]
    return {
        "path": f"{clf.runner.backend} {clf.runner.meta.get('precision', 'fp32')} {clf.mode}",
        "mode": clf.mode,
        "workers": clf.workers,
        "batch": clf.default_batch,
        "best_px_s": max(pxs),
        "median_px_s": statistics.median(pxs),
        "cpu_share": statistics.median(r[1] for r in runs),
        "oa_labelled": float((sm.pred[lab] == labels[lab]).mean()),
        "note": clf.note,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=f"runs/bench_quant/{DEFAULT_STUDENT}/best.safetensors")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--runs", type=int, default=2000, help="timed batch-1 calls")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated substrings: run only the configurations whose name has one (e.g. 'c ')",
    )
    args = ap.parse_args()
    if not Path(args.checkpoint).exists():
        raise SystemExit(
            f"{args.checkpoint} not found: train one, e.g. `blmkd train-student --student {DEFAULT_STUDENT} --epochs 100 --patience 0 --out runs/bench_quant/{DEFAULT_STUDENT}`"
        )

    from blmkd.export import export

    ck = load_checkpoint(args.checkpoint)
    bundle = bundle_from_checkpoint(ck)
    cube, labels = bundle.scene.cube, bundle.scene.labels
    threads = torch.get_num_threads()
    print(f"{ck.model_name} from {args.checkpoint}; scene {bundle.scene.name} {cube.shape}; "
          f"torch threads {threads}; cores {os.cpu_count()}; load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    results: dict = {
        "machine_gemm_start": machine_speed(),
        "checkpoint": args.checkpoint,
        "model": ck.model_name,
        "scene": list(cube.shape),
        "maps": [],
        "latency": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        fmts = ["onnx", "onnx-int8", "onnx-int8-byte"] + (["c"] if c_compiler()[0] else [])
        arts = export(ck, fmts, tmp, eval_size=2048, log=lambda s: None)
        onnx = {a.format: a.path for a in arts}  # and the C export, run through ctypes
        configs = [
            ("pytorch patch", lambda: SceneClassifier.from_runner(open_runner(ck.path), "patch")),
            ("pytorch encode", lambda: SceneClassifier.from_runner(open_runner(ck.path), "encode")),
            ("encode-ort, 1 worker", lambda: SceneClassifier.from_runner(open_runner(ck.path), "encode-ort", threads=1)),
            ("encode-ort, 2 workers", lambda: SceneClassifier.from_runner(open_runner(ck.path), "encode-ort", threads=2)),
        ]  # fmt: skip
        for fmt, path in onnx.items():
            for mode in ("encode-c", "patch") if fmt == "c" else ("patch",):
                for th in (1, 2):
                    configs.append((f"{fmt} {mode}, {th} {_engine(fmt)} threads",
                                    lambda path=path, th=th, mode=mode: SceneClassifier.from_runner(open_runner(path, threads=th), mode)))  # fmt: skip
        print(
            f"\nwhole-scene map, {cube.shape[0] * cube.shape[1]:,} px, best / median of {args.repeats} (CPU share: process CPU s / wall s)"
        )
        only = [w for w in args.only.split(",") if w]
        configs = [(n, m) for n, m in configs if not only or any(w in n for w in only)]
        for name, make in configs:
            r = map_speed(make(), cube, args.repeats, labels)
            r["config"] = name
            results["maps"].append(r)
            print(f"  {name:34s} best {r['best_px_s']:>9,.0f} px/s  median {r['median_px_s']:>9,.0f}  "
                  f"CPU share {r['cpu_share']:.2f}  OA(labelled) {100 * r['oa_labelled']:.2f}%  batch {r['batch']}")  # fmt: skip

        print(f"\nbatch-1 latency, {args.runs} calls after warm-up")
        x1 = bundle.extractor("uint8").gather(*[a[:1] for a in bundle.coords("test")[:2]]).numpy()
        lat_cfgs = [(f"pytorch, {n} torch threads", open_runner(ck.path), n) for n in sorted({1, threads})]
        for fmt, path in onnx.items():
            for th in (1, 2):
                if fmt != "c" or th == 1:  # batch 1 never splits over C threads
                    lat_cfgs.append(
                        (f"{fmt}, {th} {_engine(fmt)} threads", open_runner(path, threads=th), threads)
                    )
        lat_cfgs = [c for c in lat_cfgs if not only or any(w in c[0] for w in only)]
        for name, runner, n in lat_cfgs:
            if getattr(runner, "backend", "") == "c":
                print(
                    f"  ({name}: {runner.providers[0]}, flags {os.environ.get('BLMKD_CFLAGS') or 'default'})"
                )
            torch.set_num_threads(n)
            t = time_call(lambda runner=runner: runner.run(x1), warmup=50, runs=args.runs, max_seconds=20)
            results["latency"].append({"config": name, **t.to_dict()})
            print(
                f"  {name:34s} p50 {t.p50_ms:.4f} ms  p90 {t.p90_ms:.4f}  p99 {t.p99_ms:.4f}  min {t.min_ms:.4f}"
            )
        torch.set_num_threads(threads)

    best_map = max(results["maps"], key=lambda r: r["best_px_s"])
    best_lat = min(results["latency"], key=lambda r: r["p50_ms"])
    results["targets"] = {
        "map_px_s": {"target": TARGET_PX_S, "best": best_map["best_px_s"], "config": best_map["config"],
                     "passed": best_map["best_px_s"] >= TARGET_PX_S},
        "latency_p50_ms": {"target": TARGET_P50_MS, "best": best_lat["p50_ms"], "config": best_lat["config"],
                           "passed": best_lat["p50_ms"] <= TARGET_P50_MS},
    }  # fmt: skip
    results["load_avg_1min_end"] = os.getloadavg()[0]
    results["machine_gemm_end"] = machine_speed()
    g0, g1 = results["machine_gemm_start"], results["machine_gemm_end"]
    print(f"\nthis machine's FP32 GEMM (1024², best of 10), start / end: 1 thread {g0['1']:.0f} / {g1['1']:.0f} GFLOP/s, "
          f"{threads} threads {g0[str(threads)]:.0f} / {g1[str(threads)]:.0f} (compare runs by these, not only by px/s)")  # fmt: skip
    print("\ntargets:")
    for key, t in results["targets"].items():
        op = ">=" if key == "map_px_s" else "<="
        print(
            f"  {key}: {t['best']:,.4g} ({t['config']}) {op} {t['target']:,}: {'PASS' if t['passed'] else 'FAIL'}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=float))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
