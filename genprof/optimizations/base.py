"""The optimization contract and registry.

An optimization is a transform of a built workload (its model parts or its
schedule), toggled with `--opt NAME[:key=value,...]`. Each declares the
workloads it applies to and refuses the others with a one-line message; each
validates its own options. It knows nothing of the profiler.
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

    def __init__(self, opt: OptSpec):
        for key, value in opt.options:
            if key not in self.options:
                raise unknown_choice(f"option of --opt {self.name}", key, tuple(self.options) or ("(none)",))
            valid = self.options[key]
            if valid is not None and value not in valid:
                raise unknown_choice(f"value of {self.name}:{key}", value, valid)
        self.opt = opt

    def check(self, workload: str) -> None:
        if self.applies_to and workload not in self.applies_to:
            raise GenprofError(f"optimization {self.name!r} does not apply to {workload!r}; "
                               f"it applies to: {', '.join(self.applies_to)}")

    def apply(self, built: Any) -> Any:  # pragma: no cover - each optimization overrides it
        raise NotImplementedError


def register(cls: type[Optimization]) -> type[Optimization]:
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    return sorted(_REGISTRY)


def resolve(opts: tuple[OptSpec, ...], workload: str) -> list[Optimization]:
    """Instantiate and check every --opt of a run; refuse unknown or repeated ones."""
    seen: set[str] = set()
    out = []
    for opt in opts:
        if opt.name not in _REGISTRY:
            raise unknown_choice("optimization", opt.name, names() or ("(none available in this version)",))
        if opt.name in seen:
            raise GenprofError(f"--opt {opt.name} given twice; give each optimization once")
        seen.add(opt.name)
        o = _REGISTRY[opt.name](opt)
        o.check(workload)
        out.append(o)
    return out
