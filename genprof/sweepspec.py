"""What a sweep is: RunSpecs from axes, a sweep file or CLI options, each checked, each with a stable key.

The product of axes (workloads x sizes x optimizations x batch sizes x any
other RunSpec field), built from CLI options or a sweep file (TOML; YAML too
when pyyaml is importable; docs/sweeps.md), every spec checked before anything
runs, and its identity: `spec_key`, a hash of its canonical JSON, recomputed
from the `spec` every run.json holds. Running them: `genprof.sweep`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from genprof.errors import GenprofError
from genprof.spec import OptSpec, RunSpec

# Fields a sweep may set or vary, with the names a sweep file may use for them.
FIELDS = tuple(f.name for f in dataclasses.fields(RunSpec))
ALIASES = {"workloads": "workload", "sizes": "size", "opt": "optimizations", "opts": "optimizations",
           "batches": "batch", "set": "params", "trace_file": "record_trace"}
FILE_KEYS = ("base", "axes", "workload", "skip_invalid")


# ---------------------------------------------------------------------------------------------- building


def _field(name: str, where: str) -> str:
    key = ALIASES.get(name, name)
    if key not in FIELDS:
        valid = ", ".join(sorted(FIELDS))
        raise GenprofError(f"unknown {where} {name!r}; valid: {valid}")
    return key


def parse_opts(value: Any) -> tuple[OptSpec, ...]:
    """One value of the optimizations axis: 'baseline' | 'attn=flash' | 'a=x+b:k=v' | ['a=x', 'b']."""
    if value is None:
        return ()
    if isinstance(value, str):
        if value.strip().lower() in ("", "baseline", "none"):
            return ()
        items = value.split("+")
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise GenprofError(f"bad optimizations value {value!r}; expected 'baseline', 'NAME[=V]' or a list of them")
    out = []
    for item in items:
        if isinstance(item, OptSpec):
            out.append(item)
        elif isinstance(item, str):
            out.append(OptSpec.parse(item))
        else:
            raise GenprofError(f"bad optimization {item!r}; expected a string like 'attn=flash'")
    return tuple(out)


def _params(value: Any) -> tuple[tuple[str, Any], ...]:
    if value is None:
        return ()
    if isinstance(value, Mapping):
        return tuple((str(k), v) for k, v in value.items())
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        from genprof.spec import parse_params

        return parse_params(list(value))
    raise GenprofError(f"bad params value {value!r}; expected a table like {{latent = 48}}")


def _coerce(key: str, value: Any) -> Any:
    if key == "optimizations":
        return parse_opts(value)
    if key == "params":
        return _params(value)
    if isinstance(value, (dict, list)):
        raise GenprofError(f"bad value for {key}: {value!r}; expected a single value")
    want = _TYPES.get(key)
    if value is not None and want is not None and (type(value) is not want):
        raise GenprofError(f"bad value for {key}: {value!r}; expected {_TYPE_NAMES[want]}")
    return value


_TYPES = {**{k: str for k in ("workload", "size", "dtype", "device", "mode", "weights")},
          **{k: int for k in ("batch", "steps", "tokens", "repeats", "warmup", "seed", "threads")},
          "record_trace": bool}
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false"}


def make_spec(fields: Mapping[str, Any]) -> RunSpec:
    """A RunSpec from sweep fields (validated by RunSpec itself: size, mode, dtype, integers)."""
    kw = {k: _coerce(k, v) for k, v in fields.items()}
    if "workload" not in kw:
        raise GenprofError("a sweep needs at least one workload (--workload or axes.workload)")
    try:
        return RunSpec(**kw)
    except TypeError as e:  # a value of the wrong type that RunSpec does not check itself
        raise GenprofError(f"bad sweep value: {e}") from None


@dataclass
class Sweep:
    specs: list[RunSpec]
    dropped: list[str] = field(default_factory=list)  # combinations left out by skip_invalid (why)
    duplicates: int = 0


def expand(base: Mapping[str, Any] | None = None, axes: Mapping[str, Iterable[Any]] | None = None,
           per_workload: Mapping[str, Mapping[str, Any]] | None = None, skip_invalid: bool = False,
           validate: bool = True, check_device: bool = True) -> Sweep:
    """The product of `axes` over `base`; `per_workload[name]` overrides fields for one workload.

    Every combination is validated (RunSpec, then the workload and optimizations
    as `genprof run` would). An invalid one raises a one-line GenprofError
    naming the combination, or with `skip_invalid` is left out and listed in
    `Sweep.dropped`. Identical combinations are run once.
    """
    base = {_field(k, "sweep field"): v for k, v in (base or {}).items()}
    ax: dict[str, list[Any]] = {}
    for k, values in (axes or {}).items():
        key = _field(k, "sweep axis")
        if isinstance(values, (str, int, float, bool)) or isinstance(values, Mapping) or values is None:
            values = [values]
        values = list(values)
        if not values:
            raise GenprofError(f"sweep axis {k!r} is empty; give at least one value")
        ax[key] = values
    per = {str(w): {_field(k, f"field for workload {w!r}"): v for k, v in (o or {}).items()}
           for w, o in (per_workload or {}).items()}
    if "workload" not in ax and "workload" not in base:
        raise GenprofError("a sweep needs at least one workload (--workload or axes.workload)")
    if per and validate:  # a misspelt name in a per-workload table would otherwise be silently unused
        from genprof import workloads

        known = workloads.names()
        for w in per:
            if w not in known:
                raise GenprofError(f"settings for unknown workload {w!r}; valid: {', '.join(known)}")
    names = list(ax)
    specs: list[RunSpec] = []
    dropped: list[str] = []
    seen: set[str] = set()
    dup = 0
    for combo in itertools.product(*(ax[n] for n in names)):
        fields = {**base, **dict(zip(names, combo))}
        wl = fields.get("workload")
        if isinstance(wl, str) and wl in per:
            fields.update(per[wl])
        label = " ".join(f"{n}={_show(v)}" for n, v in zip(names, combo)) or "the sweep"
        try:
            spec = make_spec(fields)
            if validate:
                check(spec, check_device=check_device)
        except GenprofError as e:
            if skip_invalid:
                dropped.append(f"{label}: {e}")
                continue
            raise GenprofError(f"{label}: {e}") from None
        key = spec_key(spec)
        if key in seen:
            dup += 1
            continue
        seen.add(key)
        specs.append(spec)
    return Sweep(specs, dropped, dup)


def _show(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "+".join(map(str, v)) or "baseline"
    if isinstance(v, Mapping):
        return ",".join(f"{k}={x}" for k, x in v.items()) or "{}"
    return str(v)


def check(spec: RunSpec, check_device: bool = True) -> None:
    """Validate a spec as `genprof run` does; with check_device=False a cuda spec is checked as cpu
    (the Ray driver may have no GPU while the cluster does)."""
    from genprof import api

    if not check_device:  # the run's machine is not this one: its memory is not either
        if spec.device.startswith("cuda"):
            spec = dataclasses.replace(spec, device="cpu")
        api.validate(spec, memory=False)
        return
    api.validate(spec)


def load_file(path: str | os.PathLike) -> dict[str, Any]:
    """A sweep file (TOML, or YAML when pyyaml is installed) as {base, axes, workload, skip_invalid}."""
    p = Path(path)
    if not p.is_file():
        raise GenprofError(f"sweep file {p} does not exist")
    text_bytes = p.read_bytes()
    suffix = p.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise GenprofError(f"{p} is YAML but pyyaml is not installed; pip install pyyaml, "
                                   "or write the sweep as TOML") from None
            data = yaml.safe_load(text_bytes.decode("utf-8"))
        elif suffix == ".toml":
            import tomllib

            data = tomllib.loads(text_bytes.decode("utf-8"))
        else:
            raise GenprofError(f"sweep file {p} must end in .toml, .yaml or .yml")
    except GenprofError:
        raise
    except UnicodeDecodeError as e:
        raise GenprofError(f"sweep file {p} is not UTF-8 text: {e}") from None
    except Exception as e:  # tomllib.TOMLDecodeError, yaml.YAMLError
        raise GenprofError(f"sweep file {p} does not parse: {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise GenprofError(f"sweep file {p}: expected a table with {', '.join(FILE_KEYS)} at the top")
    unknown = sorted(set(data) - set(FILE_KEYS))
    if unknown:
        raise GenprofError(f"sweep file {p}: unknown key {unknown[0]!r}; valid: {', '.join(FILE_KEYS)}")
    for key in ("base", "axes", "workload"):
        if key in data and not isinstance(data[key], dict):
            raise GenprofError(f"sweep file {p}: {key!r} must be a table")
    for w, o in (data.get("workload") or {}).items():
        if not isinstance(o, dict):
            raise GenprofError(f"sweep file {p}: workload.{w} must be a table")
    if not isinstance(data.get("skip_invalid", False), bool):
        raise GenprofError(f"sweep file {p}: skip_invalid must be true or false")
    return {"base": data.get("base") or {}, "axes": data.get("axes") or {},
            "workload": data.get("workload") or {}, "skip_invalid": data.get("skip_invalid", False)}


# ---------------------------------------------------------------------------------------------- identity


def _canonical(d: Mapping[str, Any]) -> str:
    return json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)


def spec_key(spec: RunSpec) -> str:
    """A stable 16-hex key of everything that defines a run (the same for a spec read back from run.json)."""
    d = json.loads(_canonical(spec.to_dict()))
    return hashlib.sha256(_canonical(RunSpec.from_dict(d).to_dict()).encode()).hexdigest()[:16]


def key_of_run(meta: Mapping[str, Any]) -> str | None:
    """The spec key of a stored run (None when its spec cannot be read back)."""
    try:
        return spec_key(RunSpec.from_dict(dict(meta["spec"])))
    except Exception:
        return None
