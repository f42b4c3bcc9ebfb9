"""What an inference calls to mark its structure: phases and steps.

A workload (or the decoder engine) marks where each phase and step starts and
ends through a `Phases` object it is handed; the profiler implements it
(timers, trace ranges), and `NullPhases` marks nothing for a bare run. Both
sides import this module and nothing of each other.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Iterator, Protocol


class Phases(Protocol):
    """What an inference calls to mark its structure. Implemented by the profiler."""

    def phase(self, name: str) -> ContextManager[None]: ...

    def step(self, index: int) -> ContextManager[None]: ...


class NullPhases:
    """Marks nothing: a bare run."""

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def step(self, index: int) -> Iterator[None]:
        yield
