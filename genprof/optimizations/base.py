"""The optimization contract, its composition rules, and the registry.

An optimization is a toggle, `--opt NAME[:key=value,...]` (`--opt NAME=VALUE`
is short for a single option called `value`). It declares the workloads it
applies to and refuses the others with a one-line message; it validates its
own options and whether the device supports it, before anything is built.
`apply` returns a new Built and leaves the one it was given usable (built
models are cached and shared between runs): it configures the decoder engine
(genprof.engine: a schedule, a token policy) or adds a context around each
inference (an attention backend); none replaces the inference.

Composition. Each optimization declares what it changes (`changes`) and what
it needs left as it is (`keeps`), from `ASPECTS`. Two optimizations whose
changes overlap, or where one changes what the other keeps, are refused
together before anything runs, with one line naming both; any other pair
applies in either order with the same result (the engine applies its token
policies in name order, and each aspect has one owner). It knows nothing of
the profiler.
"""

from __future__ import annotations

from typing import Any, ClassVar

from genprof.errors import GenprofError, unknown_choice
from genprof.spec import OptSpec

_REGISTRY: dict[str, type["Optimization"]] = {}

# What an optimization can change, and how an error names it.
ASPECTS = {
    "attention": "attention implementation",
    "schedule": "batch schedule (which requests run, and how their tokens are grouped into forwards)",
    "prompt-tokens": "set of prompt tokens each decoder layer computes",
    "generated-kv": "set of generated tokens kept in the KV cache",
    "weights": "model weights",
}


class Optimization:
    name: ClassVar[str] = ""
    applies_to: ClassVar[tuple[str, ...]] = ()  # workload names; () = all
    options: ClassVar[dict[str, tuple[str, ...] | None]] = {}  # key -> valid values (None = free)
    exact: ClassVar[bool] = True  # False: lossy, reports quality next to speed
    changes: ClassVar[frozenset[str]] = frozenset()  # aspects it changes (keys of ASPECTS)
    keeps: ClassVar[frozenset[str]] = frozenset()  # aspects it needs unchanged by the others

    def __init__(self, opt: OptSpec):
        for key, value in opt.options:
            if key not in self.options:
                raise unknown_choice(f"option of --opt {self.name}", key, tuple(self.options) or ("(none)",))
            valid = self.options[key]
            if valid is not None and value not in valid:
                raise unknown_choice(f"value of {self.name}:{key}", value, valid)
        self.opt = opt

    def option(self, *keys: str, default: str | None = None) -> str | None:
        """The value of the first of `keys` that was given."""
        d = self.opt.as_dict()
        return next((d[k] for k in keys if k in d), default)

    def check(self, spec: Any, workload: Any) -> None:
        """Refuse a workload, device or option this optimization cannot serve (GenprofError, one line).
        `workload` is the run's Workload (its public methods say what the model will be)."""
        if self.applies_to and spec.workload not in self.applies_to:
            raise GenprofError(f"optimization {self.name!r} does not apply to {spec.workload!r}; "
                               f"it applies to: {', '.join(self.applies_to)}")

    def apply(self, built: Any) -> Any:  # pragma: no cover - each optimization overrides it
        raise NotImplementedError


def clash(a: Optimization, b: Optimization) -> str | None:
    """Why `a` and `b` cannot run together (one line), or None when they compose."""
    both = sorted(a.changes & b.changes)
    if both:
        return f"both change the {ASPECTS[both[0]]}"
    for x, y in ((a, b), (b, a)):
        needed = sorted(x.keeps & y.changes)
        if needed:
            return f"{x.name} needs the {ASPECTS[needed[0]]} that {y.name} changes"
    return None


def register(cls: type[Optimization]) -> type[Optimization]:
    unknown = (cls.changes | cls.keeps) - set(ASPECTS)
    if unknown:
        raise ValueError(f"{cls.__name__} declares unknown aspects {sorted(unknown)}")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get(name: str) -> type[Optimization]:
    _load_all()
    if name not in _REGISTRY:
        raise unknown_choice("optimization", name, names() or ("(none available in this version)",))
    return _REGISTRY[name]


def resolve(opts: tuple[OptSpec, ...], spec: Any, workload: Any) -> list[Optimization]:
    """Instantiate and check every --opt of a run; refuse unknown, repeated or incompatible ones."""
    seen: set[str] = set()
    out = []
    for opt in opts:
        cls = get(opt.name)
        if opt.name in seen:
            raise GenprofError(f"--opt {opt.name} given twice; give each optimization once")
        seen.add(opt.name)
        o = cls(opt)
        o.check(spec, workload)
        out.append(o)
    for i, a in enumerate(out):
        for b in out[i + 1:]:
            why = clash(a, b)
            if why:
                raise GenprofError(f"--opt {a.opt.label} cannot be combined with --opt {b.opt.label}: {why}")
    return out


def _load_all() -> None:
    """Import every optimization module once (importing registers it)."""
    if _LOADED:
        return
    import importlib
    import pkgutil

    import genprof.optimizations as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in ("base", "quality", "ragged", "sparsity") and not info.name.startswith("_"):
            importlib.import_module(f"genprof.optimizations.{info.name}")
    _LOADED.append(True)


_LOADED: list[bool] = []
