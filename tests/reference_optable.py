"""The first, event-by-event op-table builder, kept as the reference the vectorized one is tested against.

A Python-loop implementation: a Node tree built with a stack per thread, a
context dict per event computed from its parent's, then one pass over every
event and every device event. Slow on long traces, simple to read. It reads a
live profile or a trace file (plain `json`, times as exact decimals), and
shares with genprof only what names mean (`naming.classify_name`), the
taxonomy and the FLOP counting.
"""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from genprof.profiler import counting, kernels as kernel_names, naming as N, scopes, taxonomy
from genprof.profiler.events import DEVICE_KINDS, KIND_NAMES, RUNTIME_CATEGORIES, SKIP_CATEGORIES
from genprof.profiler.optable import KERNEL_COLUMNS, NO_LAUNCH, OP_COLUMNS


class Kernel:
    """One device event (kernel, memcpy, memset) and the CPU event that launched it."""

    __slots__ = ("name", "corr", "dur_ns", "start_ns", "kind", "device", "stream", "launch")

    def __init__(self, name: str, corr: int, dur_ns: int, start_ns: int, kind: int, device: int, stream: int):
        self.name, self.corr, self.dur_ns, self.start_ns = name, corr, dur_ns, start_ns
        self.kind, self.device, self.stream = kind, device, stream
        self.launch: Node | None = None


class Node:
    """One CPU event: an op, a scope or a runtime call."""

    __slots__ = ("name", "cat", "start_ns", "end_ns", "thread", "corr", "cpu_parent", "cpu_children", "_raw",
                 "_args", "device_ns", "kernels")
    device_type = "CPU"

    def __init__(self, name: str, cat: str, start_ns: int, end_ns: int, thread: Any, corr: int, raw: Any = None,
                 args: tuple | None = None):
        self.name, self.cat, self.start_ns, self.end_ns, self.thread, self.corr = name, cat, start_ns, end_ns, thread, corr
        self._raw, self._args = raw, args
        self.cpu_parent: Node | None = None
        self.cpu_children: list[Node] = []
        self.device_ns = 0
        self.kernels: list[Kernel] = []

    @property
    def cpu_time_total(self) -> float:  # microseconds, as FunctionEvent
        return (self.end_ns - self.start_ns) / 1e3

    @property
    def inputs(self) -> tuple[list, list, list, list]:
        """(shapes, dtypes, argument values, strides), a tensor list's entry the list of its tensors'."""
        if self._raw is not None:
            r = self._raw
            return r.structured_input_shapes(), r.dtypes(), r.concrete_inputs(), r.structured_input_strides()
        return self._args or ([], [], [], [])


class Trace:
    def __init__(self, nodes: list[Node], kernels: list[Kernel]):
        self.nodes, self.kernels = nodes, kernels


def from_profile(prof: Any) -> Trace:
    """The CPU event tree and device events of a finished torch.profiler.profile."""
    nodes, kernels = [], []
    for r in prof.profiler.kineto_results.events():
        dev = r.device_type()
        if getattr(dev, "name", str(dev)) != "CPU":
            kind = DEVICE_KINDS.get(r.activity_type())
            if kind is not None:
                kernels.append(Kernel(r.name(), r.correlation_id(), r.duration_ns(), r.start_ns(), kind,
                                      r.device_index(), r.device_resource_id()))
            continue
        start = r.start_ns()
        nodes.append(Node(r.name(), r.activity_type(), start, start + r.duration_ns(), r.start_thread_id(),
                          r.correlation_id(), raw=r))
    return _link(nodes, kernels)


def _ns(v: Any) -> int:
    return int(Decimal(str(v)) * 1000)


def _concrete(c: Any) -> Any:
    if not isinstance(c, str):
        return c
    if c == "":
        return None
    if c in ("True", "False"):
        return c == "True"
    try:
        return json.loads(c)
    except ValueError:
        pass
    try:
        return float(c)
    except ValueError:
        pass
    if c.startswith("[") and c.endswith("]"):
        items = [_concrete(t.strip()) for t in c[1:-1].split(",")] if c[1:-1].strip() else []
        if all(isinstance(v, (int, float)) for v in items):
            return items
    return c


