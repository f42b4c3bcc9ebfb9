"""The optimization contract and registry.

An optimization is a transform of a built workload (its model parts or its
schedule), toggled with `--opt NAME[:key=value,...]` (`--opt NAME=VALUE` is
short for a single option called `value`). Each declares the workloads it
applies to and refuses the others with a one-line message; each validates its
own options and whether the device supports it. `apply` returns a new Built and
leaves the one it was given usable (built models are cached and shared between
runs); an optimization that must change the model in place sets
`mutates = True` and gets a fresh build. It knows nothing of the profiler.
"""

from __future__ import annotations

from typing import Any, ClassVar

from genprof.errors import GenprofError, unknown_choice
from genprof.spec import OptSpec

_REGISTRY: dict[str, type["Optimization"]] = {}


class Optimization:
    name: ClassVar[str] = ""
    applies_to: ClassVar[tuple[str, ...]] = ()  # workload names; () = all
    options: ClassVar[dict[str, tuple[str, ...] | None]] = {}  # key -> valid values (None = free)
    exact: ClassVar[bool] = True  # False: lossy, reports quality next to speed
    mutates: ClassVar[bool] = False  # True: apply() changes the model in place
    conflicts: ClassVar[tuple[str, ...]] = ()  # names of optimizations it cannot be combined with

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

    def check(self, spec: Any) -> None:
        """Refuse a workload or device this optimization cannot serve (GenprofError, one line)."""
        if self.applies_to and spec.workload not in self.applies_to:
            raise GenprofError(f"optimization {self.name!r} does not apply to {spec.workload!r}; "
                               f"it applies to: {', '.join(self.applies_to)}")

    def apply(self, built: Any) -> Any:  # pragma: no cover - each optimization overrides it
        raise NotImplementedError


def register(cls: type[Optimization]) -> type[Optimization]:
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def resolve(opts: tuple[OptSpec, ...], spec: Any) -> list[Optimization]:
    """Instantiate and check every --opt of a run; refuse unknown, repeated or conflicting ones."""
    _load_all()
    seen: set[str] = set()
    out = []
    for opt in opts:
        if opt.name not in _REGISTRY:
            raise unknown_choice("optimization", opt.name, names() or ("(none available in this version)",))
        if opt.name in seen:
            raise GenprofError(f"--opt {opt.name} given twice; give each optimization once")
        seen.add(opt.name)
        o = _REGISTRY[opt.name](opt)
        o.check(spec)
        out.append(o)
    for o in out:
        clash = [p.name for p in out if p.name in o.conflicts]
        if clash:
            raise GenprofError(f"--opt {o.name} cannot be combined with --opt {clash[0]}; give one of them")
    return out


def _load_all() -> None:
    """Import every optimization module once (importing registers it)."""
    if _LOADED:
        return
    import importlib
    import pkgutil

    import genprof.optimizations as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"genprof.optimizations.{info.name}")
    _LOADED.append(True)


_LOADED: list[bool] = []
