"""Patch-extraction throughput on Indian Pines: P×P×200 windows per second.

Gathers every labelled pixel (10,249) in batches, from the float32 standardized cube and from the
uint8 bytes, and reports the median (and 10th/90th percentiles) of several timed passes after a
warm-up pass.

    python benchmarks/bench_patches.py [--patch 7] [--repeats 9] [--batches 256,4096]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from blmkd.bench.timing import time_samples


def one_pass(ext, rows: np.ndarray, cols: np.ndarray, batch: int) -> None:
    """Gather the windows of every (row, col) once, ``batch`` at a time."""
    for i in range(0, rows.size, batch):
        ext.gather(rows[i : i + batch], cols[i : i + batch])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patch", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--batches", default="256,4096")
    args = ap.parse_args()

    from blmkd.data import load_scene
    from blmkd.data.patches import PatchExtractor, labelled_coords
    from blmkd.data.preprocess import fit_preprocessing

    scene = load_scene("indian_pines")
    rows, cols = labelled_coords(scene.labels >= 0)
    prep = fit_preprocessing(scene.cube, scene.labels >= 0)
    cubes = {"float32": prep.standardize(scene.cube), "uint8": prep.to_bytes(scene.cube)}
    p, n = args.patch, rows.size
    print(f"Indian Pines {scene.height}×{scene.width}×{scene.bands}, {n} labelled pixels, {p}×{p} windows")
    print(
        f"{'dtype':8} {'batch':>6} {'median ms/pass':>15} {'windows/s':>11} {'p10–p90 windows/s':>21} {'MB/s':>8}"
    )
    for name, cube in cubes.items():
        t0 = time.perf_counter()
        ext = PatchExtractor(cube, p)
        setup = time.perf_counter() - t0
        for batch in (int(b) for b in args.batches.split(",")):
            # one warm-up pass (allocator, page faults), then args.repeats timed passes
            times = time_samples(lambda ext=ext, batch=batch: one_pass(ext, rows, cols, batch), warmup=1, runs=args.repeats,
                                 max_seconds=float("inf"), max_runs=args.repeats)  # fmt: skip
            med, p10, p90 = np.percentile(times, [50, 10, 90])
            mb = n * scene.bands * p * p * cube.itemsize / 1e6
            print(
                f"{name:8} {batch:>6} {1e3 * med:>15.1f} {n / med:>11,.0f} "
                f"{f'{n / p90:,.0f}–{n / p10:,.0f}':>21} {mb / med:>8,.0f}"
            )
        print(f"{'':8} (padding the {name} cube once: {1e3 * setup:.1f} ms)")


if __name__ == "__main__":
    main()