def from_chrome_trace(path) -> Trace:
    """The same from a trace file, read whole with `json`."""
    opener = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
    with opener(path, "rt") as f:
        data = json.load(f, parse_float=Decimal)
    events = data["traceEvents"] if isinstance(data, dict) else data
    nodes, kernels = [], []
    for e in events:
        cat = e.get("cat", "")
        if e.get("ph") != "X" or cat in SKIP_CATEGORIES:
            continue
        a = e.get("args") or {}
        if cat in DEVICE_KINDS:
            stream = a.get("stream", e.get("tid"))
            kernels.append(Kernel(e.get("name", ""), int(a.get("correlation", 0) or 0), _ns(e.get("dur", 0)),
                                  _ns(e.get("ts", 0)), DEVICE_KINDS[cat], int(a.get("device", e.get("pid"))),
                                  int(stream, 0) if isinstance(stream, str) else int(stream)))
            continue
        args = None
        if "Input Dims" in a:
            dims = list(a["Input Dims"])
            strides = a.get("Input Strides")
            strides = list(strides) if isinstance(strides, list) and len(strides) == len(dims) else [[] for _ in dims]
            args = (dims, list(a.get("Input type", [])), [_concrete(c) for c in a.get("Concrete Inputs", [])], strides)
        start = _ns(e.get("ts", 0))
        nodes.append(Node(e.get("name", ""), cat, start, start + _ns(e.get("dur", 0)), (e.get("pid"), e.get("tid")),
                          int(a.get("correlation", 0) or 0), args=args))
    return _link(nodes, kernels)


def _link(nodes: list[Node], kernels: list[Kernel]) -> Trace:
    """Parents by a stack walk per thread; each device event to its launch (the first runtime call, in source
    order, with its correlation id), its time to the launch and all the launch's ancestors."""
    by_corr: dict[int, Node] = {}
    runtime = [n for n in nodes if n.corr and n.cat in RUNTIME_CATEGORIES]
    for n in runtime or [n for n in nodes if n.corr]:
        by_corr.setdefault(n.corr, n)
    order = sorted(range(len(nodes)), key=lambda i: (str(nodes[i].thread), nodes[i].start_ns, -nodes[i].end_ns, i))
    stack: list[Node] = []
    thread = None
    for i in order:
        n = nodes[i]
        if n.thread != thread:
            stack, thread = [], n.thread
        while stack and stack[-1].end_ns <= n.start_ns:
            stack.pop()
        if stack:
            n.cpu_parent = stack[-1]
            stack[-1].cpu_children.append(n)
        stack.append(n)
    for k in kernels:
        launch = by_corr.get(k.corr) if k.corr else None
        k.launch = launch
        if launch is None:
            continue
        if launch.cpu_parent is not None:
            launch.cpu_parent.kernels.append(k)
        node: Node | None = launch
        while node is not None:
            node.device_ns += k.dur_ns
            node = node.cpu_parent
    nodes.sort(key=lambda n: n.start_ns)
    return Trace(nodes, kernels)


_KINDS: dict[tuple[str, str], tuple[int, Any]] = {}


def _kind(e: Node) -> tuple[int, Any]:
    key = (e.name, e.cat)
    if key not in _KINDS:
        _KINDS[key] = N.classify_name(e.name, e.cat)
    return _KINDS[key]


