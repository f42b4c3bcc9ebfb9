"""Peak memory of a run: device allocator peak on a GPU; on the CPU the process's peak RSS, and its growth.

Measured over the repeats after warm-up: `peak_rss_bytes` is the process's
resident memory at its highest (model, inputs, Python and everything else the
process holds), `peak_rss_growth_bytes` that minus the RSS at the start of the
measurement (what the measured inferences added beyond what warm-up had
already allocated: often near 0 once the allocator has its pages).

On Linux the kernel's high-water mark (VmHWM) is reset at the start (writing
5 to /proc/self/clear_refs) and read at the end: the exact peak, at no cost
while the workload runs. Where that is refused, a background thread samples the
process RSS every few milliseconds instead (it can miss short spikes and it
takes CPU time from the run; the method and interval are recorded next to the
number).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import psutil
import torch


class MemoryMonitor:
    method = "sampled"

    def __init__(self, device: torch.device, interval_s: float = 0.002):
        self.device = device
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc = psutil.Process()
        self.start_rss = 0
        self.peak_rss = 0

    def __enter__(self) -> "MemoryMonitor":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_device = torch.cuda.memory_allocated(self.device)
        self.start_rss = self.peak_rss = self._proc.memory_info().rss
        if _ACTIVE:  # nested monitors: a reset must not lose the outer ones' peak so far
            hwm = read_hwm() or 0
            for outer in _ACTIVE:
                outer.peak_rss = max(outer.peak_rss, hwm)
        self.method = "VmHWM" if reset_hwm() else "sampled"
        _ACTIVE.append(self)
        if self.method == "sampled":
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_rss = max(self.peak_rss, self._proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.peak_rss = max(self.peak_rss, self._proc.memory_info().rss)
        if self.method == "VmHWM":
            self.peak_rss = max(self.peak_rss, read_hwm() or 0)

    def result(self) -> dict[str, float | str]:
        out: dict[str, float | str] = {
            "peak_rss_bytes": float(self.peak_rss),  # the process's resident memory at its highest
            "peak_rss_growth_bytes": float(self.peak_rss - self.start_rss),  # that, minus the RSS at the start
            "rss_at_start_bytes": float(self.start_rss),
            "rss_peak_method": self.method,
        }
        if self.method == "sampled":
            out["rss_sample_interval_s"] = self.interval_s
        if self.device.type == "cuda":
            out["peak_device_bytes"] = float(torch.cuda.max_memory_allocated(self.device))
            out["device_bytes_at_start"] = float(self.start_device)
        return out


_ACTIVE: list[MemoryMonitor] = []
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def read_hwm() -> int | None:
    """The kernel's peak-RSS mark (VmHWM) in bytes; None where /proc does not give it."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); False where refused."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return read_hwm() is not None


def peak_growth() -> Callable[[], int]:
    """Start measuring this process's peak RSS growth (the kernel's VmHWM reset to the RSS now); the
    returned function gives the growth so far in bytes (0 where /proc does not tell)."""
    start = psutil.Process().memory_info().rss
    reset_hwm()
    return lambda: max((read_hwm() or start) - start, 0)
