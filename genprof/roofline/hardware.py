"""Hardware profiles for the roofline: peak FLOP/s per precision, memory bandwidth, efficiencies.

A `HardwareProfile` holds a machine's datasheet peaks (dense FLOP/s per
precision: fp32, tf32, bf16 = fp16; memory bandwidth), what was measured on it
where there is a measurement (for the H200: figures reported from an earlier
run, which scripts/gpu_check.py measures again), and the two efficiencies the
projection uses:
`eff_compute` (fraction of the datasheet FLOP/s a large GEMM reaches) and
`eff_memory` (fraction of the datasheet bandwidth a device copy reaches).
Where a measurement exists the efficiency is measured / datasheet.

GPU profiles also carry `launch_s`, the time to issue one kernel (graph-captured
or compiled execution), which the overlap of host and device time
(genprof.roofline.overlap) also takes as the shortest time a kernel occupies the
device; CPU profiles carry `op_overhead_s`, the dispatch time of one op, which
the CPU pays in series with the op itself. What a host CPU spends to issue ops
to a GPU is a host profile (genprof.roofline.host), not part of these.

`measure_local()` measures this machine in a few seconds (a float32 GEMM, a
large tensor copy, the dispatch time of a tiny op, plain and under the
profiler) and caches the result as JSON under the user cache directory, keyed
by CPU, torch version and thread count. It does not model caches, NUMA or
frequency scaling: it is one number per resource.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genprof.errors import GenprofError, unknown_choice

PRECISIONS = ("fp32", "tf32", "bf16")
DTYPE_PRECISION = {"float32": "fp32", "float16": "bf16", "bfloat16": "bf16"}


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    label: str
    kind: str  # "gpu" | "cpu"
    peak_flops: dict[str, float]  # datasheet (dense), FLOP/s per precision
    bandwidth_Bps: float  # datasheet memory bandwidth, bytes/s
    eff_compute: float = 1.0
    eff_memory: float = 1.0
    measured_flops: dict[str, float] = field(default_factory=dict)
    measured_bandwidth_Bps: float | None = None
    launch_s: float = 0.0  # GPU: time to issue one kernel; overlaps with execution
    op_overhead_s: float = 0.0  # CPU: dispatch time per op, in series with the op
    source: str = ""
    measured_on: dict[str, Any] = field(default_factory=dict)

    def flops(self, precision: str) -> float:
        """Effective FLOP/s for a precision: datasheet peak x eff_compute."""
        if precision not in self.peak_flops:
            raise unknown_choice(f"precision for {self.name}", precision, tuple(self.peak_flops))
        return self.peak_flops[precision] * self.eff_compute

    @property
    def bandwidth(self) -> float:
        """Effective bytes/s: datasheet bandwidth x eff_memory."""
        return self.bandwidth_Bps * self.eff_memory

    def ridge(self, precision: str) -> float:
        """Arithmetic intensity (FLOP/byte) above which an op is compute-bound."""
        return self.flops(precision) / self.bandwidth

    def with_overrides(self, **kw: Any) -> "HardwareProfile":
        """A copy with some fields replaced (None values are ignored)."""
        kw = {k: v for k, v in kw.items() if v is not None}
        for k in ("eff_compute", "eff_memory"):
            if k in kw and not 0 < float(kw[k]) <= 1.5:
                raise GenprofError(f"--{k.replace('_', '-')} must be in (0, 1.5], got {kw[k]}")
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


T, G = 1e12, 1e9
# Datasheet: NVIDIA A100 (80GB SXM), H100 SXM5, H200 SXM; dense (no structured sparsity).
# The H200's efficiencies come from figures reported from an earlier H200 run (bf16 8192^3 matmul
# about 790 TFLOP/s, device copy about 4.3 TB/s), not reproduced by this repository yet:
# scripts/gpu_check.py measures both on a GPU. A100 and H100 have no measurement, so they take
# the same fractions.
H200_EFF_COMPUTE = 790e12 / 989.4e12
H200_EFF_MEMORY = 4.3e12 / 4.8e12
GPU_LAUNCH_S = 2e-6

PROFILES: dict[str, HardwareProfile] = {
    "a100": HardwareProfile(
        "a100", "A100-80GB SXM", "gpu", {"fp32": 19.5 * T, "tf32": 156 * T, "bf16": 312 * T}, 2039 * G,
        H200_EFF_COMPUTE, H200_EFF_MEMORY, launch_s=GPU_LAUNCH_S,
        source="datasheet; efficiencies assumed equal to the H200's reported fractions"),
    "h100": HardwareProfile(
        "h100", "H100 SXM", "gpu", {"fp32": 67 * T, "tf32": 494.7 * T, "bf16": 989.4 * T}, 3350 * G,
        H200_EFF_COMPUTE, H200_EFF_MEMORY, launch_s=GPU_LAUNCH_S,
        source="datasheet; efficiencies assumed equal to the H200's reported fractions"),
    "h200": HardwareProfile(
        "h200", "H200 SXM", "gpu", {"fp32": 67 * T, "tf32": 494.7 * T, "bf16": 989.4 * T}, 4800 * G,
        H200_EFF_COMPUTE, H200_EFF_MEMORY, measured_flops={"bf16": 790 * T}, measured_bandwidth_Bps=4.3e12,
        launch_s=GPU_LAUNCH_S, source="datasheet; bf16 matmul 8192^3 and device copy as reported from an earlier H200 run, "
               "not reproduced by this repository yet (scripts/gpu_check.py measures them)"),
}
GPU_NAMES = ("a100", "h100", "h200")  # the GPU profiles, in the order tables and figures show them
NAMES = (*PROFILES, "local")


def canonical_name(name: str) -> str:
    """The profile name `name` stands for (a100 | h100 | h200 | local; case, `-` and `_` ignored,
    A100-80GB / H100-SXM / H200-SXM accepted); an unknown name is a one-line GenprofError."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    key = {"a10080gb": "a100", "h100sxm": "h100", "h200sxm": "h200"}.get(key, key)
    if key not in NAMES:
        raise unknown_choice("hardware", name, NAMES)
    return key


