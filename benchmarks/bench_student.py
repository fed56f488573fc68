"""Throughput of the BLM student presets on CPU, in PyTorch and in ONNX Runtime.

Feeds uint8 patches ``(N, bands, P, P)`` (the deployed input) at batch sizes 1, 256 and 4096 and
prints patches/s (median of repeats, after a warm-up, timed with ``time.perf_counter``) and the
p90 time per call. ONNX models are exported with opset 17 (TorchScript exporter, dynamic batch)
into a temporary folder and checked against PyTorch before timing.

    .venv/bin/python benchmarks/bench_student.py [--presets blm_t,blm_s] [--threads 2] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch.utils.flop_counter import FlopCounterMode

from blmkd.bench.timing import time_repeats
from blmkd.models import create_model, list_models


def _time(fn, repeats: int, min_time: float = 0.05, budget: float = 3.0) -> tuple[float, float]:
    """Median and p90 seconds per call, after a warm-up call.

    Each repeat loops until ``min_time`` has passed (so that µs-calls are timed in bulk); repeats
    stop early once ``budget`` seconds are spent and three are done (slow presets at large batches).
    """
    per_call = time_repeats(fn, repeats, min_time=min_time, warmup=1, budget=budget)
    return statistics.median(per_call), per_call[min(len(per_call) - 1, int(0.9 * len(per_call)))]


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    torch.onnx.export(
        model,
        (example,),
        str(path),
        opset_version=17,
        dynamo=False,
        input_names=["patches"],
        output_names=["logits"],
        dynamic_axes={"patches": {0: "batch"}, "logits": {0: "batch"}},
    )


def bench_preset(name: str, args, so: ort.SessionOptions, folder: Path, rng: np.random.Generator) -> None:
    model = create_model(name, args.bands, args.classes).eval()
    params = sum(p.numel() for p in model.parameters())
    shape = (args.bands, args.patch, args.patch)
    x1 = torch.from_numpy(rng.integers(0, 256, (1, *shape), dtype=np.uint8))
    flops = FlopCounterMode(display=False)
    with flops, torch.inference_mode():
        model(x1)
    path = folder / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        export_onnx(model, x1, path)
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    for bs in [int(b) for b in args.batches.split(",")]:
        x = rng.integers(0, 256, (bs, *shape), dtype=np.uint8)
        xt = torch.from_numpy(x)
        with torch.inference_mode():
            err = float(np.abs(model(xt).numpy() - sess.run(None, {"patches": x})[0]).max())
            if err > 1e-3:
                raise SystemExit(f"{name}: onnxruntime differs from torch by {err:.2e}")
            t_torch, p90_torch = _time(lambda xt=xt: model(xt), args.repeats)
        t_ort, p90_ort = _time(lambda x=x: sess.run(None, {"patches": x}), args.repeats)
        print(
            f"{name:<10} {params:>8,} {flops.get_total_flops() / 1e6:>6.2f} {bs:>6} "
            f"{bs / t_torch:>11,.0f} {bs / t_ort:>11,.0f} {p90_torch * 1e3:>12.3f} {p90_ort * 1e3:>11.3f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default=",".join(n for n in list_models("student") if n != "blm_test"))
    ap.add_argument("--bands", type=int, default=200)
    ap.add_argument("--classes", type=int, default=16)
    ap.add_argument("--patch", type=int, default=7)
    ap.add_argument("--batches", default="1,256,4096")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, onnxruntime {ort.__version__}, "
        f"{args.threads} threads, {args.bands} bands, {args.patch}x{args.patch} uint8 patches, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (others' load skews the timings)"
    )
    header = (
        f"{'preset':<10} {'params':>8} {'MFLOP':>6} {'batch':>6} {'torch p/s':>11} {'ort p/s':>11} "
        f"{'torch p90 ms':>12} {'ort p90 ms':>11}"
    )
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets.split(","):
            bench_preset(name, args, so, Path(tmp), rng)


if __name__ == "__main__":
    main()
