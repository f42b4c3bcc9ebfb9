"""What a run of a workload may set, with types and bounds: checked before anything runs.

A workload's parameters are its size presets' keys (`--set key=value`) and the
run fields every workload has (`--batch`, `--repeats`, `--warmup`, `--steps` or
`--tokens`). Types and lower bounds are inferred from the presets: a key whose
values are integers >= 1 in every preset takes an integer >= 1 (a float >= 0
in every preset, a number >= 0); a group of
settings (`config`, `unet`, ...) takes a JSON object of the keys the presets
have, each typed the same way, and nothing else. What inference cannot know (a
scheduler's 1000 timesteps, CLIP's 77 positions, the choices of a string) a
workload declares in its `bounds`, a few `Bound`s keyed by parameter (dotted for
a key inside a group: `config.num_hidden_layers`). The check is one pydantic
model per workload and size, in strict mode (no "3" for 3, no true for 1).
Not here: whether the values fit in memory (genprof.estimate) or combinations
that only a workload knows (its `check`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from typing_extensions import Annotated

from genprof.errors import GenprofError


@dataclass(frozen=True)
class Bound:
    """Declared limits of one parameter; None keeps what inference gives. `why` is shown with the limit."""

    ge: float | None = None
    le: float | None = None
    choices: tuple[Any, ...] | None = None
    why: str = ""


# Shared declarations for the libraries' own limits.
SCHEDULER_STEPS = Bound(ge=1, le=1000, why="the scheduler's 1000 training timesteps")
CLIP_TEXT = Bound(ge=1, le=77, why="CLIP's 77 text positions")
LLAMA_POSITIONS = 4096  # max_position_embeddings of the Llama configs built here

# Every workload's run fields; a workload's `bounds` may tighten or widen them.
RUN_BOUNDS: dict[str, Bound] = {
    "batch": Bound(ge=1, le=4096),
    "repeats": Bound(ge=1, le=1000),
    "warmup": Bound(ge=0, le=100),
    "steps": Bound(ge=1, le=10_000),
    "tokens": Bound(ge=1, le=100_000),
    "threads": Bound(ge=1, le=1024),
    "seed": Bound(ge=0, le=2**63 - 1),
}
RUN_FIELDS = tuple(RUN_BOUNDS)


# ---------------------------------------------------------------------------------------------- inference


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    if isinstance(v, (list, tuple)):
        return "list"
    if isinstance(v, dict):
        return "group"
    return "any"


def _annotation(values: list[Any], bound: Bound | None) -> Any:
    """The pydantic type of one parameter from its preset values and its declared bound."""
    if bound is not None and bound.choices is not None:
        return Literal[tuple(bound.choices)]  # type: ignore[misc]
    kinds = {_kind(v) for v in values}
    types = []
    for k in sorted(kinds):
        if k == "any":
            return Any
        if k in ("int", "float"):
            nums = [v for v in values if _kind(v) == k]  # sizes and counts >= 1; scales and rates >= 0
            ge = 1 if k == "int" and all(v >= 1 for v in nums) else 0 if all(v >= 0 for v in nums) else None
            if bound is not None and bound.ge is not None:
                ge = bound.ge
            le = bound.le if bound is not None else None
            base = int if k == "int" and "float" not in kinds else float
            types.append(Annotated[base, Field(ge=ge, le=le)])
        elif k == "list":
            elems = [e for v in values if _kind(v) == "list" for e in v]
            types.append(list[_annotation(elems, None)] if elems else list[Any])  # type: ignore[misc]
        elif k == "bool":
            types.append(bool)
        elif k == "str":
            types.append(str)
    if not types:
        return Any
    return types[0] if len(types) == 1 else Union[tuple(types)]  # type: ignore[return-value]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _group_model(name: str, groups: list[dict[str, Any]], bounds: dict[str, Bound]) -> type[BaseModel]:
    keys: dict[str, list[Any]] = {}
    for g in groups:
        for k, v in g.items():
            keys.setdefault(k, []).append(v)
    fields = {k: (Optional[_annotation(vs, bounds.get(f"{name}.{k}"))], None) for k, vs in keys.items()}
    return create_model(f"Group_{name}", __base__=_Strict, **fields)  # type: ignore[call-overload]


@lru_cache(maxsize=None)
def model(wl_cls: type) -> type[BaseModel]:
    """The parameter model of a workload class: every preset key over all sizes, and the run fields."""
    presets: dict[str, dict[str, Any]] = wl_cls.presets
    bounds = {**RUN_BOUNDS, **getattr(wl_cls, "bounds", {})}
    keys: dict[str, list[Any]] = {}
    for p in presets.values():
        for k, v in p.items():
            keys.setdefault(k, []).append(v)
    fields: dict[str, Any] = {}
    for k, vs in keys.items():
        if all(isinstance(v, dict) for v in vs):
            fields[k] = (Optional[_group_model(k, vs, bounds)], None)
        else:
            fields[k] = (Optional[_annotation(vs, bounds.get(k))], None)
    for k in RUN_FIELDS:  # a run field that is also a preset key (steps, tokens) is typed like one, above
        if k not in keys:
            fields[k] = (Optional[Annotated[int, Field(ge=bounds[k].ge, le=bounds[k].le)]], None)
    return create_model(f"Params_{wl_cls.__name__}", __base__=_Strict, **fields)  # type: ignore[call-overload]


# ---------------------------------------------------------------------------------------------- checking


def check(wl: Any, spec: Any) -> None:
    """Refuse a spec whose `--set` values or run fields break the workload's declared types and bounds."""
    runs = {k: getattr(spec, k) for k in RUN_FIELDS if getattr(spec, k) is not None}
    sets = dict(spec.params)
    both = {k: runs[k] for k in sets.keys() & runs.keys()}  # `--steps 5 --set steps=9`: check each
    for data, shown_as_set in (({**runs, **sets}, set(sets)), (both, set())):
        try:
            model(type(wl)).model_validate(data)
        except ValidationError as e:
            raise GenprofError(_message(wl, e.errors()[0], shown_as_set)) from None


