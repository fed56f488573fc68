"""FP32 vs FP16 vs INT8 (QDQ, and byte-input for students) ONNX Runtime sessions of a trained student (or teacher), side by side, on this CPU.

Exports the student with ``blmkd.export.export`` (each file checked against PyTorch on the full
test split), then times the ONNX Runtime sessions in one run, interleaved round-robin so that
machine load hits them alike: median and p90 latency over repeats (each repeat loops for at least
``--min-time`` seconds after warm-up, timed with ``time.perf_counter``) at batch 1 and 1024, with
``intra_op_num_threads=2``. Prints size, OA on the full test split, ΔOA and argmax agreement with
FP32, and the two targets: INT8 OA within 0.3 pp of FP32, INT8 faster than FP32.

The student is ``--checkpoint`` if given, else the newest student ``best.safetensors`` under
``runs/``, else a quick ``--preset`` student trained here into ``runs/bench_quant/<preset>``.

    .venv/bin/python benchmarks/bench_quant.py [--checkpoint runs/student] [--threads 2] [--repeats 15]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from blmkd.bench.timing import time_interleaved
from blmkd.checkpoint import load_checkpoint
from blmkd.defaults import DEFAULT_STUDENT
from blmkd.export import export
from blmkd.inference.onnx_runner import ort_session

OA_TARGET_PP = 0.3
LABELS = {"onnx": "fp32", "onnx-fp16": "fp16", "onnx-int8": "int8", "onnx-int8-byte": "int8-byte"}


def find_student(runs: Path) -> Path | None:
    """The newest student checkpoint under ``runs``."""
    found = []
    for p in runs.glob("**/best.safetensors"):
        side = p.with_suffix(".json")
        try:
            meta = json.loads(side.read_text()) if side.exists() else load_checkpoint(p).meta
        except Exception:  # an unreadable or foreign file is simply not a candidate
            continue
        if meta.get("model", {}).get("family") == "student":
            found.append((p.stat().st_mtime, p))
    return max(found)[1] if found else None


def train_quick(preset: str, epochs: int, out: Path) -> Path:
    from blmkd.bundle import DataOptions, prepare_data
    from blmkd.models import create_model
    from blmkd.training.config import TrainConfig
    from blmkd.training.loop import fit

    print(f"no trained student under runs/: training {preset} for {epochs} epochs into {out} (once)")
    bundle = prepare_data(DataOptions(dataset="indian_pines", patch=7, seed=0))
    torch.manual_seed(0)
    model = create_model(preset, bands=bundle.scene.bands, num_classes=bundle.scene.num_classes)
    model.set_dequant(*[torch.as_tensor(a) for a in bundle.prep.dequant_affine()])
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, warmup_epochs=2, patience=0)
    fit(model, bundle, cfg, out, progress=True)
    return out / "best.safetensors"


def session(path: Path, threads: int) -> ort.InferenceSession:
    return ort_session(
        path, threads=threads, inter_op_num_threads=1, execution_mode=ort.ExecutionMode.ORT_SEQUENTIAL,
        graph_optimization_level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=None, help="student checkpoint or run dir")
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--preset", default=DEFAULT_STUDENT, help="preset to train when no student exists")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--calibration", default="percentile", choices=["minmax", "entropy", "percentile"])
    ap.add_argument("--batches", default="1,1024")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--min-time", type=float, default=0.1, help="seconds per timing sample")
    ap.add_argument(
        "--eval-size",
        type=int,
        default=None,
        help="check OA on a seeded sample of test patches (default: all)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    ckpt = args.checkpoint or find_student(args.runs)
    if ckpt is None:
        ckpt = train_quick(args.preset, args.epochs, args.runs / "bench_quant" / args.preset)
    ck = load_checkpoint(ckpt)
    print(
        f"{platform.processor() or platform.machine()}, onnxruntime {ort.__version__}, torch {torch.__version__}, "
        f"{args.threads} intra-op threads; student {ck.model_name} from {ck.path}"
    )

    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
        input_kind = ck.meta["model"].get("input_kind", "float")
        fmts = ["onnx", "onnx-fp16", "onnx-int8"]
        if input_kind == "uint8":
            fmts.append("onnx-int8-byte")  # byte students: the input bytes into an integer first layer
        arts = export(ck, fmts, tmp, calibration=args.calibration, eval_size=args.eval_size)
        arts = {LABELS[a.format]: a for a in arts}
        sessions = {p: session(a.path, args.threads) for p, a in arts.items()}
        name = sessions["fp32"].get_inputs()[0].name

        from blmkd.bundle import bundle_from_checkpoint

        bundle = bundle_from_checkpoint(ck)
        rows, cols, _ = bundle.coords("test")
        extractor = bundle.extractor(input_kind)
        timings: dict[int, dict[str, list[float]]] = {}
        for bs in (int(b) for b in args.batches.split(",")):
            idx = np.arange(bs) % len(rows)
            x = extractor.gather(rows[idx], cols[idx]).numpy()
            fns = {p: (lambda s=s, x=x: s.run(None, {name: x})) for p, s in sessions.items()}
            timings[bs] = time_interleaved(fns, args.repeats, args.min_time)

    fp32 = arts["fp32"].check
    cols_ = ["precision", "size KiB", "OA %", "ΔOA pp", "agree %"]
    for bs in timings:
        cols_ += [f"b{bs} p50 ms", f"b{bs} p90 ms", f"b{bs} patch/s", f"b{bs} ×FP32"]
    rows_out = []
    med = {bs: {p: statistics.median(t) for p, t in tt.items()} for bs, tt in timings.items()}
    for p, a in arts.items():
        c = a.check
        row = [
            p,
            f"{a.size_bytes / 1024:.1f}",
            f"{100 * c.oa:.2f}",
            f"{100 * (c.oa - fp32.oa):+.2f}",
            f"{100 * c.agreement:.2f}",
        ]
        for bs, tt in timings.items():
            s = sorted(tt[p])
            p90 = s[min(len(s) - 1, int(0.9 * len(s)))]
            row += [
                f"{med[bs][p] * 1e3:.3f}",
                f"{p90 * 1e3:.3f}",
                f"{bs / med[bs][p]:,.0f}",
                f"{med[bs]['fp32'] / med[bs][p]:.2f}",
            ]
        rows_out.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows_out)) for i, h in enumerate(cols_)]
    print()
    print(f"OA on {fp32.pixels} test patches; latency median/p90 over {args.repeats} repeats")
    print("  ".join(h.rjust(w) for h, w in zip(cols_, widths)))
    for r in rows_out:
        print("  ".join(v.rjust(w) for v, w in zip(r, widths)))
    for q in (k for k in ("int8", "int8-byte") if k in arts):
        drop = 100 * (fp32.oa - arts[q].check.oa)
        print()
        print(
            f"target {q} OA within {OA_TARGET_PP} pp of FP32: {'met' if drop <= OA_TARGET_PP else 'MISSED'} (drop {drop:+.2f} pp)"
        )
        for bs in timings:
            sp = med[bs]["fp32"] / med[bs][q]
            print(f"target {q} faster than FP32 at batch {bs}: {'met' if sp > 1 else 'MISSED'} ({sp:.2f}×)")


if __name__ == "__main__":
    main()