def _context(e: Node | None, memo: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """What the scopes around an event (itself included) say: genprof's repeat/phase/step/module, the
    outermost annotated phase, autograd, optimizer, other tools' module, the innermost scope, inside an op."""
    if e is None:
        return {"repeat": 0, "phase": None, "step": None, "module": None, "fphase": None, "autograd": False,
                "optim": False, "fmodule": None, "scope": "", "in_op": False}
    if id(e) in memo:
        return memo[id(e)]
    ctx = dict(_context(e.cpu_parent, memo))
    kind, value = _kind(e)
    if kind == N.REPEAT:
        ctx["repeat"] = value
    elif kind == N.PHASE:
        ctx["phase"], ctx["step"], ctx["module"] = value, None, None
    elif kind == N.STEP:
        ctx["step"] = value
    elif kind == N.MODULE:
        ctx["module"] = value
    elif kind == N.F_PHASE and ctx["fphase"] is None:
        ctx["fphase"] = value
    elif kind == N.F_MODULE:
        ctx["fmodule"] = value
    elif kind == N.OP:
        ctx["in_op"] = True
    ctx["autograd"] |= kind == N.AUTOGRAD
    ctx["optim"] |= kind == N.OPTIMIZER
    if kind in N.SCOPE_COLUMN_KINDS:
        ctx["scope"] = e.name
    memo[id(e)] = ctx
    return ctx


class _Steps:
    """ProfilerStep#N ranges, found by time."""

    def __init__(self, nodes: list[Node]):
        self.ranges = [(n.start_ns, n.end_ns, _kind(n)[1]) for n in nodes if _kind(n)[0] == N.F_STEP]

    def at(self, t: int) -> int:
        for s, e, v in self.ranges:
            if s <= t < e:
                return v
        return scopes.NO_STEP


def _phase(ctx: dict[str, Any]) -> str:
    if ctx["phase"] is not None:
        return ctx["phase"]
    if ctx["autograd"]:
        return "backward"
    if ctx["fphase"] is not None:
        return ctx["fphase"]
    return "optimizer" if ctx["optim"] else scopes.OUTSIDE_PHASES


def _key(ctx: dict[str, Any], steps: _Steps, start_ns: int, op: str, shapes: str) -> tuple:
    phase = _phase(ctx)
    step = ctx["step"] if ctx["step"] is not None else steps.at(start_ns)
    module = ctx["module"] if ctx["module"] is not None else (ctx["fmodule"] or "")
    return (ctx["repeat"], phase, step, module, ctx["scope"], op, shapes)


def build(trace: Trace, module_types: dict[str, str], attention_kinds: dict[str, str],
          run: dict[str, Any] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(op table, phase times) from a Trace. `run` adds run_id, workload, size, optimizations."""
    ops, phases, _ = build_all(trace, module_types, attention_kinds, run)
    return ops, phases


def build_all(trace: Trace, module_types: dict[str, str], attention_kinds: dict[str, str],
              run: dict[str, Any] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    memo: dict[int, dict[str, Any]] = {}
    steps = _Steps(trace.nodes)
    types = {_kind(n)[1]: N.module_type(_kind(n)[1]) for n in trace.nodes if _kind(n)[0] == N.F_MODULE}
    types.update(module_types)
    opaque = _opaque(trace)
    rows: dict[tuple, dict[str, Any]] = {}
    row_of: dict[int, tuple] = {}
    tops = [e for e in trace.nodes if _kind(e)[0] == N.OP and not _context(e.cpu_parent, memo)["in_op"]]
    signatures = {repr(_signature(e)): _signature(e) for e in tops}
    counter = _Counter(counting.dominant_dtype((s[1], s[2]) for s in signatures.values()))
    for e in trace.nodes:
        kind, _ = _kind(e)
        ctx = _context(e, memo)
        if _context(e.cpu_parent, memo)["in_op"]:
            continue
        if kind in N.SCOPE_KINDS:
            own = (e.end_ns - e.start_ns) - sum(c.end_ns - c.start_ns for c in e.cpu_children
                                                if _kind(c)[0] == N.OP or _kind(c)[0] in N.SCOPE_KINDS)
            key = _key(ctx, steps, e.start_ns, taxonomy.OVERHEAD_OP, "")
            _add(rows, key, types, attention_kinds, opaque, ctx["optim"], own / 1e9, own / 1e9, 0.0)
        elif kind == N.OP:
            shapes = e.inputs[0] or []
            key = _key(ctx, steps, e.start_ns, e.name, str(shapes))
            row = _add(rows, key, types, attention_kinds, opaque, ctx["optim"], 0.0, e.cpu_time_total / 1e6,
                       e.device_ns / 1e9, e, shapes)
            flops, nbytes = counter.count(e)  # per call: calls of one row may differ in dtypes, strides, values
            row["flops"] += flops
            row["bytes"] += nbytes
            row["self_time_s"] += (e.end_ns - e.start_ns - sum(c.end_ns - c.start_ns for c in e.cpu_children)) / 1e9
            row_of[id(e)] = key
    kernel_rows: dict[tuple, dict[str, Any]] = {}
    for k in trace.kernels:
        op = _outer_op(k.launch)
        if op is not None:
            key = row_of[id(op)]
        else:
            ctx = _context(k.launch, memo) if k.launch is not None else dict(_context(None, memo), scope=NO_LAUNCH)
            op_name = kernel_names.short_name(k.name) if KIND_NAMES[k.kind] == "kernel" else k.name
            key = _key(ctx, steps, k.launch.start_ns if k.launch is not None else k.start_ns, op_name, "")
            _add(rows, key, types, attention_kinds, opaque, ctx["optim"], 0.0, 0.0, k.dur_ns / 1e9, kernel=k.name)
        kk = (key, k.name, KIND_NAMES[k.kind], k.device, k.stream)
        kr = kernel_rows.setdefault(kk, {"calls": 0, "time_s": 0.0})
        kr["calls"] += 1
        kr["time_s"] += k.dur_ns / 1e9
    table = pd.DataFrame(list(rows.values()))
    if table.empty:
        table = pd.DataFrame(columns=OP_COLUMNS)
    run = run or {}
    for col in ("run_id", "workload", "size", "optimizations"):
        table[col] = run.get(col, "")
    table["part"] = table["module"].astype(str).str.split(".", n=1).str[0]
    kt = pd.DataFrame([{"run_id": run.get("run_id", ""), "repeat": key[0], "kernel": name, "kind": kind,
                        "device": dev, "stream": stream, "op": key[5], "family": rows[key]["family"], **v}
                       for (key, name, kind, dev, stream), v in kernel_rows.items()], columns=KERNEL_COLUMNS)
    return table[OP_COLUMNS], _phase_times(trace, memo), kt


def _outer_op(node: Node | None) -> Node | None:
    found = None
    while node is not None:
        if _kind(node)[0] == N.OP:
            found = node
        node = node.cpu_parent
    return found


def _opaque(trace: Trace) -> dict[str, str]:
    """Per op named Other by the taxonomy: the family of the kernels with most of its device time."""
    per: dict[str, dict[str, int]] = {}
    for k in trace.kernels:
        op = _outer_op(k.launch)
        if op is not None and taxonomy.family(op.name) == "Other":
            fams = per.setdefault(op.name, {})
            fam = kernel_names.family(k.name)
            fams[fam] = fams.get(fam, 0) + k.dur_ns
    return {op: max(f, key=f.get) for op, f in per.items() if max(f, key=f.get) != "Other"}


def _phase_times(trace: Trace, memo: dict[int, dict[str, Any]]) -> pd.DataFrame:
    cols = ["repeat", "phase", "step", "time_s"]
    out, genprof = [], False
    steps = _Steps(trace.nodes)
    for e in trace.nodes:
        kind, value = _kind(e)
        genprof |= kind in N.GENPROF_KINDS
        if kind in (N.PHASE, N.STEP, N.REPEAT):
            ctx = _context(e, memo)
            out.append({"repeat": ctx["repeat"], "phase": "total" if kind == N.REPEAT else _phase(ctx),
                        "step": ctx["step"] if ctx["step"] is not None else scopes.NO_STEP,
                        "time_s": e.cpu_time_total / 1e6})
    if genprof or not trace.nodes:
        return pd.DataFrame(out, columns=cols)
    times = [(n.start_ns, n.end_ns) for n in trace.nodes] + [(k.start_ns, k.start_ns + k.dur_ns) for k in trace.kernels]
    out = [{"repeat": 0, "phase": "total", "step": scopes.NO_STEP,
            "time_s": (max(b for _, b in times) - min(a for a, _ in times)) / 1e9}]
    out += [{"repeat": 0, "phase": "total", "step": v, "time_s": (b - a) / 1e9} for a, b, v in steps.ranges]
    per_step: dict[tuple, float] = {}
    for e in trace.nodes:
        kind, value = _kind(e)
        if kind == N.F_PHASE and _context(e.cpu_parent, memo)["fphase"] is None and _phase(_context(e, memo)) == value:
            out.append({"repeat": 0, "phase": value, "step": scopes.NO_STEP, "time_s": e.cpu_time_total / 1e6})
            s = steps.at(e.start_ns)
            if s != scopes.NO_STEP:
                per_step[(value, s)] = per_step.get((value, s), 0.0) + e.cpu_time_total / 1e6
    out += [{"repeat": 0, "phase": p, "step": s, "time_s": v} for (p, s), v in per_step.items()]
    return pd.DataFrame(out, columns=cols)


def _attention_kernel(e: Node) -> str:
    """The kernel a fused attention op dispatched to: its deepest `*attention*`/`flash` descendant,
    plus the first GPU kernel it launched, e.g. `aten::_scaled_dot_product_flash_attention_for_cpu`."""
    name, node = "", e
    while True:
        nxt = next((c for c in node.cpu_children if "attention" in c.name or "flash" in c.name), None)
        if nxt is None:
            break
        name, node = nxt.name, nxt
    device_kernels = [k.name for k in node.kernels] or [k.name for c in node.cpu_children for k in c.kernels]
    return name + (f" | {device_kernels[0]}" if device_kernels else "")


def _signature(e: Node) -> tuple:
    return (e.name, *(x or [] for x in e.inputs))


def _children(e: Node) -> list:
    return [(_signature(c), lambda c=c: _children(c)) for c in e.cpu_children]


class _Counter:
    """FLOPs and bytes of one op event, once per (signature, fused kernel or not)."""

    def __init__(self, list_dtype: str):
        self.list_dtype, self.memo = list_dtype, {}

    def count(self, e: Node) -> tuple[int, int]:
        fused = "_attention_math" not in _attention_kernel(e) if e.name in taxonomy.FUSED_ATTENTION else None
        sig = _signature(e)
        key = (repr(sig), fused)
        if key not in self.memo:
            _, shapes, dtypes, values, strides = sig
            self.memo[key] = counting.count(e.name, shapes, dtypes, values, strides, list_dtype=self.list_dtype,
                                            fused_attention=fused is not False, children=lambda: _children(e))
        return self.memo[key]


def _add(rows: dict[tuple, dict[str, Any]], key: tuple, module_types: dict[str, str], attention_kinds: dict[str, str],
         opaque: dict[str, str], optim: bool, self_s: float, total_s: float, device_s: float, e: Node | None = None,
         shapes: list | None = None, kernel: str = "") -> dict[str, Any]:
    row = rows.get(key)
    if row is None:
        repeat, phase, step, module, scope, op, shapes_str = key
        mtype = module_types.get(module, "")
        fam = kernel_names.family(op) if kernel else opaque.get(op) or taxonomy.family(op, mtype)
        if optim and fam not in ("Communication", "Overhead"):
            fam = "Optimizer"
        dims = counting.attention_dims(op, shapes) if fam == "Attention" and e is not None else None
        row = rows[key] = {
            "repeat": repeat, "phase": phase, "step": step, "module": module, "module_type": mtype, "scope": scope,
            "op": op, "kernel": kernel or (_attention_kernel(e) if op in taxonomy.FUSED_ATTENTION else ""),
            "family": fam, "attention_kind": attention_kinds.get(module, "self") if fam == "Attention" else "",
            "calls": 0, "self_time_s": 0.0, "total_time_s": 0.0, "device_time_s": 0.0,
            "flops": 0, "bytes": 0, "input_shapes": shapes_str,
            "seq_q": dims["seq_q"] if dims else 0, "seq_kv": dims["seq_kv"] if dims else 0,
            "batch_heads": dims["batch_heads"] if dims else 0, "head_dim": dims["head_dim"] if dims else 0,
        }
    row["calls"] += 1
    row["self_time_s"] += self_s
    row["total_time_s"] += total_s
    row["device_time_s"] += device_s
    return row


KEY = ["repeat", "phase", "step", "module", "scope", "op", "input_shapes"]


def assert_same_table(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Two op tables hold the same rows (in any order): numbers within 1e-9, everything else as text."""
    a = a.sort_values(KEY).reset_index(drop=True)
    b = b.sort_values(KEY).reset_index(drop=True)
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for col in a.columns:
        if pd.api.types.is_numeric_dtype(a[col]):
            np.testing.assert_allclose(a[col].to_numpy(float), b[col].to_numpy(float), rtol=0, atol=1e-9, err_msg=col)
        else:
            assert (a[col].astype(str) == b[col].astype(str)).all(), col


def assert_same_phases(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Two phase-times tables hold the same (repeat, phase, step) rows with times within 1e-9 s."""
    cols = ["repeat", "phase", "step", "time_s"]
    a, b = a.sort_values(cols).reset_index(drop=True), b.sort_values(cols).reset_index(drop=True)
    assert a[cols[:3]].astype(str).equals(b[cols[:3]].astype(str))
    np.testing.assert_allclose(a["time_s"], b["time_s"], rtol=0, atol=1e-9)
