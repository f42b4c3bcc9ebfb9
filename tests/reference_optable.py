"""The first, event-by-event op-table builder, kept as the reference the vectorized one is tested against.

A copy of the Python-loop implementation (a Node tree built with a stack per
thread, then one pass over every event). Slow on long traces, simple to read.
"""

from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

from genprof.profiler import counting, scopes, taxonomy
from genprof.profiler.optable import OP_COLUMNS


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
        return self._raw.structured_input_shapes()

    @property
    def input_strides(self) -> list:
        return self._raw.structured_input_strides()

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


def _context(e: Any, memo: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The (repeat, phase, step, module) a genprof range sits in, itself included."""
    key = id(e)
    if key in memo:
        return memo[key]
    parent = e.cpu_parent
    ctx = dict(_context(parent, memo)) if parent is not None else {
        "repeat": 0, "phase": scopes.OUTSIDE_PHASES, "step": scopes.NO_STEP, "module": ""}
    name = e.name
    if name.startswith(scopes.MODULE):
        ctx["module"] = name[len(scopes.MODULE):]
    elif name.startswith(scopes.STEP):
        ctx["step"] = int(name[len(scopes.STEP):])
    elif name.startswith(scopes.PHASE):
        ctx["phase"], ctx["step"], ctx["module"] = name[len(scopes.PHASE):], scopes.NO_STEP, ""
    elif name.startswith(scopes.REPEAT):
        ctx["repeat"] = int(name[len(scopes.REPEAT):])
    memo[key] = ctx
    return ctx


def _signature(e: Any) -> tuple:
    return (e.name, e.input_shapes or [], e.input_dtypes or [], e.concrete_inputs or [], e.input_strides or [])


def _children(e: Any) -> list:
    return [(_signature(c), lambda c=c: _children(c)) for c in e.cpu_children]


def build(events: Iterable[Any], module_types: dict[str, str], attention_kinds: dict[str, str],
          run: dict[str, Any] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(op table, phase times) from profiler events. `run` adds run_id, workload, size, optimizations."""
    memo: dict[int, dict[str, Any]] = {}
    rows: dict[tuple, dict[str, Any]] = {}
    phase_times: list[dict[str, Any]] = []
    events = list(events)
    top = [e for e in events if not e.name.startswith(scopes.PREFIX)
           and (e.cpu_parent is None or e.cpu_parent.name.startswith(scopes.PREFIX))]
    signatures = {repr(_signature(e)): _signature(e) for e in top}
    list_dtype = counting.dominant_dtype((s[1], s[2]) for s in signatures.values())
    counts: dict[tuple, tuple[int, int]] = {}
    for e in events:
        name = e.name
        parent = e.cpu_parent
        if name.startswith(scopes.PREFIX):
            ctx = _context(e, memo)
            if name.startswith((scopes.PHASE, scopes.STEP, scopes.REPEAT)):
                phase = ctx["phase"] if not name.startswith(scopes.REPEAT) else "total"
                phase_times.append({"repeat": ctx["repeat"], "phase": phase, "step": ctx["step"],
                                    "time_s": e.cpu_time_total / 1e6})
            _add(rows, ctx, taxonomy.OVERHEAD_OP, e, module_types, attention_kinds, True, list_dtype, counts)
        elif parent is None or parent.name.startswith(scopes.PREFIX):
            ctx = _context(parent, memo) if parent is not None else {
                "repeat": 0, "phase": scopes.OUTSIDE_PHASES, "step": scopes.NO_STEP, "module": ""}
            _add(rows, ctx, name, e, module_types, attention_kinds, False, list_dtype, counts)
    table = pd.DataFrame(list(rows.values()))
    if table.empty:
        table = pd.DataFrame(columns=OP_COLUMNS)
    run = run or {}
    for col in ("run_id", "workload", "size", "optimizations"):
        table[col] = run.get(col, "")
    table["part"] = table["module"].str.split(".", n=1).str[0]
    return table[OP_COLUMNS], pd.DataFrame(phase_times, columns=["repeat", "phase", "step", "time_s"])


def _attention_kernel(e: Any) -> str:
    """The kernel a fused attention op dispatched to: its deepest `*attention*`/`flash` descendant,
    plus the first GPU kernel it launched, e.g. `aten::_scaled_dot_product_flash_attention_for_cpu`."""
    name, node = "", e
    while True:
        nxt = next((c for c in node.cpu_children if "attention" in c.name or "flash" in c.name), None)
        if nxt is None:
            break
        name, node = nxt.name, nxt
    device_kernels = [k.name for k in getattr(node, "kernels", [])] or \
        [k.name for c in node.cpu_children for k in getattr(c, "kernels", [])]
    return name + (f" | {device_kernels[0]}" if device_kernels else "")


def _add(rows: dict[tuple, dict[str, Any]], ctx: dict[str, Any], op: str, e: Any,
         module_types: dict[str, str], attention_kinds: dict[str, str], overhead: bool, list_dtype: str,
         counts: dict[tuple, tuple[int, int]]) -> None:
    if overhead:
        self_s = total_s = e.self_cpu_time_total / 1e6
        device_s = 0.0
        shapes_str, shapes, dtypes, args = "", [], [], []
    else:
        self_s, total_s = e.self_cpu_time_total / 1e6, e.cpu_time_total / 1e6
        device_s = e.device_time_total / 1e6
        shapes = e.input_shapes or []
        shapes_str = str(shapes)
    key = (ctx["repeat"], ctx["phase"], ctx["step"], ctx["module"], op, shapes_str)
    row = rows.get(key)
    if row is None:
        module = ctx["module"]
        mtype = module_types.get(module, "")
        fam = taxonomy.family(op, mtype)
        dims = counting.attention_dims(op, shapes) if fam == "Attention" else None
        kernel = _attention_kernel(e) if op in taxonomy.FUSED_ATTENTION else ""
        row = rows[key] = {
            "repeat": ctx["repeat"], "phase": ctx["phase"], "step": ctx["step"], "module": module,
            "module_type": mtype, "op": op, "kernel": kernel, "family": fam,
            "attention_kind": attention_kinds.get(module, "self") if fam == "Attention" else "",
            "calls": 0, "self_time_s": 0.0, "total_time_s": 0.0, "device_time_s": 0.0,
            "flops": 0, "bytes": 0, "input_shapes": shapes_str,
            "seq_q": dims["seq_q"] if dims else 0, "seq_kv": dims["seq_kv"] if dims else 0,
            "batch_heads": dims["batch_heads"] if dims else 0, "head_dim": dims["head_dim"] if dims else 0,
        }
    row["calls"] += 1
    row["self_time_s"] += self_s
    row["total_time_s"] += total_s
    row["device_time_s"] += device_s
    if not overhead:  # counted per call: calls of one row may differ in dtypes, strides or arguments
        fused = "_attention_math" not in _attention_kernel(e) if op in taxonomy.FUSED_ATTENTION else None
        key = (repr(_signature(e)), fused)
        if key not in counts:
            _, shapes, dtypes, args, strides = _signature(e)
            counts[key] = counting.count(op, shapes, dtypes, args, strides, list_dtype=list_dtype,
                                         fused_attention=fused is not False, children=lambda: _children(e))
        row["flops"] += counts[key][0]
        row["bytes"] += counts[key][1]