_TYPES = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
          "list": "a JSON list", "model": "a JSON object", "dict": "a JSON object", "literal": "one of the choices"}


def _message(wl: Any, err: dict[str, Any], set_keys: set[str]) -> str:
    loc = [str(x) for x in err["loc"]]
    fields = model(type(wl)).model_fields
    # the parameter path: a key, or a group and its key; what follows names union members or list items
    group = loc[0] if loc[0] in fields and _group_of(fields[loc[0]]) is not None else None
    path = loc[:2] if group and len(loc) > 1 else loc[:1]
    key = ".".join(path)
    top = path[0]
    got = err.get("input")
    shown = f"--set {key}={got!r}" if top in set_keys else f"--{top} {got!r}"
    typ, ctx = err["type"], err.get("ctx") or {}
    bound = {**RUN_BOUNDS, **getattr(wl, "bounds", {})}.get(key)
    why = f" ({bound.why})" if bound is not None and bound.why else ""
    if typ == "extra_forbidden":
        if group:
            valid = sorted(_group_of(fields[group]).model_fields)
            return f"--set {group}: unknown key {path[-1]!r} for {wl.name}; valid: {', '.join(valid)}"
        return f"unknown --set key for {wl.name} {key!r}"
    if typ in ("greater_than_equal", "greater_than"):
        return f"{shown} is too small for {wl.name}: it must be >= {ctx.get('ge', ctx.get('gt'))}{why}"
    if typ in ("less_than_equal", "less_than"):
        return f"{shown} is too large for {wl.name}: it must be <= {ctx.get('le', ctx.get('lt'))}{why}"
    if typ == "literal_error":
        return f"{shown} is not valid for {wl.name}; valid: {ctx.get('expected', '')}"
    want = next((v for k, v in _TYPES.items() if typ.startswith(k)), None)
    if want is None:
        want = err.get("msg", "another value")
    return f"{shown} has the wrong type for {wl.name}: expected {want}"


def _group_of(field: Any) -> type[BaseModel] | None:
    """The group model inside an Optional[...] field annotation, None for a plain parameter."""
    for a in getattr(field.annotation, "__args__", ()):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None
