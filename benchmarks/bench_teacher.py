"""Forward throughput of the SSA-Mamba teacher on CPU, side by side with the seed's reference code.

Paper configuration by default: 200 bands, 16 classes, 7×7 patches, batch 256, 2 threads, eval mode,
``torch.inference_mode``. Prints patches/s (median of ``--repeats`` timed runs after warm-up, timed
with ``time.perf_counter``), the p90 time per batch, the speed-up over the seed, parameters and FLOPs
per patch (matmul/conv FLOPs, see :mod:`blmkd.flops`).

The seed row reads the paper's SSAMamba code from the seed text at run time (``seed_reference.py``:
``shared/seeds/002_09ae7cf81db88eae.txt`` beside the repository, or ``$BLMKD_SEED_FILE``). When it is there, the seed model
gets our model's weights and the logits of both are compared before timing, so the two rows are the
same network; the runs are interleaved so that both see the same machine load. On a CPU with BF16
dot products (AVX512-BF16, AMX) a ``bf16 autocast`` row is added: faster but not exact, so its
logit difference and argmax agreement with FP32 are printed.

An ``ONNX Runtime fp32`` row runs the same model exported by ``blmkd export``'s FP32 path
(``torch_to_onnx``, opset 17) in ONNX Runtime with ``--threads`` intra-op threads: exact FP32 too
(its max logit difference from PyTorch is printed), and on this CPU faster than PyTorch eager,
because MLAS' GEMMs and ORT's fused LayerNorm/GELU/attention kernels beat the eager calls. Skip it
with ``--no-ort``.

Last, the script prints the FP32 ceiling: this machine's best 1024² FP32 GEMM rate on the same
threads (measured before and after the timed runs), divided by the model's FLOPs per patch, is the
patches/s of a forward whose every FLOP ran at BLAS peak and whose non-matmul ops cost nothing. No
exact FP32 implementation of this network can beat it, since no rewrite of the same network removes
FLOPs (the projections have nonlinearities or LayerNorms between them); its ratio to the seed row
says how far an exact FP32 speed-up can go on this machine at all.

    .venv/bin/python benchmarks/bench_teacher.py [--preset ssa_mamba] [--batch 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch
from seed_reference import seed_file, seed_model_like

from blmkd.bench.jobs import cpu_bf16_status
from blmkd.bench.machine import matmul_peak_gflops
from blmkd.bench.timing import time_interleaved
from blmkd.flops import count_flops, count_params
from blmkd.models import create_model


def load_seed(model: torch.nn.Module) -> torch.nn.Module | None:
    """The seed's SSAMamba with ``model``'s weights, or None when the seed text is not found."""
    try:
        return seed_model_like(model)
    except FileNotFoundError:
        return None


# Matmul-like aten ops, as a dispatch mode sees them under inference_mode (composites not decomposed).
_MATMUL_OPS = {
    "linear",
    "matmul",
    "mm",
    "addmm",
    "bmm",
    "conv2d",
    "convolution",
    "scaled_dot_product_attention",
}


def matmul_replay(model: torch.nn.Module, x: torch.Tensor):
    """A function that runs only the matmul-like aten calls of ``model(x)``, on the same operands.

    Its time is the floor that any implementation of these fp32 GEMMs pays on this machine.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    calls = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.overloadpacket.__name__ in _MATMUL_OPS:
                calls.append((func, args, kwargs or {}))
            return out

    with torch.inference_mode(), Record():
        model(x)
    return lambda: [func(*args, **kwargs) for func, args, kwargs in calls]


BF16_ROW = "blmkd, bf16 autocast"
ORT_ROW = "blmkd, ONNX Runtime fp32"


