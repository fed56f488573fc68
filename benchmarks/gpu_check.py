"""One command that proves the CUDA path on a GPU and records its figures.

    python benchmarks/gpu_check.py --out runs/gpu_check            # on a CUDA GPU (≈5 min on an H200)
    python benchmarks/gpu_check.py --smoke --device cpu --out DIR  # CI: every code path, tiny, on the CPU

Parts, each run in its own process with its own time limit (a part that fails or hangs leaves the
others' figures), in this order:

``cuda_tests``     the test suite's ``cuda``/``trt`` tests (pass/fail/skip counts);
``teacher_infer``  the paper-size teacher ``ssa_mamba`` against the paper's reference code (read
                   from the seed text at run time, same weights) at batch 256: patches/s FP32 and
                   BF16 autocast, the ratio, max |Δlogit| between them;
``teacher_train``  teacher training steps (AdamW, cross-entropy, grad clipping) FP32 and BF16
                   autocast: patches/s and peak GPU memory;
``distill``        ``blmkd train-teacher`` → ``blmkd distill`` (``blm_t``) → ``blmkd export`` on real
                   Indian Pines, on the GPU through the CLI: test OA and wall times;
``student``        ``blm_t`` patches/s at batch 1…65,536 in FP32, BF16 and FP16 (eager; ``torch.compile``
                   at the largest batch), batch-1 p50/p99 eager, with CUDA graphs and compiled; a
                   whole-scene map of a XiongAn-size byte scene (3750×1580×256) in px/s and peak
                   memory; the GPU map against the CPU path's on Indian Pines;
``bench_cli``      ``blmkd bench --device cuda`` on the distilled checkpoint and its ONNX export.

It writes ``gpu_check.json`` (every figure) and ``gpu_check.md`` (the same as tables) into ``--out``.
``--smoke`` shrinks every part (test presets, small batches and scenes, one epoch) so that CI runs
the same code on the CPU in well under a minute: the script cannot rot between GPU runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

from blmkd.bench.timing import time_samples

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PARTS = ("cuda_tests", "teacher_infer", "teacher_train", "distill", "student", "bench_cli")
# Seconds each part may take on a GPU (the smoke run is far below these).
LIMITS = {
    "cuda_tests": 150,
    "teacher_infer": 90,
    "teacher_train": 90,
    "distill": 240,
    "student": 240,
    "bench_cli": 120,
}


# ----------------------------------------------------------------------------------------------
# Helpers


def _sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_fn(fn, device, *, min_time: float = 0.2, min_calls: int = 5, max_calls: int = 2000, warmup: int = 3):
    """Per-call seconds of ``fn()`` (synchronized): ``warmup`` calls, then at least ``min_calls`` and
    ``min_time`` seconds of calls, each timed alone. Returns the sorted samples."""
    samples = time_samples(fn, warmup=warmup, runs=min_calls, max_seconds=float("inf"), min_seconds=min_time,
                           max_runs=max_calls, sync=lambda: _sync(device))  # fmt: skip
    return sorted(float(v) for v in samples)


def pct(samples: list[float], q: float) -> float:
    return samples[min(len(samples) - 1, int(q * len(samples)))]


def _peak_reset(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak_mb(device) -> float | None:
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return None


def _blmkd(args: list[str], log: Path, timeout: float) -> tuple[int, str, float]:
    """Run ``python -m blmkd ARGS``; returns (exit code, output tail, seconds)."""
    t0 = time.perf_counter()
    env = {**os.environ, "BLMKD_NO_PROGRESS": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "blmkd", *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    out = p.stdout + p.stderr
    with log.open("a") as f:
        f.write(f"$ blmkd {' '.join(args)}\n{out}\n")
    if p.returncode:
        raise RuntimeError(
            f"blmkd {args[0]} exited {p.returncode}: {out.strip().splitlines()[-1] if out.strip() else ''}"
        )
    return p.returncode, out[-3000:], time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------
# Parts (each returns a dict of figures)


def part_cuda_tests(a) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rs",
        "-m",
        "cuda or trt",
        "-p",
        "no:cacheprovider",
        str(ROOT / "tests"),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=LIMITS["cuda_tests"] - 10)
    out = p.stdout + p.stderr
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", out)}
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    res = {"exit_code": p.returncode, **counts, "skip_reasons": skips[:20], "tail": out[-2500:]}
    if p.returncode not in (0, 5) or counts.get("failed") or counts.get("error") or counts.get("errors"):
        raise PartFailed(f"CUDA tests failed (exit {p.returncode})", res)
    return res


def _teacher(a, preset: str):
    import torch

    from blmkd.models import create_model

    torch.manual_seed(0)
    m = create_model(preset, a.bands, a.classes)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval-mode folding is exercised
        for name, buf in m.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0.0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    return m.to(a.device)


def part_teacher_infer(a) -> dict:
    import torch
    from seed_reference import seed_model_like

    preset = "ssa_mamba_test" if a.smoke else "ssa_mamba"
    batch = 16 if a.smoke else 256
    model = _teacher(a, preset).eval()
    seed = seed_model_like(model, _seed_module(a))
    x = torch.randn(batch, a.bands, 7, 7, device=a.device)
    dev_type = "cuda" if a.device.startswith("cuda") else "cpu"

    def ours():
        return model(x)

    def ours_bf16():
        with torch.autocast(dev_type, dtype=torch.bfloat16):
            return model(x)

    def ref():
        return seed(x)

    fns = [("seed reference fp32", ref), ("blmkd fp32", ours), ("blmkd bf16 autocast", ours_bf16)]
    with torch.inference_mode():
        z, zs, zb = ours().float(), ref().float(), ours_bf16().float()
        extra = {}
        if dev_type == "cuda":  # the same forwards replayed from CUDA graphs: no per-op launch cost
            from blmkd.inference.torch_runner import CudaGraphs

            graphs = CudaGraphs(model, max_batch=batch)

            def graph_bf16():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return graphs(x)

            try:
                extra["max_abs_dlogit_graph_vs_eager"] = float((graphs(x).float() - z).abs().max())
                graph_bf16()
                fns += [("blmkd fp32 CUDA graph", lambda: graphs(x)), ("blmkd bf16 CUDA graph", graph_bf16)]
            except Exception as exc:  # recorded: the eager rows stand without it
                extra["cuda_graph_error"] = str(exc)[:300]
        rows = {name: time_fn(fn, a.device, min_time=0.3 if not a.smoke else 0.02) for name, fn in fns}
    pps = {k: batch / statistics.median(v) for k, v in rows.items()}
    best = max(pps, key=pps.get)
    return {
        **extra,
        "fastest": best,
        "speedup_fastest_vs_seed": pps[best] / pps["seed reference fp32"],
        "preset": preset,
        "batch": batch,
        "patches_per_s": pps,
        "median_ms": {k: 1e3 * statistics.median(v) for k, v in rows.items()},
        "speedup_fp32_vs_seed": pps["blmkd fp32"] / pps["seed reference fp32"],
        "speedup_bf16_vs_seed": pps["blmkd bf16 autocast"] / pps["seed reference fp32"],
        "max_abs_dlogit_fp32_vs_seed": float((z - zs).abs().max()),
        "max_abs_dlogit_bf16_vs_fp32": float((z - zb).abs().max()),
        "argmax_agreement_bf16_vs_fp32": float((z.argmax(1) == zb.argmax(1)).float().mean()),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
    }


def part_teacher_train(a) -> dict:
    preset = "ssa_mamba_test" if a.smoke else "ssa_mamba"
    plan = (
        [(8, "off"), (8, "bf16")]
        if a.smoke
        else [(64, "off"), (64, "bf16"), (512, "off"), (512, "bf16"), (2048, "bf16")]
    )
    out = {"preset": preset, "rows": []}
    for batch, amp in plan:
        row, step = _train_row(a, preset, batch, amp)
        out["rows"].append(row)
        if (batch, amp) == plan[-1]:
            out["profile_last_row"] = _profile(step, a.device)
    out["best_bf16_patches_per_s"] = max(r["patches_per_s"] for r in out["rows"] if r["amp"] == "bf16")
    return out


def _train_row(a, preset: str, batch: int, amp: str):
    """Patches/s and peak memory of the teacher's training step (what ``fit`` does per batch:
    autocast forward and loss, backward, grad clipping, AdamW) on device-resident data."""
    import torch
    import torch.nn.functional as F

    dev_type = "cuda" if a.device.startswith("cuda") else "cpu"
    model = _teacher(a, preset).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=5e-4)
    x = torch.randn(batch, a.bands, 7, 7, device=a.device)
    y = torch.randint(0, a.classes, (batch,), device=a.device)

    def step():
        with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    _peak_reset(a.device)
    ts = time_fn(step, a.device, min_time=0.02 if a.smoke else 1.0, min_calls=3 if a.smoke else 10)
    row = {"batch": batch, "amp": amp, "patches_per_s": batch / statistics.median(ts),
           "step_ms": 1e3 * statistics.median(ts), "peak_mem_mb": _peak_mb(a.device)}  # fmt: skip
    return row, step


def _profile(fn, device, top: int = 10) -> dict:
    """Wall and kernel time of one ``fn()`` call and its ``top`` ops by device (or CPU) time."""
    from torch.profiler import ProfilerActivity, profile

    cuda = str(device).startswith("cuda")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    fn()
    _sync(device)
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        fn()
        _sync(device)
    wall = time.perf_counter() - t0
    ev = [e for e in prof.key_averages() if not e.key.startswith(("ProfilerStep", "Activity Buffer"))]
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    ev.sort(key=lambda e: getattr(e, key), reverse=True)
    return {
        "wall_ms_profiled": 1e3 * wall,
        "kernel_ms": sum(getattr(e, "self_device_time_total", 0) for e in ev if e.key.startswith("aten::")) / 1e3,
        "top_ops": [{"op": e.key[:60], "calls": e.count, "ms": getattr(e, key) / 1e3} for e in ev[:top]],
    }  # fmt: skip


def part_distill(a) -> dict:
    from blmkd.checkpoint import load_checkpoint

    work = Path(a.out) / "distill"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    dev = ["--device", a.device, "--amp", "bf16"]
    teacher, student = work / "teacher", work / "student"
    t_epochs, s_epochs = ("1", "1") if a.smoke else ("30", "60")
    common = ["--no-progress"]
    data = ["--dataset", str(_smoke_scene(work)) if a.smoke else "indian_pines"]
    res = {}
    _, _, res["teacher_wall_s"] = _blmkd(
        ["train-teacher", "-m", "ssa_mamba_test" if a.smoke else "ssa_mamba", *data, "--epochs", t_epochs, "--out",
         str(teacher), "--force", *dev, *common], log, 900)  # fmt: skip
    _, _, res["distill_wall_s"] = _blmkd(
        ["distill", "--teacher", str(teacher), "--student", "blm_test" if a.smoke else "blm_t", "--epochs", s_epochs,
         "-T", "2", "--lambda-max", "0.5", "--warmup-epochs", "1" if a.smoke else "20",
         "--unlabelled", "200" if a.smoke else "20000", "--class-balance", "0.9", "--out", str(student), "--force", *dev,
         *common], log, 900)  # fmt: skip
    _, _, res["export_wall_s"] = _blmkd(
        ["export", str(student), "--onnx", "--out", str(work / "export"), "--force"], log, 600
    )
    for name, d in (("teacher", teacher), ("student", student)):
        meta = load_checkpoint(d / "best.safetensors").meta
        m = meta.get("metrics", {})
        res[f"{name}_test_oa"] = m.get("test", {}).get("oa")
        res[f"{name}_test_aa"] = m.get("test", {}).get("aa")
        res[f"{name}_best_epoch"] = m.get("best_epoch")
        res[f"{name}_train_wall_s"] = m.get("train_wall_s")
        res[f"{name}_amp"] = meta.get("training", {}).get("amp")
    res["epochs"] = {"teacher": int(t_epochs), "student": int(s_epochs)}
    res["onnx"] = sorted(p.name for p in (work / "export").glob("*.onnx"))
    return res


def _smoke_scene(folder: Path) -> Path:
    """A 60×60 crop of real Indian Pines as a .npz (the smoke run's scene: seconds, not minutes)."""
    import numpy as np

    from blmkd.data import load_indian_pines

    scene = load_indian_pines()
    gt = np.zeros((60, 60), dtype=np.uint8)
    lab = scene.labels[:60, :60]
    gt[lab >= 0] = np.asarray(scene.class_ids)[lab[lab >= 0]]
    path = folder / "ip_crop.npz"
    np.savez(path, cube=np.ascontiguousarray(scene.cube[:60, :60]), gt=gt)
    return path


def part_student(a) -> dict:
    import torch

    from blmkd.inference.classifier import open_classifier
    from blmkd.inference.latent import map_bytes_torch
    from blmkd.inference.scene import predict_scene
    from blmkd.inference.torch_runner import CudaGraphs
    from blmkd.models import create_model

    cuda = a.device.startswith("cuda")
    dev_type = "cuda" if cuda else "cpu"
    preset = "blm_test" if a.smoke else "blm_t"
    res: dict = {"preset": preset}
    torch.manual_seed(0)
    model = create_model(preset, a.bands, a.classes).to(a.device).eval()
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    batches = (1, 16, 64) if a.smoke else (1, 16, 256, 4096, 65536)
    x_all = torch.randint(0, 256, (max(batches), a.bands, 7, 7), dtype=torch.uint8, device=a.device)

    def run(fwd, x, dtype):
        with torch.autocast(dev_type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return fwd(x)

    # Throughput over batch sizes and precisions, eager.
    rows = []
    with torch.inference_mode():
        for b in batches:
            x = x_all[:b]
            for name, dt in dtypes.items():
                if not cuda and name == "fp16":
                    continue
                ts = time_fn(
                    lambda x=x, dt=dt: run(model, x, dt), a.device, min_time=0.01 if a.smoke else 0.25
                )
                rows.append({"batch": b, "precision": name, "mode": "eager", "patches_per_s": b / statistics.median(ts),
                             "median_ms": 1e3 * statistics.median(ts)})  # fmt: skip
    # torch.compile at the largest batch (one compile per precision), where a GPU makes it pay.
    compiled_note = "skipped on the CPU smoke run" if not cuda else ""
    if cuda:
        cmodel = torch.compile(model, dynamic=False)
        with torch.inference_mode():
            for name in ("fp32", "bf16"):
                b = batches[-1]
                t0 = time.perf_counter()
                try:
                    run(cmodel, x_all[:b], dtypes[name])
                except Exception as exc:  # a compiler failure is a finding, not the end of the part
                    rows.append({"batch": b, "precision": name, "mode": "compiled", "error": str(exc)[:300]})
                    continue
                torch.cuda.synchronize()
                ct = time.perf_counter() - t0
                ts = time_fn(
                    lambda b=b, name=name: run(cmodel, x_all[:b], dtypes[name]), a.device, min_time=0.5
                )
                rows.append({"batch": b, "precision": name, "mode": "compiled", "patches_per_s": b / statistics.median(ts),
                             "median_ms": 1e3 * statistics.median(ts), "compile_s": ct})  # fmt: skip
    res["throughput"] = rows
    res["compiled_note"] = compiled_note
    # LayerNorm of a 65,536-window batch's tokens (rows × d_model): PyTorch's kernel against the
    # two-reduction form the students use for many narrow rows on a GPU.
    from blmkd.ops.norm import layer_norm

    ln = model.layers[0].norm
    t = torch.randn(batches[-1] * 49, ln.normalized_shape[0], device=a.device)
    with torch.inference_mode():
        res["layer_norm_ms"] = {
            "torch": 1e3 * statistics.median(time_fn(lambda: ln(t), a.device, min_time=0.05)),
            "blmkd": 1e3 * statistics.median(time_fn(lambda: layer_norm(ln, t), a.device, min_time=0.05)),
            "max_abs_diff": float((ln(t) - layer_norm(ln, t)).abs().max()),
            "rows": int(t.shape[0]),
        }  # fmt: skip
        hs = torch.randn(batches[-1], 49, model.config.d_model, device=a.device)
        with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=cuda):
            res["profile_forward_scanned_bf16"] = _profile(lambda: model.forward_scanned(hs), a.device, top=8)
    # Batch-1 latency: eager, replayed CUDA graph, torch.compile(mode="reduce-overhead").
    lat = {}
    x1 = x_all[:1]
    with torch.inference_mode():
        ts = time_fn(lambda: model(x1), a.device, min_time=0.02 if a.smoke else 1.0, min_calls=20)
        lat["eager"] = ts
        if cuda:
            graphs = CudaGraphs(model)
            ref = model(x1)
            got = graphs(x1).clone()
            res["cuda_graph_max_abs_dlogit"] = float((ref - got).abs().max())
            lat["cuda_graph"] = time_fn(lambda: graphs(x1), a.device, min_time=1.0, min_calls=100)
            try:
                ro = torch.compile(model, mode="reduce-overhead", dynamic=False)
                for _ in range(3):
                    ro(x1)
                lat["compiled_reduce_overhead"] = time_fn(
                    lambda: ro(x1), a.device, min_time=1.0, min_calls=100
                )
                cg = CudaGraphs(torch.compile(model, dynamic=False))
                res["compiled_graph_max_abs_dlogit"] = float((cg(x1).float() - ref).abs().max())
                lat["compiled_cuda_graph"] = time_fn(lambda: cg(x1), a.device, min_time=1.0, min_calls=100)
            except Exception as exc:  # recorded: the eager and graph figures stand without it
                res["compiled_batch1_error"] = str(exc)[:300]
    res["batch1_latency_ms"] = {
        k: {"p50": 1e3 * pct(v, 0.5), "p99": 1e3 * pct(v, 0.99), "calls": len(v)} for k, v in lat.items()
    }

    # Whole-scene map of a XiongAn-size byte scene (random bytes: the speed does not depend on them).
    h, w, bands, k = (96, 80, 24, 5) if a.smoke else (3750, 1580, 256, 20)
    smodel = create_model(preset, bands, k).to(a.device).eval()
    t0 = time.perf_counter()
    host = torch.randint(0, 256, (h, w, bands), dtype=torch.uint8)
    host = host.pin_memory() if cuda else host
    _sync(a.device)
    t1 = time.perf_counter()
    cube = host.to(a.device, non_blocking=True)
    _sync(a.device)
    upload = time.perf_counter() - t1
    maps = {"scene": [h, w, bands], "classes": k, "upload_s": upload, "make_s": t1 - t0, "rows": []}
    fwd_c = torch.compile(smodel.forward_scanned, dynamic=False) if cuda else None
    for name, dt, fwd in (
        ("fp32", None, None),
        ("bf16", torch.bfloat16, None),
        ("bf16 compiled", torch.bfloat16, fwd_c),
    ):
        if fwd is None and name.endswith("compiled"):
            continue
        times = []
        for _ in range(1 if a.smoke else 2):  # the first run includes compilation / allocator warm-up
            _peak_reset(a.device)
            t0 = time.perf_counter()
            with torch.autocast(dev_type, dtype=dt or torch.float32, enabled=dt is not None):
                map_bytes_torch(smodel, cube, 7, forward=fwd, tile=512)
            _sync(a.device)
            times.append(time.perf_counter() - t0)
        best = min(times[1:] or times)
        maps["rows"].append({"precision": name, "seconds": best, "first_s": times[0], "px_per_s": h * w / best,
                             "peak_mem_mb": _peak_mb(a.device)})  # fmt: skip
    # The same map path against the slow reference on a crop (same windows, same classes).
    crop = cube[:40, :48]
    with torch.inference_mode():
        got = map_bytes_torch(smodel, crop, 7, tile=16, batch=500)
        got_cpu = map_bytes_torch(smodel.cpu(), crop.cpu(), 7)
    smodel.to(a.device)
    maps["crop_agreement_vs_cpu"] = float((got.cpu() == got_cpu).float().mean())
    res["map"] = maps
    del cube, host

    # GPU scene map of the distilled student against the CPU path (predict_scene) on Indian Pines.
    ck = Path(a.out) / "distill" / "student" / "best.safetensors"
    if ck.exists():
        from blmkd.data import load_indian_pines

        cube = load_indian_pines().cube[: 60 if a.smoke else None, : 60 if a.smoke else None]
        cpu_map = predict_scene(open_classifier(ck, device="cpu"), cube)
        gpu_map = predict_scene(open_classifier(ck, device=a.device), cube)
        res["indian_pines_map"] = {
            "cpu_mode": cpu_map.mode, "gpu_mode": gpu_map.mode, "pixels": int(cpu_map.pixels),
            "differing_pixels": int((cpu_map.pred != gpu_map.pred).sum()),
            "cpu_px_per_s": cpu_map.px_per_s, "gpu_px_per_s": gpu_map.px_per_s,
        }  # fmt: skip
        if res["indian_pines_map"]["differing_pixels"] > max(2, cpu_map.pixels // 10000):
            raise PartFailed("GPU map differs from the CPU map on Indian Pines", res)
    else:
        res["indian_pines_map"] = {"skipped": f"{ck} not found (the distill part did not finish)"}
    return res


def part_bench_cli(a) -> dict:
    work = Path(a.out) / "distill"
    ck = work / "student" / "best.safetensors"
    onnx = sorted((work / "export").glob("*.onnx"))
    if not ck.exists():
        raise PartFailed(f"{ck} not found (the distill part did not finish)", {})
    report = Path(a.out) / "bench_report"
    args = ["bench", str(ck), *map(str, onnx), "--device", a.device, "--report", str(report), "--no-maps",
            "--batch", "1,64,1024,16384" if not a.smoke else "1,8", "--runs", "100" if not a.smoke else "5"]  # fmt: skip
    args += ["--eval-size", "300"] if a.smoke else []
    _, tail, wall = _blmkd(args, Path(a.out) / "bench_cli_log.txt", LIMITS["bench_cli"] - 10)
    rows = []
    rj = report / "report.json"
    if rj.exists():
        data = json.loads(rj.read_text())
        for r in data.get("rows", data.get("results", [])):
            if isinstance(r, dict):
                rows.append({k: r.get(k) for k in ("label", "device", "oa", "status", "error", "latency_ms", "p50_ms",
                                                   "throughput", "best_px_per_s") if k in r})  # fmt: skip
    return {"wall_s": wall, "rows": rows, "tail": tail[-2500:]}


class PartFailed(Exception):
    """A part that ran but whose check failed; ``figures`` are still recorded."""

    def __init__(self, msg: str, figures: dict):
        super().__init__(msg)
        self.figures = figures


def _seed_module(a):
    from seed_reference import load_seed_module

    return load_seed_module(a.seed_file)


# ----------------------------------------------------------------------------------------------
# Driver


def machine(a) -> dict:
    import numpy
    import torch

    from blmkd.bench.machine import cpu_isa, cpu_name

    info = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "numpy": numpy.__version__,
        "cpu": cpu_name(),
        "cpu_isa": cpu_isa().get("best", ""),
        "cpu_cores": os.cpu_count(),
        "device": a.device,
        "smoke": a.smoke,
    }
    for mod in ("onnx", "onnxruntime"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    if torch.cuda.is_available() and a.device.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), sm=f"{p.major}.{p.minor}",
                    multiprocessors=p.multi_processor_count)  # fmt: skip
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=20)  # fmt: skip
            info["driver"] = q.stdout.strip() or None
        except (OSError, subprocess.TimeoutExpired):
            info["driver"] = None
    return info


