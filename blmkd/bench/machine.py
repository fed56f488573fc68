"""What a benchmark ran on: the machine's facts and its measured matmul peak.

The peak is measured, not looked up: an FP32 matmul large enough to run at full speed, timed in the
same process and with the same threads as the models, so that "fraction of peak" compares like
with like on a loaded two-core CI box as much as on an idle GPU.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import torch

from blmkd.bench.timing import time_samples

_JETSON_MODEL = Path("/proc/device-tree/model")
_TEGRA_RELEASE = Path("/etc/nv_tegra_release")
_CPUINFO = Path("/proc/cpuinfo")


def jetson_model() -> str | None:
    """The board name on an NVIDIA Jetson (``"NVIDIA Jetson Orin Nano ..."``), else None."""
    try:
        model = _JETSON_MODEL.read_bytes().decode(errors="replace").strip("\x00 \n")
    except OSError:
        model = ""
    if "jetson" in model.lower():
        return model
    if _TEGRA_RELEASE.exists():
        return model or "NVIDIA Jetson (model unknown)"
    return None


def cpu_name() -> str:
    try:
        for line in _CPUINFO.read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# CPU features that decide which low-precision paths pay, in the order they are listed.
_ISA_FLAGS = (
    "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
    "asimd", "asimddp", "i8mm", "bf16",  # Arm (Jetson): NEON, int8 dot products, int8/BF16 matrix ops
)  # fmt: skip
_INT8_DOT = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
_BF16_DOT = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_isa(cpuinfo: str | None = None) -> dict:
    """The CPU's vector features that matter for INT8 and BF16, from ``/proc/cpuinfo`` text.

    Returns ``{"flags": [...], "int8_dot": bool, "bf16_dot": bool, "note": str}``. Without an int8
    dot-product instruction (x86 VNNI, Arm dot product) ONNX Runtime's int8 GEMMs sum pairs of
    products in 16 bits (x86 ``VPMADDUBSW``) and are rarely faster than FP32; blmkd's INT8 exports use
    7-bit weights so that those sums cannot saturate (:mod:`blmkd.export.quantize`).
    """
    if cpuinfo is None:
        try:
            cpuinfo = _CPUINFO.read_text()
        except OSError:
            cpuinfo = ""
    have: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):  # x86 "flags", Arm "Features"
            have |= set(value.split())
    flags = [f for f in _ISA_FLAGS if f in have]
    int8, bf16 = any(f in have for f in _INT8_DOT), any(f in have for f in _BF16_DOT)
    if not have:
        note = "CPU features unknown (no /proc/cpuinfo flags)"
    else:
        note = (
            "int8 dot products" if int8 else "no int8 dot products: INT8 is rarely faster than FP32 here"
        ) + (", BF16 dot products" if bf16 else "")
    return {"flags": flags, "int8_dot": int8, "bf16_dot": bf16, "note": note}


def cuda_status() -> tuple[bool, str]:
    """(available, reason): whether PyTorch sees a CUDA GPU, and if not, why."""
    if not torch.backends.cuda.is_built():
        return False, f"this PyTorch ({torch.__version__}) is built without CUDA"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU visible to PyTorch (torch.cuda.is_available() is False)"
    return True, torch.cuda.get_device_name(0)


def machine_info(device: str = "cpu") -> dict:
    """JSON-ready facts: CPU, cores, threads, GPU, Jetson board, library versions."""
    import onnxruntime as ort

    info = {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_isa": cpu_isa(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "ort_providers": ort.get_available_providers(),
        "device": device,
        "jetson": jetson_model(),
    }
    ok, what = cuda_status()
    info["cuda"] = what if ok else None
    return info


def matmul_peak_gflops(device: str = "cpu", n: int | None = None, runs: int = 10) -> dict:
    """Measured FP32 matmul throughput of this machine: the best of ``runs`` ``n×n @ n×n`` products.

    Args:
        device: ``"cpu"`` or ``"cuda"``.
        n: matrix side (default 1024 on CPU, 8192 on CUDA; large enough to reach the BLAS peak).
        runs: timed repeats after two warm-up products.

    Returns:
        ``{"gflops": best, "median_gflops": ..., "n": n, "dtype": "float32", "device": device}``.
    """
    cuda = device.startswith("cuda")
    n = n or (8192 if cuda else 1024)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)
    if cuda:
        # TF32 would count tensor-core throughput at reduced precision as "FP32 peak".
        prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.inference_mode():
            s = time_samples(lambda: a @ b, warmup=2, runs=runs, max_seconds=5.0,
                             sync=torch.cuda.synchronize if cuda else None)  # fmt: skip
    finally:
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = prev
    flop = 2.0 * n**3
    return {
        "gflops": float(flop / s.min() / 1e9),
        "median_gflops": float(flop / np.median(s) / 1e9),
        "n": n,
        "dtype": "float32",
        "device": device,
        "threads": torch.get_num_threads(),
    }
