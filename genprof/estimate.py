"""How much memory a run will need, known before it runs: the estimate behind `genprof run`'s refusal.

The estimate has two terms, and says which:
- parameters: counted exactly, from the workload built on the `meta` device
  (no memory, the same code as the real build) or, with `--weights`, from the
  safetensors headers of the weights directory; times the run's dtype size;
- activations and caches: the peak of the bytes of live tensors during one
  inference traced on the `meta` device (a dispatch mode adds each new
  storage's size and subtracts it when its last tensor dies), at batch 1 and
  scaled by the batch; the trial runs three steps or tokens, and the growth of
  live bytes from one step to the next (a KV cache) is extrapolated linearly to
  the run's count, plus the largest transient of a step.
Not counted: the framework itself (torch and library code, the CUDA context),
allocator caching and fragmentation, the profiler's own tables in trace mode,
and activations of runs with real weights (their config is not the preset's).
On the CPU the kernel's peak RSS is 1.3-2.9x the estimated activations
(docs/reliability.md), so a run is refused only when the estimate alone exceeds
the memory available. A trial that fails with the spec's `--set` values but not
with the preset's is the run failing before it starts: refused with its error.
Nothing here allocates.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import weakref
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from genprof.errors import GenprofError
from genprof.spec import RunSpec

# steps / tokens of the traced trial: the growth of live bytes per step is read between its last two steps
# (between the first two, the loop's variables of the step before are still alive: a one-time growth)
TRIAL_COUNT = 3


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    parameter_bytes: int
    activation_bytes: int | None  # None: not estimated (see `note`)
    note: str = ""

    @property
    def total_bytes(self) -> int:
        return self.parameter_bytes + (self.activation_bytes or 0)

    def describe(self) -> str:
        act = "not estimated" if self.activation_bytes is None else gib(self.activation_bytes)
        return (f"{gib(self.total_bytes)} ({self.parameters / 1e6:.4g}M parameters: {gib(self.parameter_bytes)}; "
                f"peak activations and caches: {act})")


def gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**28 else f"{n / 2**20:.3g} MiB"


# ---------------------------------------------------------------------------------------------- tracing


class LiveBytes(TorchDispatchMode):
    """Bytes of the storages created under it that are still referenced, and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}  # storage -> [bytes, tensors referencing it]
        self.current = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del self.live[key]
            self.current -= entry[0]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            try:
                storage = t.untyped_storage()
            except (RuntimeError, NotImplementedError):  # sparse and other storage-less tensors
                continue
            key = storage._cdata
            entry = self.live.get(key)
            if entry is None:
                self.live[key] = [storage.nbytes(), 1]
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
            else:
                entry[1] += 1
            weakref.finalize(t, self._release, key)
        return out


class _StepMarks:
    """The Phases a workload is handed during the trial: live bytes at each step's start, and each step's peak."""

    def __init__(self, live: LiveBytes) -> None:
        self.live = live
        self.phase_name = ""
        self.steps: dict[str, list[tuple[int, int]]] = {}  # phase -> [(live at start, peak in step)]

    def phase(self, name: str) -> Any:
        @contextlib.contextmanager
        def cm() -> Iterator[None]:
            outer, self.phase_name = self.phase_name, name
            try:
                yield
            finally:
                self.phase_name = outer
        return cm()

    def step(self, index: int) -> Any:
        @contextlib.contextmanager
        def cm() -> Iterator[None]:
            start, outer_peak = self.live.current, self.live.peak
            self.live.peak = start
            try:
                yield
            finally:
                self.steps.setdefault(self.phase_name, []).append((start, self.live.peak))
                self.live.peak = max(outer_peak, self.live.peak)
        return cm()


def extrapolate(peak: int, steps: dict[str, list[tuple[int, int]]], trial: int, count: int) -> int:
    """The peak for `count` steps from a trial of `trial` steps: each phase that ran `trial` steps grows
    by the growth of live bytes from its second-last step to its last, for each step the trial did not run."""
    out = peak
    if count <= trial:
        return out
    for marks in steps.values():
        if len(marks) != trial or trial < 2:
            continue
        growth = max(marks[-1][0] - marks[-2][0], 0)
        transient = max(p - s for s, p in marks)
        out = max(out, marks[-1][0] + growth * (count - trial) + transient)
    return out


# ---------------------------------------------------------------------------------------------- estimate


def count_of(wl: Any, spec: RunSpec, p: dict[str, Any]) -> int | None:
    """The steps / tokens the run will do: the spec's, else the preset's, else the workload's maximum."""
    n = getattr(spec, wl.counted_by)
    if n is None and isinstance(p.get(wl.counted_by), int):
        n = p[wl.counted_by]
    return n if n is not None else wl.max_count(p)


@dataclass(frozen=True)
class Trace:
    """One inference traced on meta at batch 1 and `trial` steps: parameters, peak and per-step live bytes."""

    parameters: int
    peak: int | None  # None: the inference did not trace (`error` says why)
    steps: dict[str, list[tuple[int, int]]]
    trial: int
    error: str = ""


_TRACES: dict[str, Trace | BaseException] = {}