def run_part(a) -> None:
    """Child process: run one part and write its JSON."""
    sys.path.insert(0, str(HERE))
    out = Path(a.out)
    fn = globals()[f"part_{a.run_part}"]
    t0 = time.perf_counter()
    try:
        res = {"status": "ok", "figures": fn(a)}
    except PartFailed as exc:
        res = {"status": "failed", "error": str(exc), "figures": exc.figures}
    except Exception as exc:  # recorded, not raised: the driver reports every part
        res = {
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc()[-4000:],
        }
    res["seconds"] = time.perf_counter() - t0
    (out / f"part_{a.run_part}.json").write_text(json.dumps(res, indent=1, default=str))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return str(v)


def write_markdown(path: Path, report: dict) -> None:
    m = report["machine"]
    lines = [
        "# blmkd GPU check", "",
        f"{m['date']} · {m.get('gpu', m['device'])} (driver {m.get('driver')}, CUDA {m['cuda_runtime']}) · "
        f"torch {m['torch']} · Python {m['python']} · host CPU {m['cpu']} ({m['cpu_cores']} cores)"
        + (" · **smoke run**" if m["smoke"] else ""), "",
        f"Whole check: {report['wall_s']:.0f} s.", "",
        "| part | status | seconds |", "| --- | --- | ---: |",
    ]  # fmt: skip
    for name, p in report["parts"].items():
        lines.append(
            f"| {name} | {p['status']}{': ' + p['error'] if p.get('error') else ''} | {p.get('seconds', 0):.0f} |"
        )
    for name, p in report["parts"].items():
        figs = p.get("figures") or {}
        if not figs:
            continue
        lines += ["", f"## {name}", ""]
        for key, val in figs.items():
            if key in ("tail", "skip_reasons"):
                continue
            if isinstance(val, list) and val and isinstance(val[0], dict):
                cols = list(dict.fromkeys(c for r in val for c in r))
                lines += [f"**{key}**", "", "| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
                lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in val]
                lines.append("")
            elif isinstance(val, dict):
                lines.append(f"- **{key}**: " + ", ".join(f"{k} {_fmt(v)}" for k, v in val.items()))
            else:
                lines.append(f"- **{key}**: {_fmt(val)}")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--out", default="runs/gpu_check", help="Output folder (gpu_check.json, gpu_check.md, runs)."
    )
    ap.add_argument("--device", default="cuda", help="cuda (the check) or cpu (with --smoke, for CI).")
    ap.add_argument(
        "--smoke", action="store_true", help="Tiny presets, batches and scenes: every code path in seconds."
    )
    ap.add_argument("--parts", default=",".join(PARTS), help=f"Comma-separated subset of {','.join(PARTS)}.")
    ap.add_argument(
        "--seed-file", default=None, help="The SSA-Mamba seed text (default: shared/seeds beside the repo)."
    )
    ap.add_argument("--bands", type=int, default=200)
    ap.add_argument("--classes", type=int, default=16)
    ap.add_argument("--run-part", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.run_part:
        run_part(a)
        return 0
    parts = [p for p in a.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    if a.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(
                "error: --device cuda: no CUDA GPU visible to PyTorch (use --smoke --device cpu for the CPU run)"
            )
            return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HERE))
    report = {"machine": machine(a), "parts": {}}
    t_all = time.perf_counter()
    for name in parts:
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, "--run-part", name, "--out", str(out), "--device", a.device,
               "--bands", str(a.bands), "--classes", str(a.classes)] + (["--smoke"] if a.smoke else []) + (
              ["--seed-file", a.seed_file] if a.seed_file else [])  # fmt: skip
        (out / f"part_{name}.json").unlink(missing_ok=True)
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=LIMITS[name])
            log = p.stdout + p.stderr
            res_path = out / f"part_{name}.json"
            res = json.loads(res_path.read_text()) if res_path.exists() else {
                "status": "failed", "error": f"exit {p.returncode} without a result", "log": log[-3000:]}  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            res = {"status": "timeout", "error": f"over its {LIMITS[name]} s limit",
                   "log": ((exc.stdout or b"") + (exc.stderr or b""))[-3000:].decode(errors="replace")}  # fmt: skip
        res["seconds"] = time.perf_counter() - t0
        report["parts"][name] = res
        print(f"{name:14s} {res['status']:8s} {res['seconds']:6.1f} s  {res.get('error', '')}", flush=True)
    report["wall_s"] = time.perf_counter() - t_all
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    write_markdown(out / "gpu_check.md", report)
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'} ({report['wall_s']:.0f} s)")
    return 0 if all(p["status"] == "ok" for p in report["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
