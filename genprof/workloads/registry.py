"""The workload registry: names the user types, mapped to workload classes.

Workload modules register themselves with `@register`; `get(name)` returns an
instance or a one-line error that lists the valid names. Nothing else here.
"""

from __future__ import annotations

from genprof.errors import unknown_choice
from genprof.workloads.base import Workload

_REGISTRY: dict[str, type[Workload]] = {}


def register(cls: type[Workload]) -> type[Workload]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get(name: str) -> Workload:
    _load_all()
    if name not in _REGISTRY:
        raise unknown_choice("workload", name, sorted(_REGISTRY))
    return _REGISTRY[name]()


def _load_all() -> None:
    """Import every workload module once (importing registers it); lazy so `import genprof` stays cheap."""
    if _LOADED:
        return
    import importlib
    import pkgutil

    import genprof.workloads as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in ("base", "registry") and not info.name.startswith("_"):
            importlib.import_module(f"genprof.workloads.{info.name}")
    _LOADED.append(True)


_LOADED: list[bool] = []