def ort_forward(model: torch.nn.Module, x: torch.Tensor, threads: int, folder: str):
    """A function that runs ``model`` exported to ONNX (FP32, as ``blmkd export`` writes it) on ``x``
    in an ONNX Runtime CPU session with ``threads`` intra-op threads; it returns the logits."""
    from blmkd.export.onnx_export import INPUT_NAME, torch_to_onnx
    from blmkd.inference.onnx_runner import ort_session

    path = Path(folder) / "teacher.onnx"
    torch_to_onnx(model, x[:2], path)
    session = ort_session(str(path), threads=threads)
    feed = {INPUT_NAME: x.numpy()}
    return lambda: session.run(None, feed)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="ssa_mamba")
    ap.add_argument("--bands", type=int, default=200)
    ap.add_argument("--classes", type=int, default=16)
    ap.add_argument("--patch", type=int, default=7)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-seed", action="store_true", help="Skip the seed reference row.")
    ap.add_argument("--no-ort", action="store_true", help="Skip the ONNX Runtime fp32 row.")
    ap.add_argument(
        "--no-bf16", action="store_true", help="Skip the BF16-autocast row (run where the CPU has BF16)."
    )
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    peak_start = matmul_peak_gflops("cpu")["gflops"]
    torch.manual_seed(0)
    model = create_model(args.preset, args.bands, args.classes).eval()
    with torch.no_grad():  # non-trivial BN statistics, so that the eval-mode folding is exercised
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0.0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    x = torch.randn(args.batch, args.bands, args.patch, args.patch)

    rows = {"blmkd (ssm_impl=conv)": model}
    seed = None if args.no_seed else load_seed(model)
    if seed is None and not args.no_seed:
        print(f"seed reference skipped: {seed_file()} not found (set $BLMKD_SEED_FILE)")
    if seed is not None:
        rows = {"seed reference": seed, **rows}

    params = count_params(model)
    flops = count_flops(model, x[:1])
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, preset {args.preset}: "
        f"{args.bands} bands, {args.classes} classes, {args.patch}x{args.patch} patches, batch {args.batch}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    tmp = tempfile.TemporaryDirectory()
    ort_fn = None if args.no_ort else ort_forward(model, x, args.threads, tmp.name)
    with torch.inference_mode():
        if seed is not None:
            diff = (seed(x[:32]) - model(x[:32])).abs().max().item()
            print(f"same weights, max |logit difference| seed vs ours: {diff:.2e}")
        fns = {name: (lambda m=m: m(x)) for name, m in rows.items()}
        ref = model(x)  # what the inexact or other-runtime rows are checked against
        if not args.no_bf16 and cpu_bf16_status()[0]:
            # Not exact (8-bit mantissas in the GEMMs): its own row, with the agreement next to it.
            def bf16(m=model):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return m(x).float()

            got = bf16()
            agree = (ref.argmax(1) == got.argmax(1)).float().mean().item()
            print(
                f"bf16 autocast vs fp32 on this batch: max |logit difference| {(ref - got).abs().max().item():.2e}, "
                f"argmax agreement {100 * agree:.2f}%"
            )
            fns[BF16_ROW] = bf16
        if ort_fn is not None:
            fns[ORT_ROW] = ort_fn
            got = torch.from_numpy(ort_fn())
            agree = (ref.argmax(1) == got.argmax(1)).float().mean().item()
            print(
                f"ONNX Runtime fp32 vs PyTorch fp32 on this batch: max |logit difference| "
                f"{(ref - got).abs().max().item():.2e}, argmax agreement {100 * agree:.2f}%"
            )
        fns["torch matmuls only"] = matmul_replay(model, x)
        times = time_interleaved(fns, args.repeats)
    peak = max(peak_start, matmul_peak_gflops("cpu")["gflops"])

    seed_pps = args.batch / statistics.median(times["seed reference"]) if seed is not None else None
    print(
        f"{'implementation':<24} {'patches/s':>10} {'median ms':>10} {'p90 ms':>8} {'vs seed':>8} "
        f"{'params':>10} {'MFLOP/patch':>12}"
    )
    for name, ts in times.items():
        ts = sorted(ts)
        med = statistics.median(ts)
        p90 = ts[min(len(ts) - 1, int(0.9 * len(ts)))]
        pps = args.batch / med
        ratio = f"{pps / seed_pps:.2f}x" if seed_pps else "-"
        m = {**rows, BF16_ROW: model, ORT_ROW: model}.get(
            name
        )  # the module behind a row; none for the matmul replay
        if m is not None:
            n_params = f"{count_params(m):,d}"
            mflop = f"{(flops if m is model else count_flops(m, x[:1])) / 1e6:.1f}"
        else:
            n_params, mflop = "-", "-"
        print(
            f"{name:<24} {pps:>10.1f} {med * 1e3:>10.1f} {p90 * 1e3:>8.1f} {ratio:>8} {n_params:>10} {mflop:>12}"
        )
    print(
        f"{params:,d} parameters. FLOPs count matmuls/convs only: the seed's sequential scan is elementwise and "
        f"not counted; ours includes the (L, L) Toeplitz matmul. 'torch matmuls only' replays just our model's "
        f"matmul/conv/attention calls in PyTorch, on operands kept from one forward: an estimate of the eager "
        f"path's GEMM time, not a bound for other runtimes."
    )
    ceiling = peak * 1e9 / flops
    vs_seed = f" = {ceiling / seed_pps:.2f}x the seed" if seed_pps else ""
    print(
        f"FP32 ceiling on this machine now: best 1024² GEMM {peak:.0f} GFLOP/s ({args.threads} threads, "
        f"start {peak_start:.0f}) / {flops / 1e6:.1f} MFLOP per patch = {ceiling:.1f} patches/s{vs_seed}, "
        f"if every FLOP ran at BLAS peak and nothing else cost time"
    )


if __name__ == "__main__":
    main()
