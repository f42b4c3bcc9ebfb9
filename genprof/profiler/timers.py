"""Wall-clock timers for phases: CUDA events on a GPU, perf_counter elsewhere.

A timer hands out marks; `elapsed_s(start, end)` turns two marks into seconds.
On CUDA a mark is an event recorded on the current stream (read after one
synchronize at the end, so timing adds no sync inside the run); on the CPU it
is `perf_counter()` taken after synchronizing the device. No torch.profiler.
"""

from __future__ import annotations

import time
from typing import Any

import torch


class CpuTimer:
    kind = "perf_counter"

    def __init__(self, device: torch.device):
        self.device = device

    def mark(self) -> float:
        return time.perf_counter()

    def finish(self) -> None:
        pass

    @staticmethod
    def elapsed_s(start: Any, end: Any) -> float:
        return end - start


class CudaEventTimer:
    kind = "cuda_events"

    def __init__(self, device: torch.device):
        self.device = device

    def mark(self) -> torch.cuda.Event:
        ev = torch.cuda.Event(enable_timing=True)
        ev.record(torch.cuda.current_stream(self.device))
        return ev

    def finish(self) -> None:
        torch.cuda.synchronize(self.device)

    @staticmethod
    def elapsed_s(start: torch.cuda.Event, end: torch.cuda.Event) -> float:
        return start.elapsed_time(end) / 1e3


def make_timer(device: torch.device) -> CpuTimer | CudaEventTimer:
    return CudaEventTimer(device) if device.type == "cuda" else CpuTimer(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
