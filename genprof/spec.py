"""RunSpec: everything that defines one run, and nothing measured.

A RunSpec is what a user asks for (workload, size, batch, steps, tokens,
dtype, device, optimizations, mode, repeats). It validates itself against the
registries, serializes to a plain dict for `run.json`, and parses the CLI's
`--opt NAME[:key=value,...]` strings. It does not build models or time anything.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from genprof.errors import GenprofError, unknown_choice

SIZES = ("tiny", "small", "paper")
# torch intra-op threads of a CPU run when none are asked for: one. Single-threaded CPU times are the most
# repeatable (no intra-op scheduling, no stalled straggler thread when other work runs) and comparable across
# machines with different core counts; --threads N measures N.
DEFAULT_THREADS = 1
MODES = ("timing", "trace")
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class OptSpec:
    """One optimization toggle: a name plus string options (`attn:backend=flash`)."""

    name: str
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> "OptSpec":
        """Parse `NAME`, `NAME:key=value,key=value` or the shorthand `key=value` (name = key)."""
        text = text.strip()
        if not text:
            raise GenprofError("empty --opt; expected NAME or NAME:key=value[,key=value]")
        if ":" in text:
            name, _, rest = text.partition(":")
        elif "=" in text:  # `attn=flash` is short for `attn:backend=flash`
            name, _, value = text.partition("=")
            return cls(name.strip(), (("value", value.strip()),))
        else:
            name, rest = text, ""
        options = []
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, value = item.partition("=")
            if not eq or not key:
                raise GenprofError(f"bad option {item!r} in --opt {text!r}; expected key=value")
            options.append((key.strip(), value.strip()))
        return cls(name.strip(), tuple(options))

    @property
    def label(self) -> str:
        if not self.options:
            return self.name
        if len(self.options) == 1 and self.options[0][0] == "value":
            return f"{self.name}={self.options[0][1]}"
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in self.options)

    def as_dict(self) -> dict[str, str]:
        return dict(self.options)


@dataclass(frozen=True)
class RunSpec:
    """What to run and how to measure it. Defaults give a quick CPU run."""

    workload: str
    size: str = "tiny"
    batch: int = 1
    steps: int | None = None  # denoising / decoding steps; None = the size preset's
    tokens: int | None = None  # LLM: tokens to decode; None = the size preset's
    dtype: str = "float32"
    device: str = "cpu"
    mode: str = "trace"
    repeats: int = 3
    warmup: int = 1
    seed: int = 0
    weights: str | None = None  # local directory with real weights (safetensors)
    optimizations: tuple[OptSpec, ...] = field(default_factory=tuple)
    record_trace: bool = False  # keep the gzip Chrome trace in the run directory
    threads: int | None = None  # torch intra-op threads (None: genprof's default, DEFAULT_THREADS on a CPU)
    params: tuple[tuple[str, Any], ...] = ()  # preset overrides (`--set latent=48`), see Workload.config
    ci_target: float | None = None  # repeat until the median's 95% CI is within this fraction of it...
    budget_s: float | None = None  # ...or this many seconds of measured repeats have run (default 120)

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise unknown_choice("size", self.size, SIZES)
        if self.mode not in MODES:
            raise unknown_choice("mode", self.mode, MODES)
        if self.dtype not in DTYPES:
            raise unknown_choice("dtype", self.dtype, DTYPES)
        for name, value, low in (("batch", self.batch, 1), ("repeats", self.repeats, 1), ("warmup", self.warmup, 0)):
            if not isinstance(value, int) or value < low:
                raise GenprofError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, value in (("steps", self.steps), ("tokens", self.tokens), ("threads", self.threads)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise GenprofError(f"{name} must be an integer >= 1, got {value!r}")
        for name, value, high in (("ci_target", self.ci_target, 1.0), ("budget_s", self.budget_s, 86400.0)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 < value <= high):
                raise GenprofError(f"{name} must be a number in (0, {high:g}], got {value!r}")
        if self.budget_s is not None and self.ci_target is None:
            raise GenprofError("budget_s bounds the adaptive repeats of ci_target; give ci_target too")
        dev = self.device.split(":")[0]
        if dev not in ("cpu", "cuda", "meta"):
            raise unknown_choice("device", self.device, ("cpu", "cuda", "cuda:N", "meta"))

    @property
    def opt_label(self) -> str:
        return "+".join(o.label for o in self.optimizations) or "baseline"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["optimizations"] = [o.label for o in self.optimizations]
        d["params"] = {k: v for k, v in self.params}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSpec":
        d = dict(d)
        d["optimizations"] = tuple(OptSpec.parse(o) for o in d.get("optimizations", ()))
        d["params"] = tuple(dict(d.get("params") or {}).items())
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def parse_params(items: list[str] | tuple[str, ...]) -> tuple[tuple[str, Any], ...]:
    """`--set key=value` strings to (key, value) pairs; values read as JSON when they parse (48, 0.5, [1,2])."""
    import json

    out = []
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise GenprofError(f"bad --set {item!r}; expected key=value, e.g. --set latent=48")
        try:
            parsed: Any = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.append((key.strip(), parsed))
    return tuple(out)
