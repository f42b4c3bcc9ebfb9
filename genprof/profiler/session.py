"""Measure one built workload: timing mode or trace mode, warm-up then repeats.

- timing: phases and steps timed with CUDA events (GPU) or perf_counter (CPU),
  no profiler; per phase the samples of every repeat.
- trace: torch.profiler (CPU, plus CUDA when the device is a GPU; shapes
  recorded) over the repeats, with phase/step/repeat ranges and one range per
  module call; the op table is built from it (genprof.profiler.optable).
Both measure peak memory, and record per repeat the wall time and the
process CPU time around it, the machine's load at the start and end, and the
thread count (`Measurement.signals`: what the stability verdict reads).
Repeats: a fixed number, or, with `RepeatPolicy.ci_target`, repeats until the
95% confidence interval of the median wall time is within that fraction of
the median (at least `repeats`, and six: fewer cannot reach 95%) or the
budget of measured seconds ends. Knows nothing of which model it runs: only
the `Built` contract (parts + run).
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import psutil
import torch

from genprof.phases import NullPhases
from genprof.profiler import events, optable, scopes
from genprof.profiler.memory import MemoryMonitor
from genprof.profiler.stats import median_ci
from genprof.profiler.timers import make_timer, synchronize

Progress = Callable[[str], None]
MAX_REPEATS = 1000


@dataclass
class RepeatPolicy:
    """How many repeats to measure: `repeats`, or with `ci_target` until the median's 95% interval is that
    tight (relative half-width) or `budget_s` seconds of repeats have run."""

    repeats: int
    ci_target: float | None = None
    budget_s: float = 120.0

    def more(self, walls: list[float]) -> bool:
        n = len(walls)
        if n < self.repeats:
            return True
        if self.ci_target is None or n >= MAX_REPEATS or sum(walls) >= self.budget_s:
            return False
        return _ci_rel(walls) > self.ci_target

    def why_stopped(self, walls: list[float]) -> str:
        if self.ci_target is None:
            return "repeats"
        if _ci_rel(walls) <= self.ci_target:
            return "ci target"
        return "max repeats" if len(walls) >= MAX_REPEATS else "budget"


def _ci_rel(walls: list[float]) -> float:
    """The median's 95% CI half-width relative to the median (inf when n is too small for 95%)."""
    lo, hi, cover = median_ci(walls)
    med = float(np.median(walls))
    if cover < 0.95:
        return math.inf
    return (hi - lo) / 2 / med if med > 0 else (0.0 if hi == lo else math.inf)


class _Signals:
    """Per repeat wall and process CPU time, and the machine's state around the measurement."""

    def __init__(self):
        self.wall_s: list[float] = []
        self.cpu_s: list[float] = []
        self.out: dict[str, Any] = {"threads": torch.get_num_threads(), "cpus": available_cpus(),
                                    "load_start": _load()}
        self._paused = [0.0, 0.0]  # wall and CPU seconds of genprof's own work inside the current repeat

    @contextlib.contextmanager
    def repeat(self, device: torch.device) -> Iterator[None]:
        synchronize(device)
        self._paused = [0.0, 0.0]
        w, c = time.perf_counter(), time.process_time()
        yield
        synchronize(device)
        self.wall_s.append(time.perf_counter() - w - self._paused[0])
        self.cpu_s.append(time.process_time() - c - self._paused[1])

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Work inside a repeat that is genprof's, not the workload's (ending a profiler session)."""
        w, c = time.perf_counter(), time.process_time()
        yield
        self._paused[0] += time.perf_counter() - w
        self._paused[1] += time.process_time() - c

    def result(self, policy: RepeatPolicy) -> dict[str, Any]:
        return {**self.out, "load_end": _load(), "wall_s": self.wall_s, "cpu_s": self.cpu_s,
                "repeats": len(self.wall_s), "stopped_by": policy.why_stopped(self.wall_s),
                "ci_target": policy.ci_target, "budget_s": policy.budget_s if policy.ci_target else None}


def available_cpus() -> int:
    """CPUs this process may run on (its affinity), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _load() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


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
    signals: dict[str, Any] = field(default_factory=dict)  # per repeat wall/CPU time, load, threads


def _warmup(built: Any, n: int, progress: Progress | None) -> None:
    for i in range(n):
        with torch.inference_mode():
            built.run(NullPhases())
        if progress:
            progress(f"warm-up {i + 1}/{n}")


def _policy(repeats: int | RepeatPolicy) -> RepeatPolicy:
    return repeats if isinstance(repeats, RepeatPolicy) else RepeatPolicy(repeats)


def _label(r: int, policy: RepeatPolicy) -> str:
    return f"repeat {r + 1}/{policy.repeats}" if policy.ci_target is None else f"repeat {r + 1}"


def measure_timing(built: Any, device: torch.device, repeats: int | RepeatPolicy, warmup: int,
                   progress: Progress | None = None) -> Measurement:
    policy = _policy(repeats)
    _warmup(built, warmup, progress)
    timer = make_timer(device)
    marks: list[tuple] = []
    output = None
    sig = _Signals()
    with MemoryMonitor(device) as mem:
        r = 0
        while policy.more(sig.wall_s):
            phases = scopes.TimedPhases(timer, r)
            with sig.repeat(device):
                start = timer.mark()
                with torch.inference_mode():
                    output = built.run(phases)
                end = timer.mark()
            marks += phases.marks + [(r, "total", scopes.NO_STEP, start, end)]
            if progress:
                progress(_label(r, policy))
            r += 1
        timer.finish()
    times = pd.DataFrame([(r, p, s, timer.elapsed_s(a, b)) for r, p, s, a, b in marks],
                         columns=["repeat", "phase", "step", "time_s"])
    return Measurement("timing", timer.kind, times, mem.result(), output=output, signals=sig.result(policy))


