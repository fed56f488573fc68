"""The process group of a ``torchrun`` launch, and the few collectives training and mapping need.

``torchrun`` starts one process per GPU (or per CPU share) and tells each its place through the
environment: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.
:func:`init_from_env` joins the group once (later calls return the same context) and is called by
:func:`blmkd.training.loop.fit` and :func:`blmkd.distill.kd.teacher_cache` themselves, so every command
runs unchanged under ``torchrun``. Without those variables nothing is initialised and every helper
here is the identity of a world of one: single-process runs behave exactly as before.

Backend: NCCL where CUDA and NCCL are available (each rank then trains on ``cuda:LOCAL_RANK``),
else gloo on the CPU; ``BLMKD_DIST_BACKEND=gloo`` forces the CPU.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from blmkd.bench.machine import cuda_status
from blmkd.errors import BlmkdError

BACKENDS = ("gloo", "nccl")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the group."""

    rank: int = 0  # global rank, 0 .. world_size - 1
    world_size: int = 1
    local_rank: int = 0  # rank on this node: the GPU index under NCCL
    backend: str | None = None  # None: no process group (single process)
    device: torch.device = torch.device("cpu")  # where this rank trains

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_CTX: DistContext | None = None
_LOCAL_DEVICE = torch.device("cpu")  # where a single process (no torchrun) trains: set_local_device


def resolve_device(name: str) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA where a GPU is visible) as a device.

    Raises:
        BlmkdError: an unknown name, or CUDA asked for where PyTorch sees no GPU.
    """
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise BlmkdError(f"--device must be cpu, cuda, cuda:N or auto, not {name!r}")
    if dev.type == "cuda":
        ok, why = cuda_status()
        if not ok:
            raise BlmkdError(f"--device cuda: {why}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BlmkdError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def set_local_device(device: str | torch.device) -> torch.device:
    """Where a process that torchrun did not launch trains and runs teachers (default: the CPU).

    Under torchrun each rank's device comes from the backend instead (``cuda:LOCAL_RANK`` with NCCL).
    """
    global _LOCAL_DEVICE
    _LOCAL_DEVICE = device if isinstance(device, torch.device) else resolve_device(device)
    return _LOCAL_DEVICE


def launched_by_torchrun() -> bool:
    """True where the environment names a rank and a world size (torchrun, or a launcher like it)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def choose_backend(requested: str | None = None) -> str:
    """``requested``, else ``$BLMKD_DIST_BACKEND``, else NCCL with CUDA and gloo without."""
    name = (
        requested
        or os.environ.get("BLMKD_DIST_BACKEND")
        or ("nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo")
    )
    if name not in BACKENDS:
        raise BlmkdError(f"distributed backend must be one of {', '.join(BACKENDS)}, not {name!r}")
    if name == "nccl" and not (torch.cuda.is_available() and dist.is_nccl_available()):
        raise BlmkdError("the NCCL backend needs CUDA and a torch built with NCCL; use gloo on the CPU")
    return name


def init_from_env(backend: str | None = None, timeout_s: float = 1800.0) -> DistContext:
    """Join the process group described by torchrun's environment variables (once per process).

    Args:
        backend: ``"gloo"`` or ``"nccl"`` (default: :func:`choose_backend`).
        timeout_s: how long a collective waits for the slowest rank (the teacher-logit cache and
            the final test evaluation are the longest).

    Returns:
        The context; a world of one on the CPU when the process was not launched by torchrun.
    """
    global _CTX
    if _CTX is not None:
        return _CTX
    if dist.is_available() and dist.is_initialized():  # the caller made the group itself
        name = dist.get_backend()
        local = int(os.environ.get("LOCAL_RANK", 0))
        _CTX = DistContext(dist.get_rank(), dist.get_world_size(), local, name, _device(name, local))
        return _CTX
    if not launched_by_torchrun():
        return DistContext(
            device=_LOCAL_DEVICE
        )  # not cached: a group made later by the caller is still found
    if not dist.is_available():
        raise BlmkdError("launched by torchrun, but this torch was built without torch.distributed")
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    name = choose_backend(backend)
    device = _device(name, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # object collectives and bare "cuda" tensors use it
    # MASTER_ADDR / MASTER_PORT (set by torchrun, also for --rdzv_endpoint) are read by env://.
    dist.init_process_group(name, init_method="env://", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))  # fmt: skip
    atexit.register(cleanup)
    _CTX = DistContext(rank, world, local, name, device)
    return _CTX


def _device(backend: str, local_rank: int) -> torch.device:
    return torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")


def context() -> DistContext:
    """The current context, without joining a group (a world of one before :func:`init_from_env`)."""
    return _CTX if _CTX is not None else DistContext(device=_LOCAL_DEVICE)


def rank() -> int:
    """This process's global rank: the group's, else ``$RANK`` (so printing is right before init)."""
    if _CTX is not None:
        return _CTX.rank
    return int(os.environ.get("RANK", 0))


def is_main() -> bool:
    """True on rank 0, the only rank that writes checkpoints, logs and maps and prints."""
    return rank() == 0


def _active() -> bool:
    return _CTX is not None and _CTX.distributed


def _comm_device() -> torch.device:
    return _CTX.device if _CTX is not None else torch.device("cpu")


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum of ``values`` over all ranks, in float64 (exact for counts below 2⁵³)."""
    if not _active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def all_reduce_grads(params: Sequence[torch.nn.Parameter]) -> None:
    """Average the gradients of parameters that DistributedDataParallel does not own (in place)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not _active() or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= _CTX.world_size
    i = 0
    for g in grads:
        g.copy_(flat[i : i + g.numel()].view_as(g))
        i += g.numel()


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank (any picklable object; tensors travel pickled)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def all_gather_object(obj) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not _active():
        return [obj]
    out = [None] * _CTX.world_size
    dist.all_gather_object(out, obj)
    return out


def gather_object(obj, dst: int = 0) -> list | None:
    """Every rank's ``obj``, in rank order, on rank ``dst``; None elsewhere."""
    if not _active():
        return [obj]
    out = [None] * _CTX.world_size if _CTX.rank == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


def barrier() -> None:
    if not _active():
        return
    if _CTX.backend == "nccl":
        dist.barrier(device_ids=[_CTX.local_rank])
    else:
        dist.barrier()


def shard(n: int) -> slice:
    """This rank's contiguous share of ``n`` items (sizes differ by at most one; rank order is item order)."""
    ctx = context()
    q, r = divmod(n, ctx.world_size)
    start = ctx.rank * q + min(ctx.rank, r)
    return slice(start, start + q + (ctx.rank < r))


def cleanup() -> None:
    """Leave the process group (registered with atexit by :func:`init_from_env`)."""
    global _CTX
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _CTX = None
