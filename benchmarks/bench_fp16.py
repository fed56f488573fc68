"""FP16 ONNX of a student: blmkd's converter (``to_fp16``) against the maintained library converters.

Exports the checkpoint's FP32 graph with ``blmkd.export.export`` (checked against PyTorch), then
converts it to FP16 with

* ``blmkd``: :func:`blmkd.export.onnx_export.to_fp16` with :func:`ssm_decay_island` kept in FP32;
* ``ort``: ``onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True,
  node_block_list=<the same island>)`` (its default op block list adds ``CumSum``);
* ``ort-ops``: the same without the node block list (only its default op block list);
* ``occ``: ``onnxconverter_common.float16.convert_float_to_float16`` with the island blocked, where
  that package is importable (it is not a blmkd dependency: install it beside, e.g.
  ``pip install --no-deps --target runs/occ onnxconverter-common`` and set ``PYTHONPATH=runs/occ``).

For each: the max |error| of the SSM decays (the FP32 island's ``Exp`` outputs) on 2048 test
patches, Cast nodes in the graph and in the graph ONNX Runtime runs after its own optimizations
(which adds Casts around ops it has no FP16 CPU kernel for), max |Δlogit| against the FP32 ONNX graph and argmax agreement on
every test patch of the checkpoint's split, and ONNX Runtime latency (CPU provider, ``--threads``
intra-op threads, ORT_ENABLE_ALL) at batch 1 and 1024: the sessions are timed round-robin so that
machine load hits them alike, each sample loops for at least ``--min-time`` s after warm-up
(``time.perf_counter``), and the table gives medians over ``--repeats`` samples.

    .venv/bin/python benchmarks/bench_fp16.py --checkpoint runs/blm_t [--threads 2] [--repeats 15]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from blmkd.bench.machine import cpu_isa, cpu_name
from blmkd.bench.timing import time_interleaved
from blmkd.bundle import bundle_from_checkpoint
from blmkd.checkpoint import load_checkpoint
from blmkd.export import export
from blmkd.export.onnx_export import ssm_decay_island, to_fp16
from blmkd.inference.onnx_runner import ort_session


def converters(island: set[str]) -> dict[str, Callable[[onnx.ModelProto], onnx.ModelProto]]:
    from onnxruntime.transformers.float16 import convert_float_to_float16 as ort_fp16

    out = {
        "blmkd": lambda m: to_fp16(m, island),
        "ort": lambda m: ort_fp16(copy.deepcopy(m), keep_io_types=True, node_block_list=sorted(island)),
        "ort-ops": lambda m: ort_fp16(copy.deepcopy(m), keep_io_types=True),
    }
    try:
        from onnxconverter_common.float16 import convert_float_to_float16 as occ_fp16
    except ImportError:
        print("onnxconverter-common is not importable: its row is left out")
    else:
        out["occ"] = lambda m: occ_fp16(copy.deepcopy(m), keep_io_types=True, node_block_list=sorted(island))
    return out


def with_outputs(proto: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``proto`` that also outputs the tensors ``names`` (typed by shape inference)."""
    p = onnx.shape_inference.infer_shapes(copy.deepcopy(proto))
    vi = {v.name: v for v in p.graph.value_info}
    p.graph.output.extend(vi[n] for n in names)
    return p