def get_profile(name: str, threads: int | None = None, measure: bool = True) -> HardwareProfile:
    """A profile by name: a100 | h100 | h200 | local (this machine, measured and cached)."""
    key = canonical_name(name)
    if key == "local":
        return measure_local(threads=threads) if measure else _cached_local(threads)
    return PROFILES[key]


# ---------------------------------------------------------------------------------------------- local


def cache_dir() -> Path:
    """GENPROF_CACHE_DIR, else $XDG_CACHE_HOME/genprof, else ~/.cache/genprof."""
    if os.environ.get("GENPROF_CACHE_DIR"):
        return Path(os.environ["GENPROF_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "genprof"


def _machine(threads: int) -> dict[str, Any]:
    import torch

    from genprof.store import _cpu_name

    return {"cpu": _cpu_name(), "machine": platform.machine(), "node": platform.node(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": threads}


def _cache_file(machine: dict[str, Any]) -> Path:
    key = json.dumps({k: machine[k] for k in ("cpu", "machine", "node", "torch", "threads")}, sort_keys=True)
    return cache_dir() / f"hw-local-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"


def _cached_local(threads: int | None) -> HardwareProfile:
    import torch

    machine = _machine(threads or torch.get_num_threads())
    prof = _read_cache(_cache_file(machine))
    if prof is None:
        raise GenprofError(f"no measured local profile for {machine['threads']} thread(s); "
                           "run `genprof project RUN_DIR --hw local` (measures in a few seconds)")
    return prof


def _read_cache(path: Path) -> HardwareProfile | None:
    """The cached profile at `path`; None when there is none or it is corrupt (then it is measured again)."""
    if not path.is_file():
        return None
    try:
        return _from_json(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError):
        return None


def _from_json(d: dict[str, Any]) -> HardwareProfile:
    fields = {f.name for f in dataclasses.fields(HardwareProfile)}
    return HardwareProfile(**{k: v for k, v in d.items() if k in fields})


def measure_local(threads: int | None = None, force: bool = False, seconds: float = 1.0) -> HardwareProfile:
    """This CPU, measured: float32 GEMM FLOP/s, copy bandwidth, per-op dispatch time; cached as JSON."""
    import torch

    before = torch.get_num_threads()
    threads = threads or before
    machine = _machine(threads)
    path = _cache_file(machine)
    cached = None if force else _read_cache(path)
    if cached is not None:
        return cached
    torch.set_num_threads(threads)
    try:
        gemm = _gemm_flops(seconds)
        copy = _copy_bandwidth(seconds)
        op, op_traced = _op_overhead(seconds)
    finally:
        torch.set_num_threads(before)
    prof = HardwareProfile(
        "local", f"this machine ({machine['cpu']}, {threads} thread(s))", "cpu",
        {"fp32": gemm, "tf32": gemm, "bf16": gemm}, copy, 1.0, 1.0,
        measured_flops={"fp32": gemm}, measured_bandwidth_Bps=copy, op_overhead_s=op,
        source="measured: float32 GEMM 1024^3 (also used for tf32/bf16), copy of 64 MiB, dispatch of a "
               "1-element add", measured_on={**machine, "op_overhead_traced_s": op_traced,
                                             "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(prof.to_dict(), indent=1))
    os.replace(tmp, path)
    return prof


def _timed(fn, seconds: float, min_reps: int = 5) -> float:
    """Fastest call of fn over repeats for about `seconds` after one warm-up: the peak the machine
    reaches (the fastest sample is the least disturbed by other load)."""
    fn()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < min_reps or (time.perf_counter() - start < seconds and len(samples) < 50):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return min(samples)


def _gemm_flops(seconds: float, n: int = 1024) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    return 2 * n**3 / _timed(lambda: torch.mm(a, b, out=c), seconds)


def _copy_bandwidth(seconds: float, mib: int = 64) -> float:
    import torch

    src = torch.randn(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / _timed(lambda: dst.copy_(src), seconds)  # read + write


def _op_overhead(seconds: float, calls: int = 2000) -> tuple[float, float]:
    """Seconds per call of a 1-element add: plain, and as the trace-mode profiler records it."""
    import torch

    a, b = torch.ones(1), torch.ones(1)

    def loop() -> None:
        for _ in range(calls):
            torch.add(a, b)

    from genprof.profiler.session import _quiet_stderr

    plain = _timed(loop, seconds) / calls
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True)
    with _quiet_stderr():
        prof.start()
    try:
        loop()
    finally:
        with _quiet_stderr():
            prof.stop()
    evs = [e for e in prof.events() if e.name == "aten::add"]
    traced = sum(e.cpu_time_total for e in evs) / 1e6 / max(len(evs), 1)
    return plain, traced
