"""Named ranges for phases, steps, repeats and modules, and the hooks that push them.

In trace mode every phase, step and repeat is a profiler range, and
every module call is one too (a forward pre-hook opens it, a forward hook
closes it), so each op in the trace sits inside the ranges of the innermost
module, step, phase and repeat that ran it. The hooks are removed on exit: the
model is left as it was. Timing mode uses `TimedPhases` instead: timer marks
around phases and steps, no profiler at all.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from genprof.profiler.taxonomy import attention_kind, is_attention_module

PREFIX = "genprof."
PHASE = "genprof.phase::"
STEP = "genprof.step::"
MODULE = "genprof.module::"
REPEAT = "genprof.repeat::"
# Module ranges: the C++ range object torch.profiler offers Python (torch >= 2.2; about 1.7 us a range),
# record_function's dispatcher ops otherwise (about 30 us).
_FAST = getattr(torch._C._profiler, "_RecordFunctionFast", None)


def _open_range(label: str) -> Any:
    if _FAST is not None:
        rf = _FAST(label)
        rf.__enter__()
        return rf
    return torch.ops.profiler._record_function_enter_new(label, None)


def _close_range(handle: Any) -> None:
    if _FAST is not None:
        handle.__exit__(None, None, None)
    else:
        torch.ops.profiler._record_function_exit._RecordFunction(handle)

NO_STEP = -1  # `step` of a row whose phase has no steps
OUTSIDE_PHASES = "(outside phases)"  # `phase` of work a workload ran between its phases


class TracePhases:
    """Repeats, phases and steps as profiler ranges.

    `after_step`, when given, is called after each step closes; it may call `checkpoint(fn)`, which closes
    the open repeat and phase ranges, runs `fn` (e.g. ends one profiler session and starts the next) and
    opens them again, so every session holds whole ranges and a long repeat need not sit in one session.
    """

    def __init__(self, after_step: Callable[["TracePhases"], None] | None = None):
        self.after_step = after_step
        self.open: list[list[Any]] = []  # [label, handle] of the ranges open now, outermost first

    @contextlib.contextmanager
    def range(self, label: str) -> Iterator[None]:
        self.open.append([label, _open_range(label)])
        try:
            yield
        finally:
            _close_range(self.open.pop()[1])

    def repeat(self, index: int) -> contextlib.AbstractContextManager[None]:
        return self.range(REPEAT + str(int(index)))

    def phase(self, name: str) -> contextlib.AbstractContextManager[None]:
        return self.range(PHASE + name)

    @contextlib.contextmanager
    def step(self, index: int) -> Iterator[None]:
        with self.range(STEP + str(int(index))):
            yield
        if self.after_step is not None:
            self.after_step(self)

    def checkpoint(self, fn: Callable[[], None]) -> None:
        for entry in reversed(self.open):
            _close_range(entry[1])
        fn()
        for entry in self.open:
            entry[1] = _open_range(entry[0])


@dataclass
class TimedPhases:
    """Phases and steps as timer marks: (repeat, phase, step, start, end)."""

    timer: Any
    repeat: int
    marks: list[tuple[int, str, int, Any, Any]] = field(default_factory=list)
    _phase: str = ""

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        outer, self._phase = self._phase, name
        start = self.timer.mark()
        try:
            yield
        finally:
            self.marks.append((self.repeat, name, NO_STEP, start, self.timer.mark()))
            self._phase = outer

    @contextlib.contextmanager
    def step(self, index: int) -> Iterator[None]:
        start = self.timer.mark()
        try:
            yield
        finally:
            self.marks.append((self.repeat, self._phase, int(index), start, self.timer.mark()))


class ModuleScopes:
    """Context manager: one profiler range per module call over every part.

    `types[qualname]` and `attention_kinds[qualname]` describe each module
    (qualname = part name + the module's path inside the part).
    """

    def __init__(self, parts: dict[str, torch.nn.Module]):
        self.parts = parts
        self.types: dict[str, str] = {}
        self.attention_kinds: dict[str, str] = {}
        self._handles: list[Any] = []
        self._open: dict[str, list[Any]] = {}

    def __enter__(self) -> "ModuleScopes":
        for part, root in self.parts.items():
            for name, module in root.named_modules():
                qual = f"{part}.{name}" if name else part
                mtype = type(module).__name__
                self.types[qual] = mtype
                if is_attention_module(mtype):
                    self.attention_kinds[qual] = attention_kind(qual, module)
                self._open[qual] = []
                self._handles.append(module.register_forward_pre_hook(self._enter_hook(qual)))
                self._handles.append(module.register_forward_hook(self._exit_hook(qual), always_call=True))
        return self

    def _enter_hook(self, qual: str):
        label, stack = MODULE + qual, self._open[qual]

        def hook(module: torch.nn.Module, args: Any) -> None:
            stack.append(_open_range(label))

        return hook

    def _exit_hook(self, qual: str):
        stack = self._open[qual]

        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            if stack:
                _close_range(stack.pop())

        return hook

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