def measure_trace(built: Any, device: torch.device, repeats: int | RepeatPolicy, warmup: int,
                  run: dict[str, Any], trace_to: Path | None = None,
                  progress: Progress | None = None) -> Measurement:
    """Trace mode. The repeats run under profiler sessions that end after a repeat, or after a step once the
    process has grown by SESSION_BYTES since the session began; each session's events become op-table rows
    when it ends (outside the timed repeats: the signals leave that time out), so memory holds one
    session's raw events, not a whole run's. With `trace_to` (the Chrome trace of every repeat kept) one
    session spans every repeat."""
    policy = _policy(repeats)
    _warmup(built, warmup, progress)
    sig = _Signals()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    output = None
    sessions = _Sessions(activities, run, sig, fused_attention=True if device.type == "meta" else None)
    one_session = trace_to is not None
    peaks: list[dict[str, Any]] = []
    phases = scopes.TracePhases(None if one_session else sessions.after_step)
    with scopes.ModuleScopes(built.parts) as modules:
        sessions.modules = modules
        r = 0
        while policy.more(sig.wall_s):
            sessions.start()
            with MemoryMonitor(device) as mem:
                with sig.repeat(device), phases.repeat(r), torch.inference_mode():
                    output = built.run(phases)
            peaks.append(mem.result())
            if progress:
                progress(_label(r, policy))
            r += 1
            if not one_session or not policy.more(sig.wall_s):
                if one_session and progress:
                    progress("building the op table")
                prof = sessions.stop()
        trace_file = _export_trace(prof, trace_to) if one_session else None
    del prof
    ops = pd.concat([t[0] for t in sessions.tables], ignore_index=True)
    times = pd.concat([t[1] for t in sessions.tables], ignore_index=True)
    # a range split over sessions (a repeat, a phase) is one row again: the sum of its pieces
    times = times.groupby(["repeat", "phase", "step"], sort=False, as_index=False)["time_s"].sum()
    stats = {**sessions.stats, "sessions": len(sessions.tables)}
    return Measurement("trace", "torch.profiler", times, _peak(peaks), ops=ops, trace_file=trace_file,
                       output=output, profiler=stats, signals=sig.result(policy))


SESSION_BYTES = 128 * 2**20


def trim_memory() -> None:
    """Give the memory freed by a session's events back to the system (glibc keeps it otherwise), so the
    next session's growth is its own."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _Sessions:
    """The profiler sessions of a trace-mode measurement; each becomes op-table rows when it ends."""

    def __init__(self, activities: list[Any], run: dict[str, Any], sig: "_Signals",
                 fused_attention: bool | None = None):
        self.activities, self.run, self.sig, self.fused_attention = activities, run, sig, fused_attention
        self.modules: Any = None
        self.prof: Any = None
        self.tables: list[tuple[pd.DataFrame, pd.DataFrame]] = []
        self.stats = {"events": 0, "collect_s": 0.0, "collect_cpu_s": 0.0, "analyze_s": 0.0}
        self._proc = psutil.Process()

    def start(self) -> None:
        if self.prof is not None:
            return
        self.prof = torch.profiler.profile(activities=self.activities, record_shapes=True)
        self.t0, self.c0, self.rss0 = time.perf_counter(), time.process_time(), self._proc.memory_info().rss
        with _quiet_stderr():
            self.prof.start()

    def stop(self) -> Any:
        """End the session and turn its events into rows; returns the profiler (for a trace export)."""
        prof, self.prof = self.prof, None
        with _quiet_stderr():
            prof.stop()
        self.stats["collect_s"] += time.perf_counter() - self.t0
        self.stats["collect_cpu_s"] += time.process_time() - self.c0
        t0 = time.perf_counter()
        ev = events.from_profile(prof)
        self.tables.append(optable.build(ev, self.modules.types, self.modules.attention_kinds, self.run,
                                         fused_attention=self.fused_attention))
        self.stats["events"] += len(ev) + len(ev.kernel_ns)
        del ev
        trim_memory()
        self.stats["analyze_s"] += time.perf_counter() - t0
        return prof

    def after_step(self, phases: Any) -> None:
        """Between two steps: when this session has grown the process by SESSION_BYTES, end it and begin the
        next (the time that takes is left out of the repeat's wall and CPU time)."""
        if self._proc.memory_info().rss - self.rss0 < SESSION_BYTES:
            return
        with self.sig.paused():
            phases.checkpoint(lambda: (self.stop(), self.start()))


def _peak(per_repeat: list[dict[str, Any]]) -> dict[str, Any]:
    """The memory of every repeat as one: the highest peak, and its growth over the first repeat's start."""
    worst = max(per_repeat, key=lambda m: m.get("peak_device_bytes", m["peak_rss_bytes"]))
    start = per_repeat[0]["rss_at_start_bytes"]
    out = {**worst, "peak_rss_growth_bytes": max(m["peak_rss_bytes"] for m in per_repeat) - start,
           "rss_at_start_bytes": start}
    out["peak_rss_bytes"] = max(m["peak_rss_bytes"] for m in per_repeat)
    return out


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
