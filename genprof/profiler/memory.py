"""Peak memory of a run: device allocator peak on a GPU, peak RSS growth on a CPU.

On the CPU a background thread samples the process RSS every few milliseconds
(the OS high-water mark cannot be reset), so the peak is the largest sample
minus the RSS at start. Short spikes between samples can be missed; the
sampling interval is recorded next to the number.
"""

from __future__ import annotations

import threading

import psutil
import torch


class MemoryMonitor:
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
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_rss = max(self.peak_rss, self._proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.peak_rss = max(self.peak_rss, self._proc.memory_info().rss)

    def result(self) -> dict[str, float | str]:
        out: dict[str, float | str] = {
            "peak_rss_growth_bytes": float(self.peak_rss - self.start_rss),
            "rss_sample_interval_s": self.interval_s,
        }
        if self.device.type == "cuda":
            out["peak_device_bytes"] = float(torch.cuda.max_memory_allocated(self.device))
            out["device_bytes_at_start"] = float(self.start_device)
        return out
