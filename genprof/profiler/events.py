"""A fast event tree from the profiler's raw results.

`torch.profiler.profile.events()` builds a Python FunctionEvent per event and
links them into a tree; for a long trace that takes longer than the run it
describes (7 s for 60k events here). This module reads the raw kineto events
once (name, start, duration, thread; shapes and arguments only on demand),
links parents with one sort and a stack per thread, and hands kernel time on a
GPU to the CPU ops that launched it (by correlation id). Its nodes answer the
few FunctionEvent attributes the op-table builder reads, so both sources work.
"""

from __future__ import annotations

from typing import Any


class Kernel:
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


class Node:
    """One CPU event: a genprof range or an op."""

    __slots__ = ("name", "start_ns", "end_ns", "thread", "cpu_parent", "cpu_children", "_raw", "device_ns",
                 "kernels")
    device_type = "CPU"

    def __init__(self, raw: Any, name: str, start_ns: int, end_ns: int, thread: int):
        self._raw, self.name, self.start_ns, self.end_ns, self.thread = raw, name, start_ns, end_ns, thread
        self.cpu_parent: Node | None = None
        self.cpu_children: list[Node] = []
        self.device_ns = 0
        self.kernels: list[Kernel] = []

    @property
    def cpu_time_total(self) -> float:  # microseconds, as FunctionEvent
        return (self.end_ns - self.start_ns) / 1e3

    @property
    def self_cpu_time_total(self) -> float:
        return (self.end_ns - self.start_ns - sum(c.end_ns - c.start_ns for c in self.cpu_children)) / 1e3

    @property
    def device_time_total(self) -> float:
        return self.device_ns / 1e3

    @property
    def input_shapes(self) -> list:
        return self._raw.shapes()

    @property
    def input_dtypes(self) -> list:
        return self._raw.dtypes()

    @property
    def concrete_inputs(self) -> list:
        return self._raw.concrete_inputs()


def from_profile(prof: Any) -> list[Node]:
    """The CPU event tree of a finished torch.profiler.profile, in start order."""
    raw_events = prof.profiler.kineto_results.events()
    nodes: list[Node] = []
    by_corr: dict[int, list[Node]] = {}
    kernels: list[tuple[int, int, str]] = []
    for r in raw_events:
        dev = r.device_type()
        if getattr(dev, "name", str(dev)) != "CPU":
            kernels.append((r.correlation_id(), r.duration_ns(), r.name()))
            continue
        start = r.start_ns()
        n = Node(r, r.name(), start, start + r.duration_ns(), r.start_thread_id())
        nodes.append(n)
        corr = r.correlation_id()
        if corr:
            by_corr.setdefault(corr, []).append(n)
    nodes.sort(key=lambda n: (n.thread, n.start_ns, -n.end_ns))
    stack: list[Node] = []
    thread = None
    for n in nodes:
        if n.thread != thread:
            stack, thread = [], n.thread
        while stack and stack[-1].end_ns <= n.start_ns:
            stack.pop()
        if stack:
            n.cpu_parent = stack[-1]
            stack[-1].cpu_children.append(n)
        stack.append(n)
    for corr, dur, name in kernels:  # GPU kernels: time to the launching op and all its ancestors
        for launch in by_corr.get(corr, ()):
            if launch.cpu_parent is not None:
                launch.cpu_parent.kernels.append(Kernel(name))
            node: Node | None = launch
            while node is not None:
                node.device_ns += dur
                node = node.cpu_parent
            break
    nodes.sort(key=lambda n: n.start_ns)
    return nodes
