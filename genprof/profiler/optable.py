"""Build the tidy op table from a torch.profiler trace.

Input: the profiler's events as columns (`genprof.profiler.events.EventTable`,
from a live profile or a trace file) and their call tree, plus the module
descriptions from `ModuleScopes`. Output: one DataFrame, a row per
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

Everything is array work over all events at once (context of every event from
its nearest phase/step/module/repeat ancestor, level by level; rows by one
groupby); Python runs once per distinct op signature (name, shapes, strides,
dtypes, argument values) for FLOPs and bytes, summed over a row's calls, and
once per fused-attention row, for the kernel name.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Any, Iterator

import numpy as np
import pandas as pd

from genprof.profiler import counting, scopes, taxonomy
from genprof.profiler.events import EventTable, Tree, tree as build_tree

OP_COLUMNS = [
    "run_id", "workload", "size", "optimizations", "repeat", "phase", "step", "part", "module",
    "module_type", "op", "kernel", "family", "attention_kind", "calls", "self_time_s", "total_time_s",
    "device_time_s", "flops", "bytes", "input_shapes", "seq_q", "seq_kv", "batch_heads", "head_dim",
]
_KEY = ["repeat", "phase", "step", "module", "op", "input_shapes"]
_KINDS = ((scopes.REPEAT, 1), (scopes.PHASE, 2), (scopes.STEP, 3), (scopes.MODULE, 4))


def _name_kinds(names: list[str]) -> tuple[np.ndarray, list[Any]]:
    """Per distinct name: 0 op, 1 repeat, 2 phase, 3 step, 4 module, 5 other genprof range; and its value."""
    kind = np.zeros(len(names), np.int8)
    value: list[Any] = [None] * len(names)
    for i, name in enumerate(names):
        if not name.startswith(scopes.PREFIX):
            continue
        kind[i] = 5
        for prefix, k in _KINDS:
            if name.startswith(prefix):
                kind[i] = k
                v = name[len(prefix):]
                value[i] = int(v) if k in (1, 3) else v
                break
    return kind, value


def _nearest(kind_of: np.ndarray, k: int, t: Tree) -> np.ndarray:
    """Per sorted position: position of the nearest ancestor-or-self of kind k (-1: none)."""
    near = np.full(len(kind_of), -1, np.int64)
    for d, lvl in enumerate(t.levels):
        mine = kind_of[lvl] == k
        near[lvl] = np.where(mine, lvl, near[t.parent[lvl]] if d else -1)
    return near


def build(ev: EventTable, module_types: dict[str, str], attention_kinds: dict[str, str],
          run: dict[str, Any] | None = None, t: Tree | None = None,
          fused_attention: bool | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(op table, phase times) from profiler events. `run` adds run_id, workload, size, optimizations.

    `fused_attention`: whether attention ops ran a fused kernel (which skips a causal mask's
    masked blocks); None: read it from the kernel each one dispatched to. A meta-device run
    says True: it counts for a GPU, although SDPA takes its math path on meta."""
    t = t if t is not None else build_tree(ev)
    name_kind, name_value = _name_kinds(ev.names)
    name_id = ev.name_id[t.order]
    kind = name_kind[name_id]
    start, end = ev.start[t.order], ev.end[t.order]
    near = {k: _nearest(kind, k, t) for _, k in _KINDS}
    values = np.asarray(name_value, dtype=object)

    def value_at(pos: np.ndarray, default: Any) -> np.ndarray:
        out = np.full(len(pos), default, dtype=object)
        ok = pos >= 0
        out[ok] = values[name_id[pos[ok]]]
        return out

    depth_of = lambda pos: np.where(pos >= 0, t.depth[np.maximum(pos, 0)], -1)  # noqa: E731
    phase_depth = depth_of(near[2])
    ctx_repeat = value_at(near[1], 0)
    ctx_phase = value_at(near[2], scopes.OUTSIDE_PHASES)
    step_ok = depth_of(near[3]) > phase_depth
    ctx_step = np.where(step_ok, value_at(near[3], scopes.NO_STEP), scopes.NO_STEP)
    module_ok = depth_of(near[4]) > phase_depth
    ctx_module = np.where(module_ok, value_at(near[4], ""), "")

    dur = end - start
    is_range = kind > 0
    parent = t.parent
    parent_is_range = np.zeros(len(kind), bool)
    has = parent >= 0
    parent_is_range[has] = is_range[parent[has]]
    top_op = ~is_range & (~has | parent_is_range)

    # phase times: every phase, step and repeat range
    timed = np.flatnonzero(np.isin(kind, (1, 2, 3)))
    phase_times = pd.DataFrame({
        "repeat": ctx_repeat[timed].astype(np.int64),
        "phase": np.where(kind[timed] == 1, "total", ctx_phase[timed]),
        "step": ctx_step[timed].astype(np.int64),
        "time_s": dur[timed] / 1e9,
    }, columns=["repeat", "phase", "step", "time_s"])

    rows = np.flatnonzero(is_range | top_op)
    self_ns = dur - t.child_ns
    over = is_range[rows]
    names = np.asarray(ev.names, dtype=object)
    op_names = np.where(over, taxonomy.OVERHEAD_OP, names[name_id[rows]])
    shapes = np.full(len(rows), "", dtype=object)
    ev_flops, ev_bytes = np.zeros(len(rows), np.int64), np.zeros(len(rows), np.int64)
    with _gc_paused():  # a few small lists per op event: the collector would rescan the whole heap each time
        op_args = ev.args(t.order[rows[~over]].tolist())
        shapes[~over] = [str(a[0]) for a in op_args]
        ev_flops[~over], ev_bytes[~over] = _count_events(rows[~over], op_args, ev, t, names, name_id,
                                                         fused_attention)
    df = pd.DataFrame({
        "pos": rows, "repeat": ctx_repeat[rows].astype(np.int64), "phase": ctx_phase[rows],
        "step": ctx_step[rows].astype(np.int64), "module": ctx_module[rows], "op": op_names,
        "input_shapes": shapes, "over": over,
        "self_time_s": self_ns[rows] / 1e9,
        "total_time_s": np.where(over, self_ns[rows], dur[rows]) / 1e9,
        "device_time_s": np.where(over, 0, t.device_ns[rows]) / 1e9,
        "flops": ev_flops, "bytes": ev_bytes,
    })
    if df.empty:
        table = pd.DataFrame(columns=OP_COLUMNS)
    else:
        g = df.groupby(_KEY, sort=False, dropna=False)
        table = g.agg(pos=("pos", "first"), over=("over", "first"), calls=("pos", "size"),
                      self_time_s=("self_time_s", "sum"), total_time_s=("total_time_s", "sum"),
                      device_time_s=("device_time_s", "sum"), flops=("flops", "sum"),
                      bytes=("bytes", "sum")).reset_index()
        table = table.sort_values("pos", kind="stable").reset_index(drop=True)
        table = _describe(table, dict(zip(rows[~over].tolist(), op_args)), module_types, attention_kinds, t,
                          names, name_id)
    run = run or {}
    for col in ("run_id", "workload", "size", "optimizations"):
        table[col] = run.get(col, "")
    modules = table["module"].astype(str)
    table["part"] = modules.map({m: m.split(".", 1)[0] for m in modules.unique()})
    return table[OP_COLUMNS], phase_times


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _count_events(pos: np.ndarray, args: list, ev: EventTable, t: Tree, names: np.ndarray, name_id: np.ndarray,
                  fused_attention: bool | None) -> tuple[np.ndarray, np.ndarray]:
    """FLOPs and bytes of each op event at sorted positions `pos` (`args`: their recorded
    arguments), counted once per distinct signature."""
    n = len(pos)
    flops, nbytes = np.zeros(n, np.int64), np.zeros(n, np.int64)
    if not n:
        return flops, nbytes
    ops = names[name_id[pos]].tolist()
    text: dict[int, str] = {}  # a trace file's events share one arguments tuple per signature
    keys = [(op, text.get(id(a)) or text.setdefault(id(a), repr(a))) for op, a in zip(ops, args)]
    first: dict[tuple, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    list_dtype = counting.dominant_dtype((args[i][0], args[i][1]) for i in first.values())

    def children(p: int) -> list:
        cs = t.children(p)
        return [((str(names[name_id[c]]), *a), lambda c=int(c): children(c))
                for c, a in zip(cs.tolist(), ev.args(t.order[cs].tolist()))]

    memo: dict[tuple, tuple[int, int]] = {}
    for i, (k, op, a, p) in enumerate(zip(keys, ops, args, pos.tolist())):
        fused = fused_attention
        if fused is None and op in taxonomy.FUSED_ATTENTION:
            fused = "_attention_math" not in _attention_kernel(p, t, names, name_id)
        mk = (k, fused)
        c = memo.get(mk)
        if c is None:
            shapes, dtypes, values, strides = (x or [] for x in a)
            c = memo[mk] = counting.count(op, shapes, dtypes, values, strides, list_dtype=list_dtype,
                                          fused_attention=fused is not False,
                                          children=(lambda p=p: children(p)))
        flops[i], nbytes[i] = c
    return flops, nbytes


def _describe(table: pd.DataFrame, args_at: dict[int, tuple], module_types: dict[str, str],
              attention_kinds: dict[str, str], t: Tree, names: np.ndarray, name_id: np.ndarray) -> pd.DataFrame:
    """Family, attention kind and dims, and kernel of every row (`args_at`: sorted position ->
    recorded arguments of each op event).

    Described once per (module, op, input shapes), from the first event of the first
    row with that key (rows that differ only by repeat, phase or step share it)."""
    n = len(table)
    mtype = [module_types.get(m, "") for m in table["module"].tolist()]
    family, kernel, kinds = [""] * n, [""] * n, [""] * n
    dims = np.zeros((n, 4), np.int64)
    fam_memo: dict[tuple[str, str], str] = {}
    memo: dict[tuple, tuple] = {}
    cols = (table[c].tolist() for c in ("op", "module", "over", "pos", "input_shapes"))
    for i, (op, module, over, pos, shp) in enumerate(zip(*cols)):
        key = (op, mtype[i])
        fam = fam_memo.get(key)
        if fam is None:
            fam = fam_memo[key] = taxonomy.family(op, mtype[i])
        family[i] = fam
        if over:
            continue
        skey = (module, op, shp)
        c = memo.get(skey)
        if c is None:
            shapes = args_at[int(pos)][0] or []
            d = counting.attention_dims(op, shapes) if fam == "Attention" else None
            c = memo[skey] = ((d["seq_q"], d["seq_kv"], d["batch_heads"], d["head_dim"]) if d else (0, 0, 0, 0),
                              _attention_kernel(int(pos), t, names, name_id)
                              if op in taxonomy.FUSED_ATTENTION else "")
        dims[i], kernel[i] = c
        if fam == "Attention":
            kinds[i] = attention_kinds.get(module, "self")
    return table.assign(module_type=mtype, family=family, attention_kind=kinds, kernel=kernel,
                        seq_q=dims[:, 0], seq_kv=dims[:, 1], batch_heads=dims[:, 2], head_dim=dims[:, 3])


def _attention_kernel(pos: int, t: Tree, names: np.ndarray, name_id: np.ndarray) -> str:
    """The kernel a fused attention op dispatched to: its deepest `*attention*`/`flash` descendant,
    plus the first GPU kernel it launched, e.g. `aten::_scaled_dot_product_flash_attention_for_cpu`."""
    name, node = "", pos
    while True:
        nxt = next((int(c) for c in t.children(node)
                    if "attention" in names[name_id[c]] or "flash" in names[name_id[c]]), None)
        if nxt is None:
            break
        name, node = names[name_id[nxt]], nxt
    device_kernels = t.kernels_of(node) or [k for c in t.children(node) for k in t.kernels_of(int(c))]
    return name + (f" | {device_kernels[0]}" if device_kernels else "")
