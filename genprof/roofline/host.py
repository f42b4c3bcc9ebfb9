"""Host profiles: what the CPU that drives a GPU spends to issue each op, as data the projection reads.

A GPU runs eager PyTorch behind its host: for every op the host runs Python,
the dispatcher and the op's CUDA wrapper (argument checks, output allocation,
launch configuration) and launches the kernel. A `HostProfile` holds those
costs for one CPU:

- `op_s`: host seconds per call of each op kind (`aten::linear`, ...): the
  dispatch path of the op with its compute taken out, profiler inflation
  taken out (see genprof.study.host, which measures it);
- `default_op_s`: for op kinds the profile did not see (the median over calls);
- `python_s`: Python time per module call (the module's own forward code and
  `nn.Module.__call__`, everything between its ops), per workload (the code
  differs: diffusers' blocks run more Python than the decoder engine), and
  `default_python_s` for workloads the profile did not see;
- `launch_s`: the CUDA runtime's host time to launch one kernel
  (`cudaLaunchKernel`), which a CPU cannot measure: a stated value with its
  source;
- `graph_replay_s`: host time of one step replayed as a captured CUDA graph
  (one `cudaGraphLaunch` plus copying the step's inputs), stated.

Profiles are JSON files under genprof/assets/hosts/, named after the CPU they
were measured on (`genprof host-profile` measures this machine and writes
one). `load_host()` reads one by path or name; without either it takes the
profile of this CPU when there is one, else the profile shipped as the
default (whose `cpu` says which machine it describes). Nothing here runs a
model: measuring is orchestration and lives in genprof.study.host.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genprof.errors import GenprofError

HOSTS_DIR = Path(__file__).resolve().parent.parent / "assets" / "hosts"
DEFAULT_HOST = "amd-epyc"

# The CUDA launch cost, stated (a CPU-only machine cannot measure it): the median host duration of
# cudaLaunchKernel over the 8,568 kernel launches of a real A100 training trace recorded by torch.profiler
# (HolisticTraceAnalysis test data, shared/traces/a100-ddp-train.json.gz: p10 5 us, p90 8 us; the
# profiler's CUPTI hooks may add to it). scripts/host_projection.py reads it from the trace again.
LAUNCH_S = 6e-6
LAUNCH_SOURCE = ("median cudaLaunchKernel duration (6 us; p10 5, p90 8) over 8,568 launches in a torch.profiler "
                 "trace of an A100 training step (HolisticTraceAnalysis test data, shared/traces/a100-ddp-train.json.gz)")
# One decode step replayed from a CUDA graph: one cudaGraphLaunch and a few small copies of the step's inputs
# into the captured buffers, plus the Python around the call. Assumed, not measured here: about 8 launches'
# worth of host time. The verdicts it feeds are far from the threshold (docs/roofline.md shows by how much).
GRAPH_REPLAY_S = 50e-6
GRAPH_SOURCE = ("assumed: one cudaGraphLaunch plus copying the step's inputs into the captured buffers and the "
                "Python around the call, about 8 kernel launches' worth (not measurable without a GPU)")


@dataclass(frozen=True)
class HostProfile:
    name: str
    cpu: str
    op_s: dict[str, float]
    default_op_s: float
    python_s: dict[str, float]
    default_python_s: float
    launch_s: float = LAUNCH_S
    graph_replay_s: float = GRAPH_REPLAY_S
    sources: dict[str, str] = field(default_factory=lambda: {"launch_s": LAUNCH_SOURCE,
                                                             "graph_replay_s": GRAPH_SOURCE})
    measured_on: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"host {self.cpu} ({self.name})"

    def op_cost(self, op: str) -> float:
        """Host seconds of one call of `op` (dispatch only; no Python, no launch)."""
        return float(self.op_s.get(op, self.default_op_s))

    def python_cost(self, workload: str) -> float:
        """Host seconds of Python per module call of `workload`'s code."""
        return float(self.python_s.get(workload, self.default_python_s))

    def with_overrides(self, **kw: Any) -> "HostProfile":
        """A copy with launch_s and/or graph_replay_s replaced (None values ignored)."""
        kw = {k: v for k, v in kw.items() if v is not None}
        for k, v in kw.items():
            if k not in ("launch_s", "graph_replay_s"):
                raise GenprofError(f"cannot override {k!r} of a host profile")
            if not 0 <= float(v) < 1:
                raise GenprofError(f"--{k.replace('_', '-')} must be in [0, 1) seconds, got {v}")
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def slug(cpu: str) -> str:
    """A file name for a CPU: 'AMD EPYC 7R13 Processor' -> 'amd-epyc-7r13-processor'."""
    return re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-") or "cpu"


def _from_dict(d: dict[str, Any], where: str) -> HostProfile:
    names = {f.name for f in dataclasses.fields(HostProfile)}
    missing = {"name", "cpu", "op_s", "default_op_s", "python_s", "default_python_s"} - set(d)
    if missing:
        raise GenprofError(f"{where} is not a host profile (missing {', '.join(sorted(missing))})")
    return HostProfile(**{k: v for k, v in d.items() if k in names})


def available() -> list[str]:
    """Names of the host profiles shipped under genprof/assets/hosts/."""
    return sorted(p.stem for p in HOSTS_DIR.glob("*.json")) if HOSTS_DIR.is_dir() else []


def load_host(which: str | os.PathLike | None = None) -> HostProfile:
    """A host profile: a JSON path, a shipped profile's name, or (None) this CPU's profile if shipped,
    else the default one. An unknown name or unreadable file is a one-line GenprofError."""
    if which is None:
        from genprof.store import _cpu_name

        mine = HOSTS_DIR / f"{slug(_cpu_name())}.json"
        path = mine if mine.is_file() else HOSTS_DIR / f"{DEFAULT_HOST}.json"
    else:
        path = Path(which)
        if not path.suffix and not path.exists():
            if str(which) not in available():
                raise GenprofError(f"unknown host profile {str(which)!r}; valid: a JSON file or one of "
                                   f"{', '.join(available()) or '(none shipped)'}")
            path = HOSTS_DIR / f"{which}.json"
    try:
        return _from_dict(json.loads(Path(path).read_text()), str(path))
    except FileNotFoundError:
        raise GenprofError(f"no host profile at {path} (measure one with `genprof host-profile`)") from None
    except (json.JSONDecodeError, TypeError, AttributeError) as e:
        raise GenprofError(f"{path} is not a readable host profile ({type(e).__name__})") from None


def save_host(profile: HostProfile, path: str | os.PathLike) -> Path:
    """Write `profile` as JSON (to a temporary name, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(profile.to_dict(), indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path
