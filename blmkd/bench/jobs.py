"""What `blmkd bench` runs: one job per artifact and device variant, opened in its own runtime.

On the CPU one row per artifact (plus BF16 autocast for checkpoints where asked); on CUDA, PyTorch
FP32 and FP16/BF16 autocast, ONNX Runtime's CUDA and TensorRT execution providers and engines, each
skipped with the reason where this machine lacks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from blmkd.bench.machine import cuda_status
from blmkd.errors import BlmkdError, ModelError
from blmkd.inference.artifacts import open_artifact
from blmkd.inference.base import C_SUFFIXES, CHECKPOINT_SUFFIXES, ENGINE_SUFFIXES, ONNX_SUFFIXES
from blmkd.inference.tensorrt_runner import tensorrt_status


@dataclass
class Job:
    """One row of the table: an artifact, where it runs and how."""

    path: Path
    kind: str  # checkpoint | onnx | engine | c
    device: str  # cpu | cuda
    variant: str = ""  # "" or, for PyTorch, "fp16-autocast" (CUDA) / "bf16-autocast"; ONNX: the EP
    skip: str = ""  # a reason not to run it here


def artifact_kind(path: Path) -> str:
    if path.is_dir() or path.suffix.lower() in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    if path.suffix.lower() in ONNX_SUFFIXES:
        return "onnx"
    if path.suffix.lower() in ENGINE_SUFFIXES:
        return "engine"
    if path.suffix.lower() in C_SUFFIXES:
        return "c"
    raise ModelError(f"{path.name}: not a checkpoint, ONNX file, TensorRT engine or C export")


def plan_jobs(paths: list[Path], device: str, cpu_bf16: bool = False) -> list[Job]:
    """The rows to run: one per artifact on CPU (plus BF16 autocast for checkpoints with ``cpu_bf16``);
    on CUDA, PyTorch FP32 + FP16/BF16 autocast and the ONNX Runtime CUDA and TensorRT execution
    providers, each skipped with the reason where missing (C exports: a skipped CPU row)."""

    jobs: list[Job] = []
    cuda = device.startswith("cuda")
    ok, why = cuda_status() if cuda else (True, "")
    eps = ort.get_available_providers()
    for p in paths:
        kind = artifact_kind(p)
        if not cuda:
            jobs.append(Job(p, kind, "cpu"))
            if cpu_bf16 and kind == "checkpoint":
                ok16, why16 = cpu_bf16_status()
                jobs.append(Job(p, kind, "cpu", "bf16-autocast", "" if ok16 else why16))
        elif kind == "checkpoint":
            skip = "" if ok else why
            jobs.append(Job(p, kind, "cuda", "", skip))
            jobs.append(Job(p, kind, "cuda", "fp16-autocast", skip))
            bf16 = skip or ("" if _bf16_ok() else "this GPU has no BF16 support")
            jobs.append(Job(p, kind, "cuda", "bf16-autocast", bf16))
        elif kind == "c":
            jobs.append(Job(p, kind, "cpu", "", "a C export runs on the CPU; bench it with --device cpu"))
        elif kind == "onnx":
            for ep in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
                skip = "" if ep in eps else f"ONNX Runtime here has no {ep} (it has {', '.join(eps)})"
                jobs.append(Job(p, kind, "cuda", ep, skip or ("" if ok else why)))
        else:
            jobs.append(Job(p, kind, "cuda"))
    for j in jobs:
        if j.kind == "engine" and not j.skip:
            trt_ok, trt_why = tensorrt_status()
            j.skip = "" if trt_ok else trt_why
    return jobs


def cpu_bf16_status() -> tuple[bool, str]:
    """Whether this CPU has native BF16 dot products (AVX512-BF16 or AMX), where BF16 autocast pays."""
    cpu = torch.cpu
    if (
        getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
        or getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    ):
        return True, ""
    return (
        False,
        "this CPU has no BF16 dot products (AVX512-BF16 or AMX); BF16 would be emulated, slower than FP32",
    )


def _bf16_ok() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


class AutocastRunner:
    """A PyTorch runner under ``torch.autocast`` (FP16 or BF16 on CUDA, BF16 on CPU); FP32 logits out."""

    backend = "pytorch"

    def __init__(self, base, dtype_name: str, device_type: str = "cuda"):
        self.base, self.dtype, self.device_type = base, getattr(torch, dtype_name), device_type
        self.name, self.path, self.input_kind = base.name, base.path, base.input_kind
        self.meta = {
            **base.meta,
            "precision": f"{dtype_name.replace('bfloat', 'bf').replace('float', 'fp')}-autocast",
        }

    @property
    def size_bytes(self) -> int:
        return self.base.size_bytes

    def run(self, x) -> np.ndarray:
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.base.run(x)


def open_job(job: Job, threads: int | None):
    """Open the runner of a job (raises a BlmkdError / library error on failure)."""
    if job.kind == "checkpoint":
        r = open_artifact(job.path, device=job.device)
        if job.variant:
            dtype = {"fp16-autocast": "float16", "bf16-autocast": "bfloat16"}[job.variant]
            r = AutocastRunner(r, dtype, "cuda" if job.device.startswith("cuda") else "cpu")
        return r
    if job.kind == "onnx":
        eps = [job.variant, "CPUExecutionProvider"] if job.variant else ["CPUExecutionProvider"]
        r = open_artifact(job.path, providers=eps, threads=threads or 0)
        if job.variant and r.providers[0] != job.variant:
            raise BlmkdError(
                f"ONNX Runtime did not start {job.variant} for this model (it runs on {r.providers[0]})"
            )
        return r
    if job.kind == "c":
        return open_artifact(job.path, threads=threads or 0)
    return open_artifact(job.path)


def format_label(runner, job: Job) -> str:
    prec = str(runner.meta.get("precision", "fp32")).upper()
    if job.kind == "checkpoint":
        return "PyTorch" + ("" if prec == "FP32" else f" {prec}") + (" CUDA" if job.device == "cuda" else "")
    if job.kind == "onnx":
        ep = {"CUDAExecutionProvider": " (ORT CUDA)", "TensorrtExecutionProvider": " (ORT TensorRT)"}.get(
            job.variant, ""
        )
        byte_input = " byte-input" if runner.meta.get("export_format") == "onnx-int8-byte" else ""
        return f"ONNX {prec}{byte_input}{ep}"
    if job.kind == "c":
        return f"C {prec}"
    return f"TensorRT {prec}"


def job_label(job: Job) -> str:
    return (
        f"{job.path.name}"
        + (f" [{job.variant}]" if job.variant else "")
        + (f" on {job.device}" if job.device != "cpu" else "")
    )
