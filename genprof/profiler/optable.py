"""Build the tidy op table from a torch.profiler trace.

Input: the profiler's CPU events (each with its parent, time range, shapes,
argument values and the device time of the kernels it launched) plus the
module descriptions from `ModuleScopes`. Output: one DataFrame, a row per
(repeat, phase, step, module, op, input shapes), with the columns of
`OP_COLUMNS`.

Rules that make the table add up:
- Only top-level ops become rows: an op whose parent is a genprof range (or
  nothing). The ops they call (aten::linear -> aten::addmm) are inside their
  time, so no time is counted twice.
- Each genprof range's own time (its duration minus its children's) becomes an
  `[overhead]` row of its phase, step and module: Python and framework time
  that no op covers. Ops + overhead rows of a phase sum to the phase's wall time.
- On a GPU, `device_time_s` is the time of the kernels an op launched (the
  profiler links them by correlation id), children included.
"""

from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

from genprof.profiler import counting, scopes, taxonomy

OP_COLUMNS = [
    "run_id", "workload", "size", "optimizations", "repeat", "phase", "step", "part", "module",
    "module_type", "op", "kernel", "family", "attention_kind", "calls", "self_time_s", "total_time_s",
    "device_time_s", "flops", "bytes", "input_shapes", "seq_q", "seq_kv", "batch_heads", "head_dim",
]
_KEY = ("repeat", "phase", "step", "module", "op", "input_shapes")


def _is_cpu(e: Any) -> bool:
    return getattr(e.device_type, "name", str(e.device_type)) == "CPU"


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


def build(events: Iterable[Any], module_types: dict[str, str], attention_kinds: dict[str, str],
          run: dict[str, Any] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(op table, phase times) from profiler events. `run` adds run_id, workload, size, optimizations."""
    memo: dict[int, dict[str, Any]] = {}
    rows: dict[tuple, dict[str, Any]] = {}
    phase_times: list[dict[str, Any]] = []
    for e in events:
        if not _is_cpu(e):
            continue
        name = e.name
        parent = e.cpu_parent
        if name.startswith(scopes.PREFIX):
            ctx = _context(e, memo)
            if name.startswith((scopes.PHASE, scopes.STEP, scopes.REPEAT)):
                phase = ctx["phase"] if not name.startswith(scopes.REPEAT) else "total"
                phase_times.append({"repeat": ctx["repeat"], "phase": phase, "step": ctx["step"],
                                    "time_s": e.cpu_time_total / 1e6})
            _add(rows, ctx, taxonomy.OVERHEAD_OP, e, module_types, attention_kinds, overhead=True)
        elif parent is None or parent.name.startswith(scopes.PREFIX):
            ctx = _context(parent, memo) if parent is not None else {
                "repeat": 0, "phase": scopes.OUTSIDE_PHASES, "step": scopes.NO_STEP, "module": ""}
            _add(rows, ctx, name, e, module_types, attention_kinds, overhead=False)
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
         module_types: dict[str, str], attention_kinds: dict[str, str], overhead: bool) -> None:
    if overhead:
        self_s = total_s = e.self_cpu_time_total / 1e6
        device_s = 0.0
        shapes_str, shapes, dtypes, args = "", [], [], []
    else:
        self_s, total_s = e.self_cpu_time_total / 1e6, e.cpu_time_total / 1e6
        device_s = e.device_time_total / 1e6
        shapes, dtypes = e.input_shapes or [], e.input_dtypes or []
        args = e.concrete_inputs or []
        shapes_str = str(shapes)
    key = (ctx["repeat"], ctx["phase"], ctx["step"], ctx["module"], op, shapes_str)
    row = rows.get(key)
    if row is None:
        module = ctx["module"]
        mtype = module_types.get(module, "")
        fam = taxonomy.family(op, mtype)
        flops, nbytes = (0, 0) if overhead else counting.count(op, shapes, dtypes, args)
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
            "_flops_per_call": flops, "_bytes_per_call": nbytes,
        }
    row["calls"] += 1
    row["self_time_s"] += self_s
    row["total_time_s"] += total_s
    row["device_time_s"] += device_s
    row["flops"] += row["_flops_per_call"]
    row["bytes"] += row["_bytes_per_call"]