def run_all(sess: ort.InferenceSession, x: np.ndarray, batch: int = 2048) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True, help="student checkpoint or run directory")
    ap.add_argument("--batches", default="1,1024")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--min-time", type=float, default=0.1, help="seconds per timing sample")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    ck = load_checkpoint(args.checkpoint)
    isa = cpu_isa()
    print(f"{cpu_name()} ({platform.machine()}; {', '.join(isa['flags'])}), onnxruntime {ort.__version__}, "
          f"onnx {onnx.__version__}, {args.threads} intra-op threads; {ck.model_name} from {ck.path}")  # fmt: skip
    print(subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip())

    bundle = bundle_from_checkpoint(ck)
    rows, cols, labels = bundle.coords("test")
    input_kind = ck.meta["model"].get("input_kind", "float")
    x_test = bundle.extractor(input_kind).gather(rows, cols).numpy()

    with tempfile.TemporaryDirectory(prefix="bench-fp16-") as tmp:
        (art,) = export(ck, ["onnx"], tmp, log=lambda s: None)
        fp32 = onnx.load(str(art.path))
        island = ssm_decay_island(fp32)
        protos = {"fp32": fp32}
        for name, convert in converters(island).items():
            t0 = time.perf_counter()
            try:
                protos[name] = convert(fp32)
            except Exception as exc:  # a converter that fails is a result, not a crash of the benchmark
                print(f"{name}: conversion failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
                continue
            print(f"{name}: converted in {time.perf_counter() - t0:.2f} s")
        sessions, notes, ort_casts = {}, {}, {}
        for name, proto in protos.items():
            try:
                onnx.checker.check_model(proto, full_check=True)
                notes[name] = "checker ok"
            except Exception as exc:
                notes[name] = f"checker: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
            path = Path(tmp) / f"{name}.onnx"
            onnx.save(proto, str(path))
            try:
                sessions[name] = ort_session(
                    path, threads=args.threads, inter_op_num_threads=1,
                    execution_mode=ort.ExecutionMode.ORT_SEQUENTIAL,
                    graph_optimization_level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                    optimized_model_filepath=str(Path(tmp) / f"{name}.ort.onnx"),
                )  # fmt: skip
                ort_graph = onnx.load(str(Path(tmp) / f"{name}.ort.onnx")).graph
                ort_casts[name] = sum(n.op_type == "Cast" for n in ort_graph.node)
            except Exception as exc:
                print(
                    f"{name}: ONNX Runtime cannot load it: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                )

        # The SSM decays exp(S_t − S_s) themselves (the island's Exp outputs), on the first 2048 patches:
        # what the FP32 island is for, whatever the logits of this model make of it.
        decay_names = [n.output[0] for n in fp32.graph.node if n.name in island and n.op_type == "Exp"]
        decays = {}
        for name in sessions:
            s = ort_session(with_outputs(protos[name], decay_names).SerializeToString(), threads=args.threads)
            outs = s.run(None, {s.get_inputs()[0].name: x_test[:2048]})[1:]
            decays[name] = [o.astype(np.float64) for o in outs]
        decay_err = {
            name: max(float(np.abs(a - b).max()) for a, b in zip(d, decays["fp32"]))
            for name, d in decays.items()
        }

        ref = run_all(sessions["fp32"], x_test)
        quality = {}
        for name, s in sessions.items():
            z = run_all(s, x_test)
            quality[name] = (
                float(np.abs(z - ref).max()),
                float((z.argmax(1) == ref.argmax(1)).mean()),
                float((z.argmax(1) == labels).mean()),
            )
        timings: dict[int, dict[str, list[float]]] = {}
        for bs in (int(b) for b in args.batches.split(",")):
            idx = np.arange(bs) % len(x_test)
            x = x_test[idx]
            fns = {
                n: (lambda s=s, x=x, i=s.get_inputs()[0].name: s.run(None, {i: x}))
                for n, s in sessions.items()
            }
            timings[bs] = time_interleaved(fns, args.repeats, args.min_time)

    print(f"\n{len(x_test)} test patches; FP32-kept island: {len(island)} nodes; latency medians over "
          f"{args.repeats} interleaved samples of >= {args.min_time} s")  # fmt: skip
    head = ["graph", "Cast", "Cast in ORT", "nodes", "max|Δdecay|", "max|Δlogit|", "agree %", "OA %"]
    head += [f"b{bs} ms" for bs in timings] + [f"b{bs} ×FP32" for bs in timings] + ["note"]
    table = []
    for name, proto in protos.items():
        casts = sum(n.op_type == "Cast" for n in proto.graph.node)
        row = [name, str(casts), str(ort_casts.get(name, "-")), str(len(proto.graph.node))]
        if name in quality:
            d, agree, oa = quality[name]
            row += [f"{decay_err[name]:.5f}", f"{d:.4f}", f"{100 * agree:.2f}", f"{100 * oa:.2f}"]
            meds = {bs: statistics.median(t[name]) for bs, t in timings.items()}
            row += [f"{meds[bs] * 1e3:.3f}" for bs in timings]
            row += [f"{statistics.median(timings[bs]['fp32']) / meds[bs]:.2f}" for bs in timings]
        else:
            row += ["-"] * (4 + 2 * len(timings))
        table.append([*row, notes.get(name, "")])
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(head)]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    for r in table:
        print("  ".join(v.rjust(w) for v, w in zip(r, widths)))


if __name__ == "__main__":
    main()
