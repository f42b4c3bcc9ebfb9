"""Measure one built workload: timing mode or trace mode, warm-up then repeats.

- timing: phases and steps timed with CUDA events (GPU) or perf_counter (CPU),
  no profiler; per phase the samples of every repeat.
- trace: torch.profiler (CPU, plus CUDA when the device is a GPU; shapes
  recorded) over the repeats, with phase/step/repeat ranges and one range per
  module call; the op table is built from it (genprof.profiler.optable).
Both measure peak memory. Knows nothing of which model it runs: only the
`Built` contract (parts + infer).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from torch.autograd.profiler import record_function

from genprof.profiler import events, optable, scopes
from genprof.profiler.memory import MemoryMonitor
from genprof.profiler.timers import make_timer, synchronize

Progress = Callable[[str], None]


@dataclass
class Measurement:
    """What a session measured. `phase_times`: repeat, phase, step, time_s (step -1 = whole phase)."""

    mode: str
    timer: str
    phase_times: pd.DataFrame
    memory: dict[str, Any]
    ops: pd.DataFrame | None = None
    trace_file: Path | None = None
    output: Any = None
    notes: list[str] = field(default_factory=list)
    profiler: dict[str, Any] = field(default_factory=dict)  # trace mode: events, collect_s, analyze_s


def _warmup(built: Any, n: int, progress: Progress | None) -> None:
    from genprof.workloads.base import NullPhases

    for i in range(n):
        with torch.inference_mode():
            built.infer(NullPhases())
        if progress:
            progress(f"warm-up {i + 1}/{n}")


def measure_timing(built: Any, device: torch.device, repeats: int, warmup: int,
                   progress: Progress | None = None) -> Measurement:
    _warmup(built, warmup, progress)
    timer = make_timer(device)
    marks: list[tuple] = []
    output = None
    with MemoryMonitor(device) as mem:
        for r in range(repeats):
            phases = scopes.TimedPhases(timer, r)
            synchronize(device)
            start = timer.mark()
            with torch.inference_mode():
                output = built.infer(phases)
            end = timer.mark()
            marks += phases.marks + [(r, "total", scopes.NO_STEP, start, end)]
            if progress:
                progress(f"repeat {r + 1}/{repeats}")
        timer.finish()
    times = pd.DataFrame([(r, p, s, timer.elapsed_s(a, b)) for r, p, s, a, b in marks],
                         columns=["repeat", "phase", "step", "time_s"])
    return Measurement("timing", timer.kind, times, mem.result(), output=output)


def measure_trace(built: Any, device: torch.device, repeats: int, warmup: int,
                  run: dict[str, Any], trace_to: Path | None = None,
                  progress: Progress | None = None) -> Measurement:
    _warmup(built, warmup, progress)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    phases = scopes.TracePhases()
    output = None
    prof = torch.profiler.profile(activities=activities, record_shapes=True)
    with MemoryMonitor(device) as mem, scopes.ModuleScopes(built.parts) as modules:
        t0, c0 = time.perf_counter(), time.process_time()
        with _quiet_stderr():
            prof.start()
        try:
            for r in range(repeats):
                with record_function(scopes.REPEAT + str(r)), torch.inference_mode():
                    output = built.infer(phases)
                synchronize(device)
                if progress:
                    progress(f"repeat {r + 1}/{repeats}")
        finally:
            with _quiet_stderr():
                prof.stop()
        collect_s, collect_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    if progress:
        progress("building the op table")
    t0 = time.perf_counter()
    ev = events.from_profile(prof)
    ops, times = optable.build(ev, modules.types, modules.attention_kinds, run,
                               fused_attention=True if device.type == "meta" else None)
    stats = {"events": len(ev) + len(ev.kernel_ns), "collect_s": collect_s, "collect_cpu_s": collect_cpu_s,
             "analyze_s": time.perf_counter() - t0}
    trace_file = None
    if trace_to is not None:
        trace_file = _export_trace(prof, trace_to)
    return Measurement("trace", "torch.profiler", times, mem.result(), ops=ops,
                       trace_file=trace_file, output=output, profiler=stats)


@contextlib.contextmanager
def _quiet_stderr():
    """Drop the profiler's own `profiler_start/stop` lines (printed by C++ on fd 2); keep the rest."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (notebooks): nothing to filter
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode(errors="replace").splitlines(keepends=True):
                if "profiler_st" not in line and "Completed Stage" not in line:
                    sys.stderr.write(line)


def _export_trace(prof: Any, dest: Path) -> Path:
    """Write the Chrome trace gzip-compressed (Perfetto and HTA open it)."""
    fd, raw = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(raw)
        with open(raw, "rb") as src, gzip.open(dest, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst)
    finally:
        os.unlink(raw)
    return dest
