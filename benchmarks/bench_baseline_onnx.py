"""The baselines' ONNX graphs: blmkd's MatMul graphs against skl2onnx's, in ONNX Runtime.

Fits the SVM and k-NN of `blmkd baseline` with fixed settings on Indian Pines' demo split (10 %,
seed 0, 7×7 windows), builds both graphs of each from the same fitted model, checks that they agree,
and times ``session.run`` on a batch of test windows: ``--rounds`` rounds, each timing every graph
in turn, median µs per pixel per graph.

    .venv/bin/python benchmarks/bench_baseline_onnx.py [--window 1] [--batch 2048] [--threads 1] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from blmkd.baselines import pixel_features, to_onnx
from blmkd.bench.timing import time_interleaved
from blmkd.bundle import DataOptions, prepare_data
from blmkd.inference.onnx_runner import ort_session


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=int, default=1)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    bundle = prepare_data(DataOptions(seed=0))
    x, y = pixel_features(bundle, "train", args.window)
    rows, cols, _ = bundle.coords("test")
    windows = bundle.extractor("float").gather(rows[: args.batch], cols[: args.batch]).numpy()
    k = bundle.scene.num_classes
    models = {
        "svm": SVC(C=100.0, gamma=1.0 / x.shape[1], break_ties=True),
        "knn": KNeighborsClassifier(5),
    }
    sessions = {}
    for name, clf in models.items():
        model = Pipeline([("scale", StandardScaler()), ("clf", clf)]).fit(x, y)
        for conv in ("blmkd", "skl2onnx"):
            m = to_onnx(
                name, model, x.shape[1], bundle.patch_size, args.window, np.arange(k), k, converter=conv
            )
            sessions[f"{name} {conv}"] = ort_session(m.SerializeToString(), threads=args.threads)
        a, b = (sessions[f"{name} {c}"].run(["logits"], {"input": windows})[0] for c in ("blmkd", "skl2onnx"))
        print(f"{name}: argmax agreement of the two graphs {100 * float((a.argmax(1) == b.argmax(1)).mean()):.2f}%, "
              f"max |Δscore| {float(np.abs(a - b).max()):.1e}")  # fmt: skip
    for s in sessions.values():
        s.run(["logits"], {"input": windows[:64]})  # warm-up
    calls = {n: (lambda s=s: s.run(["logits"], {"input": windows})) for n, s in sessions.items()}
    times = {
        n: [1e6 * v / len(windows) for v in t]
        for n, t in time_interleaved(calls, args.rounds, warmup=0).items()
    }
    print(f"batch {len(windows)} of {bundle.patch_size}×{bundle.patch_size} windows, {args.threads} thread(s), "
          f"{args.window}×{args.window} features, median of {args.rounds} rounds:")  # fmt: skip
    for n, t in times.items():
        print(f"  {n:14s} {statistics.median(t):8.1f} µs/px")


if __name__ == "__main__":
    main()
