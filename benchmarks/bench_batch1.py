"""Batch-1 latency of the default student, side by side: C export vs ONNX Runtime, interleaved rounds.

Target: one patch in <= 0.05 ms (p50). This machine is shared, so instead of one long run
per artifact it runs ``--rounds`` rounds, each timing ``--calls`` batch-1 calls of every artifact in
turn, and prints each artifact's best and median round median and its ratio to the C export per
round (same round, same machine state).

    .venv/bin/python benchmarks/bench_batch1.py [--checkpoint PATH] [--rounds 7] [--calls 2000]

The C export is compiled with ``$BLMKD_CFLAGS`` where set (``... -march=x86-64-v3`` measures the AVX2
build on an AVX-512 machine), else ``-march=native``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from blmkd.api import DEFAULT_STUDENT
from blmkd.bench.predict import open_runner
from blmkd.bundle import bundle_from_checkpoint
from blmkd.checkpoint import load_checkpoint
from blmkd.export.c_export import c_compiler

TARGET_P50_MS = 0.05


def round_median_us(run, x, calls: int) -> float:
    t = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        run(x)
        t[i] = time.perf_counter() - t0
    return float(np.median(t) * 1e6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=f"runs/bench_quant/{DEFAULT_STUDENT}/best.safetensors")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    if c_compiler()[0] is None:
        raise SystemExit(f"the C export needs a C compiler: {c_compiler()[1]}")
    if not Path(args.checkpoint).exists():
        raise SystemExit(f"{args.checkpoint} not found (see benchmarks/bench_scene.py for how to train one)")
    from blmkd.export import export

    ck = load_checkpoint(args.checkpoint)
    b = bundle_from_checkpoint(ck)
    rows, cols, _ = b.coords("test")
    x1 = b.extractor("uint8").gather(rows[:1], cols[:1]).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        arts = export(ck, ["onnx", "onnx-int8-byte", "c"], tmp, eval_size=2048, log=lambda s: None)
        runners = {a.format: open_runner(a.path, threads=1) for a in arts}
        print(
            f"C: {runners['c'].providers[0]}, flags {os.environ.get('BLMKD_CFLAGS') or 'default (-march=native)'}"
        )
        for r in runners.values():  # warm-up
            for _ in range(200):
                r.run(x1)
        res: dict[str, list[float]] = {k: [] for k in runners}
        for i in range(args.rounds):
            for k, r in runners.items():
                res[k].append(round_median_us(r.run, x1, args.calls))
            print(f"round {i + 1}: " + "  ".join(f"{k} {v[-1]:.1f} µs" for k, v in res.items()))
    print(
        f"\n{ck.model_name} ({args.checkpoint}), batch 1, 1 thread, {args.rounds} rounds × {args.calls} calls:"
    )
    for k, v in res.items():
        ratio = [a / c for a, c in zip(v, res["c"])]
        print(f"  {k:16s} best round {min(v):6.1f} µs  median round {statistics.median(v):6.1f} µs  "
              f"÷ C per round: median {statistics.median(ratio):.2f}× (min {min(ratio):.2f}, max {max(ratio):.2f})")  # fmt: skip
    best = min(statistics.median(v) for v in res.values()) / 1e3
    print(f"target p50 <= {TARGET_P50_MS} ms: {'PASS' if best <= TARGET_P50_MS else 'FAIL'} ({best:.4f} ms)")


if __name__ == "__main__":
    main()
