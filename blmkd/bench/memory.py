"""Peak memory of a block of code: process RSS growth on CPU, allocator peak on CUDA.

On Linux the kernel keeps the resident-set high-water mark (``VmHWM`` in ``/proc/self/status``),
and writing ``5`` to ``/proc/self/clear_refs`` resets it to the current RSS. That gives an exact
peak without polling. Where the reset is not allowed, a thread samples the RSS every few
milliseconds (through psutil when installed, else ``/proc/self/status``), which can miss a spike
shorter than the interval; the measurement records which ``method`` it used.

RSS growth measures what a block added to the process: memory the allocator already holds from
earlier work is reused without growing the RSS, so run the block first in a fresh process where the
absolute footprint matters (``benchmarks/bench_xiongan.py`` does).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import torch

try:  # optional: /proc/self/status where it is missing
    import psutil
except ImportError:
    psutil = None

MB = 1 << 20
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(key: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    """Current resident set size of this process in bytes (None where it cannot be read)."""
    if psutil is not None:
        return int(psutil.Process().memory_info().rss)
    kb = _status_kb("VmRSS")
    return None if kb is None else kb * 1024


def peak_rss_bytes() -> int | None:
    """Resident-set high-water mark of this process (``VmHWM``), in bytes."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb * 1024
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux
    except (ImportError, OSError):
        return None


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS; False where not allowed."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Context manager measuring the peak memory a block adds.

    Args:
        device: ``"cpu"`` (process RSS growth) or ``"cuda"`` (``torch.cuda.max_memory_allocated``
            above the allocation at entry).
        interval_s: sampling interval of the fallback RSS poller.

    Attributes:
        peak_mb: the peak growth in MiB (None where memory cannot be read here).
        method: how it was measured.
    """

    def __init__(self, device: str = "cpu", interval_s: float = 0.002):
        self.device = device
        self.interval_s = interval_s
        self.peak_mb: float | None = None
        self.method = ""
        self._samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self._base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            self.method = "torch.cuda.max_memory_allocated"
            return self
        self._base = rss_bytes()
        if self._base is None:
            self.method = "unavailable: cannot read this process's RSS"
            return self
        if reset_peak_rss():
            self.method = "RSS growth (kernel VmHWM, reset through /proc/self/clear_refs)"
        else:
            self.method = "RSS growth (sampled every %g ms)" % (1e3 * self.interval_s)
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            v = rss_bytes()
            if v is not None:
                self._samples.append(v)
            time.sleep(self.interval_s)

    def __exit__(self, *exc) -> bool:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak_mb = max(0, torch.cuda.max_memory_allocated() - self._base) / MB
            return False
        if self._base is None:
            return False
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            now = rss_bytes() or self._base
            peak = max([*self._samples, now])
        else:
            peak = peak_rss_bytes() or self._base
        self.peak_mb = max(0, peak - self._base) / MB
        return False