def trace(wl: Any, spec: RunSpec, trial: int | None) -> Trace:
    """The workload of `spec` built and run once on meta at batch 1 (cached); raises what the build raises."""
    from genprof.api import _quiet_libraries

    key = repr((spec.workload, spec.size, spec.dtype, spec.params, trial))
    if key not in _TRACES:
        t_spec = dataclasses.replace(spec, device="meta", batch=1, weights=None,
                                     **({wl.counted_by: trial} if trial else {}))
        _quiet_libraries()
        try:
            with torch.device("meta"):
                built = wl.build(t_spec)
            n = sum(t.numel() for m in built.parts.values() for t in m.parameters())
            try:
                with LiveBytes() as live, torch.inference_mode():
                    marks = _StepMarks(live)
                    built.run(marks)
                _TRACES[key] = Trace(n, live.peak, marks.steps, trial or 0)
            except Exception as e:  # noqa: BLE001 - any failure of the inference is reported, not raised
                _TRACES[key] = Trace(n, None, {}, trial or 0, _first_line(e))
        except Exception as e:  # noqa: BLE001
            _TRACES[key] = e
    got = _TRACES[key]
    if isinstance(got, BaseException):
        raise got
    return got


def _first_line(e: BaseException) -> str:
    """The error on one line: its lines joined (libraries put the cause on a second line), at most 300 chars."""
    text = " ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())
    return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__


def estimate(wl: Any, spec: RunSpec) -> MemoryEstimate | None:
    """Parameters (exact) and peak activations (traced on meta, extrapolated) of one run; None when the
    workload cannot be built on meta with its default settings either (nothing to say).

    A build or inference that fails on meta with the spec's `--set` values but works with the preset's is
    the run failing before it starts: a GenprofError naming the error.
    """
    from genprof.workloads.base import torch_dtype

    itemsize = torch.empty((), dtype=torch_dtype(spec.dtype), device="meta").element_size()
    if spec.weights:
        n = weights_parameters(spec.weights)
        return MemoryEstimate(n, n * itemsize, None, "real weights: activations not estimated")
    p = wl.config(spec)
    count = count_of(wl, spec, p)
    trial = min(count, TRIAL_COUNT) if count else None
    try:
        t = trace(wl, spec, trial)
    except Exception as e:  # noqa: BLE001
        _blame_the_settings(wl, spec, trial, e)
        return None
    if t.peak is None:
        _blame_the_settings(wl, spec, trial, t.error)
        return MemoryEstimate(t.parameters, t.parameters * itemsize, None, f"activations not traced ({t.error})")
    act = extrapolate(t.peak, t.steps, t.trial, count or 0) * spec.batch
    return MemoryEstimate(t.parameters, t.parameters * itemsize, act)


def _blame_the_settings(wl: Any, spec: RunSpec, trial: int | None, error: BaseException | str) -> None:
    """Raise when the spec's `--set` values are what makes the dry run fail (the preset's settings work).

    A workload's own refusal (a GenprofError) is not blamed: some are of the meta device alone (llava's
    retrieval task needs real weights); the checks a workload declares run before this."""
    if not spec.params or isinstance(error, GenprofError):
        return
    try:
        default = trace(wl, dataclasses.replace(spec, params=()), trial)
    except Exception:  # noqa: BLE001 - the workload does not build on meta at all
        return
    if default.peak is None and not isinstance(error, BaseException):
        return
    what = error if isinstance(error, str) else _first_line(error)
    sets = " ".join(f"{k}={v!r}" for k, v in spec.params)
    raise GenprofError(f"{spec.workload} fails with --set {sets} (a dry run on the meta device: {what}); "
                       f"the preset's values work")


def weights_parameters(path: str) -> int:
    """Parameters in the safetensors files below `path`, from their headers (no tensor is read)."""
    import json
    import struct

    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            if not f.endswith(".safetensors"):
                continue
            with open(os.path.join(root, f), "rb") as fh:
                try:
                    (size,) = struct.unpack("<Q", fh.read(8))
                    header = json.loads(fh.read(min(size, 100 << 20)))
                except (struct.error, ValueError):
                    continue  # the workload reports an unreadable file itself
            for name, entry in header.items() if isinstance(header, dict) else ():
                if name != "__metadata__" and isinstance(entry, dict):
                    count = 1
                    for d in entry.get("shape") or []:
                        count *= int(d)
                    total += count
    return total


def available_bytes(device: str) -> int | None:
    """Memory a run on `device` can have: free RAM for the CPU, the device's total for CUDA, None for meta."""
    if device == "meta":
        return None
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        return _cuda_total(index)
    import psutil

    return int(psutil.virtual_memory().available)


def _cuda_total(index: int) -> int:
    """A GPU's memory, from nvidia-smi when there is one: asking torch would create a CUDA context in this
    process (hundreds of MB of the GPU, held by a sweep's parent for the whole sweep)."""
    import subprocess

    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    which = visible[index] if index < len(visible) else str(index)
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", which],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip().isdigit():
            return int(out.stdout.strip()) << 20  # MiB
    except (OSError, subprocess.SubprocessError):
        pass
    return int(torch.cuda.get_device_properties(index).total_memory)


def check_memory(wl: Any, spec: RunSpec) -> MemoryEstimate | None:
    """Refuse a run whose estimate exceeds the memory available (a GenprofError with the estimate).

    The estimate undercounts a CPU run's peak (docs/reliability.md: measured 1.1-1.9x), so a refused run
    would not have fit; one that passes may still run out of memory.
    """
    avail = available_bytes(spec.device)
    if avail is None:
        return None
    est = estimate(wl, spec)
    if est is not None and est.total_bytes > avail:
        where = "free on this machine" if spec.device == "cpu" else f"on {spec.device}"
        raise GenprofError(f"{spec.workload} at size {spec.size!r}, batch {spec.batch} needs about "
                           f"{est.describe()}; only {gib(avail)} is {where}: use a smaller --batch, --size or "
                           f"--set, or --device meta to count it without memory")
    return est
