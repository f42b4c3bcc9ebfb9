"""Build the tidy op table from a torch.profiler trace: genprof's own, or one recorded by anyone.

Input: the profiler's events as columns (`genprof.profiler.events.EventTable`,
from a live profile or a trace file) and their call tree, plus the module
descriptions from `ModuleScopes`. Output (`build`): one DataFrame, a row per
(repeat, phase, step, module, scope, op, input shapes), with the columns of
`OP_COLUMNS`, and the phase times; `build_tables` adds the GPU time per kernel.

What an event is comes from `genprof.profiler.naming`: an operator, a scope
(genprof's ranges, record_function ranges, ProfilerStep#, autograd-engine
wrappers, `## forward ##` annotations, nn.Module ranges, ...) or a runtime call.
Rules that make the table add up:
- Only the outermost operator of a call stack becomes a row. The ops it calls
  (aten::linear -> aten::addmm) are inside its time, so no time is counted twice.
- Each scope outside any op gives its own time (its duration minus its child
  ops and scopes) to an `[overhead]` row: Python, framework and runtime time
  that no op covers. Ops + overhead rows of a phase sum to the phase's wall time.
- Device time: every kernel, memcpy and memset goes to the runtime call that
  launched it (same correlation id) and so to the outermost op around that
  call (`device_time_s`, children included). Device work whose launch is in no
  op, or not in the trace at all, is a row of its own named after the kernel
  (scope `(no launch in trace)` for the latter): the table's device time is
  the trace's device time.
- Context: genprof's phase/step/repeat/module ranges as always; in other
  tools' traces, `## name ##` annotations are phases (the outermost one),
  autograd-engine work is phase `backward` and optimizer steps `optimizer`,
  `ProfilerStep#N` is step N (by time, on every thread), `nn.Module: X` is the
  module; the innermost other scope is the `scope` column.

Everything is array work over all events at once (context of every event from
its nearest ancestors of each kind, level by level; rows by one groupby);
Python runs once per distinct op signature (name, shapes, strides, dtypes,
argument values) for FLOPs and bytes, summed over a row's calls, once per
fused-attention row, for the kernel name, and once per distinct kernel name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from genprof.profiler import counting, forked, kernels, naming, scopes, taxonomy
from genprof.profiler.events import KIND_NAMES, EventTable, Tree, gc_paused, tree as build_tree

OP_COLUMNS = [
    "run_id", "workload", "size", "optimizations", "repeat", "phase", "step", "part", "module",
    "module_type", "scope", "op", "kernel", "family", "attention_kind", "calls", "self_time_s", "total_time_s",
    "device_time_s", "flops", "bytes", "input_shapes", "seq_q", "seq_kv", "batch_heads", "head_dim",
]
KERNEL_COLUMNS = ["run_id", "repeat", "kernel", "kind", "device", "stream", "op", "family", "calls", "time_s"]
_KEY = ["repeat", "phase", "step", "module", "scope", "op", "input_shapes"]
NO_LAUNCH = "(no launch in trace)"  # the scope of device work whose launch the trace does not hold
N = naming


@dataclass
class Tables:
    """What a trace gives: the op table, phase times, GPU time per kernel, and per-device busy time."""

    ops: pd.DataFrame
    phases: pd.DataFrame
    kernels: pd.DataFrame
    gpu: dict[str, Any] = field(default_factory=dict)


def _nearest(mask: np.ndarray, t: Tree) -> np.ndarray:
    """Per sorted position: position of the nearest ancestor-or-self where mask holds (-1: none)."""
    near = np.full(len(mask), -1, np.int64)
    for d, lvl in enumerate(t.levels):
        near[lvl] = np.where(mask[lvl], lvl, near[t.parent[lvl]] if d else -1)
    return near


def _outermost(mask: np.ndarray, t: Tree) -> np.ndarray:
    """Per sorted position: position of the outermost ancestor-or-self where mask holds (-1: none)."""
    far = np.full(len(mask), -1, np.int64)
    for d, lvl in enumerate(t.levels):
        up = far[t.parent[lvl]] if d else np.full(len(lvl), -1, np.int64)
        far[lvl] = np.where(up >= 0, up, np.where(mask[lvl], lvl, -1))
    return far


def _by_time(starts: np.ndarray, ends: np.ndarray, values: np.ndarray, at: np.ndarray, default: int) -> np.ndarray:
    """For each time in `at`: the value of the interval (non-overlapping, sorted by start) holding it."""
    out = np.full(len(at), default, np.int64)
    if len(starts):
        i = np.searchsorted(starts, at, side="right") - 1
        ok = (i >= 0) & (at < ends[np.maximum(i, 0)])
        out[ok] = values[i[ok]]
    return out


def build(ev: EventTable, module_types: dict[str, str], attention_kinds: dict[str, str],
          run: dict[str, Any] | None = None, t: Tree | None = None,
          fused_attention: bool | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(op table, phase times) from profiler events. `run` adds run_id, workload, size, optimizations.

    `fused_attention`: whether attention ops ran a fused kernel (which skips a causal mask's
    masked blocks); None: read it from the kernel each one dispatched to. A meta-device run
    says True: it counts for a GPU, although SDPA takes its math path on meta."""
    tables = build_tables(ev, module_types, attention_kinds, run, t, fused_attention)
    return tables.ops, tables.phases


@dataclass
class _Context:
    """Per sorted position: what the scopes around an event (itself included) say."""

    kind: np.ndarray
    name_id: np.ndarray
    values: np.ndarray
    names: np.ndarray
    start: np.ndarray
    end: np.ndarray
    repeat: np.ndarray
    phase: np.ndarray
    step: np.ndarray
    module: np.ndarray
    scope: np.ndarray
    optimizer: np.ndarray
    outer_phase: np.ndarray
    steps: np.ndarray  # positions of ProfilerStep#N ranges, by start

    def step_at(self, times: np.ndarray) -> np.ndarray:
        """The ProfilerStep#N holding each time (NO_STEP: none), whatever thread ran the work."""
        s = self.steps
        return _by_time(self.start[s], self.end[s], self.values[self.name_id[s]].astype(np.int64), times,
                        scopes.NO_STEP)


def _contexts(ev: EventTable, t: Tree) -> _Context:
    """Repeat, phase, step, module, scope and optimizer flag of every event, one array pass per tree level.

    genprof's ranges as always (step and module count only inside the phase). Elsewhere: phase from
    autograd-engine work (`backward`), else the outermost `## name ##` annotation, else an optimizer step
    (`optimizer`); step from ProfilerStep#N by time; module from `nn.Module: X` ranges."""
    name_kind, name_value = N.classify(ev.names, ev.name_cat)
    name_id = ev.name_id[t.order]
    kind = name_kind[name_id]
    values = np.asarray(name_value, dtype=object)
    names = np.asarray(ev.names, dtype=object)

    def value_at(pos: np.ndarray, default: Any, of: np.ndarray = values) -> np.ndarray:
        out = np.full(len(pos), default, dtype=object)
        ok = pos >= 0
        out[ok] = of[name_id[pos[ok]]]
        return out

    near = {k: _nearest(kind == k, t) for k in (N.REPEAT, N.PHASE, N.STEP, N.MODULE, N.F_MODULE, N.AUTOGRAD,
                                                 N.OPTIMIZER)}
    depth_of = lambda pos: np.where(pos >= 0, t.depth[np.maximum(pos, 0)], -1)  # noqa: E731
    phase_depth = depth_of(near[N.PHASE])
    outer_phase = _outermost(kind == N.F_PHASE, t)
    phase = value_at(near[N.PHASE], scopes.OUTSIDE_PHASES)
    own = near[N.PHASE] < 0
    for mark, label in ((near[N.OPTIMIZER] >= 0, "optimizer"), (outer_phase >= 0, None),
                        (near[N.AUTOGRAD] >= 0, "backward")):  # the last assignment wins
        sel = own & mark
        phase[sel] = value_at(outer_phase[sel], "") if label is None else label
    step_ok = depth_of(near[N.STEP]) > phase_depth
    step = np.where(step_ok, value_at(near[N.STEP], scopes.NO_STEP), scopes.NO_STEP).astype(np.int64)
    start, end = ev.start[t.order], ev.end[t.order]
    steps = np.flatnonzero(kind == N.F_STEP)
    ctx = _Context(kind, name_id, values, names, start, end, value_at(near[N.REPEAT], 0).astype(np.int64), phase,
                   step, np.where(depth_of(near[N.MODULE]) > phase_depth, value_at(near[N.MODULE], ""),
                                  value_at(near[N.F_MODULE], "")),
                   value_at(_nearest(np.isin(kind, N.SCOPE_COLUMN_KINDS), t), "", names), near[N.OPTIMIZER] >= 0,
                   outer_phase, steps[np.argsort(start[steps], kind="stable")])
    if len(ctx.steps):
        ctx.step = np.where(step_ok, step, ctx.step_at(start))
    return ctx


def build_tables(ev: EventTable, module_types: dict[str, str], attention_kinds: dict[str, str],
                 run: dict[str, Any] | None = None, t: Tree | None = None,
                 fused_attention: bool | None = None) -> Tables:
    """Op table, phase times, GPU time per kernel and busy time, from profiler events."""
    t = t if t is not None else build_tree(ev)
    c = _contexts(ev, t)
    n = len(c.kind)
    outer_op = _outermost(c.kind == N.OP, t)
    lines, args_at = _op_lines(ev, t, c, outer_op, fused_attention)
    # device work: its launch's outermost op, else a line of its own
    kpos = t.kernel_pos
    klaunch_op = np.where(kpos >= 0, outer_op[np.maximum(kpos, 0)], -1)
    loose = np.flatnonzero(klaunch_op < 0)
    if len(loose):
        lines = pd.concat([lines, _kernel_lines(ev, c, kpos, loose, n)], ignore_index=True)
    phase_times = _phase_times(ev, c)
    gpu = kernels.gpu_summary(ev)
    if lines.empty:
        return Tables(pd.DataFrame(columns=OP_COLUMNS), phase_times, pd.DataFrame(columns=KERNEL_COLUMNS), gpu)
    g = lines.groupby(_KEY, sort=False, dropna=False)
    group = g.ngroup().to_numpy()
    table = g.agg(pos=("pos", "first"), over=("over", "first"), krow=("krow", "first"), optim=("optim", "first"),
                  kname=("kname", "first"), calls=("pos", "size"), self_time_s=("self_time_s", "sum"),
                  total_time_s=("total_time_s", "sum"), device_time_s=("device_time_s", "sum"),
                  flops=("flops", "sum"), bytes=("bytes", "sum")).reset_index()
    order = np.argsort(table["pos"].to_numpy(), kind="stable")
    table = table.iloc[order].reset_index(drop=True)
    row_of_group = np.empty(len(order), np.int64)
    row_of_group[order] = np.arange(len(order))
    types = {**{v: N.module_type(v) for v in c.values[c.name_id[c.kind == N.F_MODULE]]}, **module_types}
    table = _describe(table, args_at, ev, types, attention_kinds, t, c.names, c.name_id,
                      _opaque_families(ev, klaunch_op, c.names, c.name_id))
    run = run or {}
    for col in ("run_id", "workload", "size", "optimizations"):
        table[col] = run.get(col, "")
    modules = table["module"].astype(str)
    table["part"] = modules.map({m: m.split(".", 1)[0] for m in modules.unique()})
    # the row of every device event: the line of its launch's outermost op, or its own line
    line_of_pos = np.full(n + len(kpos), -1, np.int64)
    line_of_pos[lines["pos"].to_numpy()] = np.arange(len(lines))
    krow = row_of_group[group][line_of_pos[np.where(klaunch_op >= 0, klaunch_op, n + np.arange(len(kpos)))]]
    return Tables(table[OP_COLUMNS], phase_times, _kernel_table(ev, krow, table, run), gpu)


def _op_lines(ev: EventTable, t: Tree, c: _Context, outer_op: np.ndarray,
              fused_attention: bool | None) -> tuple[pd.DataFrame, dict[int, tuple]]:
    """One line per outermost op and per scope outside any op (its own time: an `[overhead]` line), each
    op with its FLOPs and bytes; and the recorded arguments of every op line, by sorted position."""
    n = len(c.kind)
    is_op, is_scope = c.kind == N.OP, np.isin(c.kind, N.SCOPE_KINDS)
    top_op = is_op & (outer_op == np.arange(n))
    dur = c.end - c.start
    parent = t.parent
    counted = (parent >= 0) & (is_op | is_scope)  # runtime calls under a scope are the scope's own time
    scope_child_ns = np.bincount(parent[counted], weights=dur[counted], minlength=n).astype(np.int64)
    rows = np.flatnonzero((is_scope & (outer_op < 0)) | top_op)
    over = ~top_op[rows]
    self_ns = dur[rows] - np.where(over, scope_child_ns[rows], t.child_ns[rows])  # an op's self time: minus all
    shapes = np.full(len(rows), "", dtype=object)
    ev_flops, ev_bytes = np.zeros(len(rows), np.int64), np.zeros(len(rows), np.int64)
    with gc_paused():  # a few small lists per op event: the collector would rescan the whole heap each time
        op_args = ev.args(t.order[rows[~over]].tolist())
        shown: dict[int, str] = {}  # a trace file's events share one arguments tuple per signature
        shapes[~over] = [shown.get(id(a)) or shown.setdefault(id(a), str(a[0])) for a in op_args]
        ev_flops[~over], ev_bytes[~over] = _count_events(rows[~over], op_args, ev, t, c.names, c.name_id,
                                                         fused_attention)
    lines = pd.DataFrame({
        "pos": rows, "repeat": c.repeat[rows], "phase": c.phase[rows], "step": c.step[rows],
        "module": c.module[rows], "scope": c.scope[rows],
        "op": np.where(over, taxonomy.OVERHEAD_OP, c.names[c.name_id[rows]]), "input_shapes": shapes,
        "over": over, "krow": False, "kname": -1, "optim": c.optimizer[rows], "self_time_s": self_ns / 1e9,
        "total_time_s": np.where(over, self_ns, dur[rows]) / 1e9,
        "device_time_s": np.where(over, 0, t.device_ns[rows]) / 1e9,
        "flops": ev_flops, "bytes": ev_bytes,
    })
    return lines, dict(zip(rows[~over].tolist(), op_args))


def _kernel_lines(ev: EventTable, c: _Context, kpos: np.ndarray, loose: np.ndarray, n: int) -> pd.DataFrame:
    """One line per device event no op launched: named after its kernel, in its launch's context, or (no
    launch in the trace) in none, its step from its start time. `pos` = n + the device event's index."""
    lp = kpos[loose]
    has = lp >= 0
    lpc = np.maximum(lp, 0)
    short = np.asarray([kernels.short_name(k) for k in ev.kernel_names], dtype=object)
    full = np.asarray(ev.kernel_names, dtype=object)
    kid = ev.kernel_name_id[loose]
    orphan_step = c.step_at(ev.kernel_start[loose]) if len(c.steps) else scopes.NO_STEP
    return pd.DataFrame({
        "pos": n + loose, "repeat": np.where(has, c.repeat[lpc], 0).astype(np.int64),
        "phase": np.where(has, c.phase[lpc], scopes.OUTSIDE_PHASES),
        "step": np.where(has, c.step[lpc], orphan_step).astype(np.int64),
        "module": np.where(has, c.module[lpc], ""), "scope": np.where(has, c.scope[lpc], NO_LAUNCH),
        "op": np.where(ev.kernel_kind[loose] == 0, short[kid], full[kid]), "input_shapes": "", "over": False,
        "krow": True, "kname": kid, "optim": has & c.optimizer[lpc], "self_time_s": 0.0, "total_time_s": 0.0,
        "device_time_s": ev.kernel_ns[loose] / 1e9, "flops": 0, "bytes": 0})


def _phase_times(ev: EventTable, c: _Context) -> pd.DataFrame:
    """Phase, step and repeat times: genprof's ranges; in a trace without them, the trace's span as `total`,
    each ProfilerStep as a step of `total`, and each outermost `## name ##` phase (per step too)."""
    cols = ["repeat", "phase", "step", "time_s"]
    kind, dur = c.kind, c.end - c.start
    timed = np.flatnonzero(np.isin(kind, (N.REPEAT, N.PHASE, N.STEP)))
    genprof = pd.DataFrame({
        "repeat": c.repeat[timed], "phase": np.where(kind[timed] == N.REPEAT, "total", c.phase[timed]),
        "step": c.step[timed], "time_s": dur[timed] / 1e9}, columns=cols)
    if np.isin(kind, N.GENPROF_KINDS).any() or not len(kind):
        return genprof
    lo, hi = ev.span_ns()
    frames = [pd.DataFrame({"repeat": [0], "phase": ["total"], "step": [scopes.NO_STEP], "time_s": [(hi - lo) / 1e9]}),
              pd.DataFrame({"repeat": 0, "phase": "total", "step": c.values[c.name_id[c.steps]].astype(np.int64),
                            "time_s": dur[c.steps] / 1e9})]
    ph = np.flatnonzero(c.outer_phase == np.arange(len(kind)))
    ph = ph[c.phase[ph] == c.values[c.name_id[ph]]]  # an annotation inside autograd work is part of `backward`
    if len(ph):
        p = pd.DataFrame({"repeat": 0, "phase": c.values[c.name_id[ph]],
                          "step": c.step_at(c.start[ph]) if len(c.steps) else scopes.NO_STEP, "time_s": dur[ph] / 1e9})
        per_step = p[p["step"] != scopes.NO_STEP]
        frames += [p.assign(step=scopes.NO_STEP),
                   per_step.groupby(["repeat", "phase", "step"], sort=False)["time_s"].sum().reset_index()]
    return pd.concat(frames, ignore_index=True)[cols]


def _opaque_families(ev: EventTable, klaunch_op: np.ndarray, names: np.ndarray, name_id: np.ndarray) -> dict[str, str]:
    """For ops whose name says nothing (family Other) that launched device work: the family of the
    kernels that took most of their device time, when those kernels' names say one."""
    at = np.flatnonzero(klaunch_op >= 0)
    if not len(at):
        return {}
    op_id = name_id[klaunch_op[at]]
    kfam = np.asarray([kernels.family(k) for k in ev.kernel_names], dtype=object)[ev.kernel_name_id[at]]
    ids = np.unique(op_id)
    other = ids[[taxonomy.family(names[i]) == "Other" for i in ids.tolist()]]
    df = pd.DataFrame({"op": op_id, "fam": kfam, "ns": ev.kernel_ns[at]})
    df = df[np.isin(op_id, other)]
    out = {}
    for op, g in df.groupby("op"):
        best = g.groupby("fam")["ns"].sum().idxmax()
        if best != "Other":
            out[str(names[op])] = str(best)
    return out


COUNT_SHARE = 256  # distinct signatures a process counts at least: below it, a fork costs more than it saves


def _count_events(pos: np.ndarray, args: list, ev: EventTable, t: Tree, names: np.ndarray, name_id: np.ndarray,
                  fused_attention: bool | None) -> tuple[np.ndarray, np.ndarray]:
    """FLOPs and bytes of each op event at sorted positions `pos` (`args`: their recorded
    arguments), counted once per distinct signature, or per call where its children decide
    (`counting.per_call`). Many distinct signatures are shared out to forked processes
    (`forked.split`, whole signatures each, so each counts as one process would)."""
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
    plist = pos.tolist()
    groups: dict[tuple, list[int]] = {}  # (signature, fused) -> its events
    for i, (k, op) in enumerate(zip(keys, ops)):
        fused = fused_attention
        if fused is None and op in taxonomy.FUSED_ATTENTION:
            fused = "_attention_math" not in _attention_kernel(plist[i], t, names, name_id)
        groups.setdefault((k, fused), []).append(i)

    def children(p: int) -> list:
        cs = t.children(p)
        return [((str(names[name_id[c]]), *a), lambda c=int(c): children(c))
                for c, a in zip(cs.tolist(), ev.args(t.order[cs].tolist()))]

    def count_groups(part: list[tuple[tuple, list[int]]]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        out = []
        for (_, fused), events in part:
            i0 = events[0]
            op, (shapes, dtypes, values, strides) = ops[i0], (x or [] for x in args[i0])
            if counting.per_call(op, shapes, dtypes, values, strides, list_dtype=list_dtype):
                at = events
            else:
                at = [i0]
            out.append((events, [counting.count(op, shapes, dtypes, values, strides, list_dtype=list_dtype,
                                                fused_attention=fused is not False,
                                                children=(lambda p=plist[i]: children(p))) for i in at]))
        return out

    items = list(groups.items())
    share = forked.processes(len(items) // COUNT_SHARE)
    for part in forked.split(count_groups, [items[k::share] for k in range(share)]):
        for events, counts in part:
            for i, c in zip(events, counts if len(counts) == len(events) else counts * len(events)):
                flops[i], nbytes[i] = c
    return flops, nbytes


def _describe(table: pd.DataFrame, args_at: dict[int, tuple], ev: EventTable, module_types: dict[str, str],
              attention_kinds: dict[str, str], t: Tree, names: np.ndarray, name_id: np.ndarray,
              opaque: dict[str, str]) -> pd.DataFrame:
    """Family, attention kind and dims, and kernel of every row (`args_at`: sorted position -> recorded
    arguments of each op event). Described once per (module, op, input shapes), from the first event of
    the first row with that key (rows that differ only by repeat, phase, step or scope share it)."""
    n = len(table)
    mtype = [module_types.get(m, "") for m in table["module"].tolist()]
    family, kernel, kinds = [""] * n, [""] * n, [""] * n
    dims = np.zeros((n, 4), np.int64)
    fam_memo: dict[tuple[str, str, bool, bool], str] = {}
    kname = table["kname"].to_numpy()
    memo: dict[tuple, tuple] = {}
    cols = (table[c].tolist() for c in ("op", "module", "over", "krow", "optim", "pos", "input_shapes"))
    for i, (op, module, over, krow, optim, pos, shp) in enumerate(zip(*cols)):
        key = (op, mtype[i], krow, optim)
        fam = fam_memo.get(key)
        if fam is None:
            fam = kernels.family(op) if krow else opaque.get(op) or taxonomy.family(op, mtype[i])
            if optim and fam not in ("Communication", "Overhead"):
                fam = "Optimizer"
            fam_memo[key] = fam
        family[i] = fam
        if krow:
            kernel[i] = ev.kernel_names[kname[i]]
        if over or krow:
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
    return table.drop(columns=["kname"]).assign(module_type=mtype, family=family, attention_kind=kinds,
                                                kernel=kernel, seq_q=dims[:, 0], seq_kv=dims[:, 1],
                                                batch_heads=dims[:, 2], head_dim=dims[:, 3])


def _kernel_table(ev: EventTable, krow: np.ndarray, table: pd.DataFrame, run: dict[str, Any]) -> pd.DataFrame:
    """GPU time per (repeat, kernel, kind, device, stream) and the op-table row it went to (op, family)."""
    if not len(krow):
        return pd.DataFrame(columns=KERNEL_COLUMNS)
    df = pd.DataFrame({"row": krow, "name": ev.kernel_name_id, "kind": ev.kernel_kind, "device": ev.kernel_device,
                       "stream": ev.kernel_stream, "ns": ev.kernel_ns})
    g = df.groupby(["row", "name", "kind", "device", "stream"], sort=False).agg(
        calls=("ns", "size"), ns=("ns", "sum")).reset_index()
    rows = table.iloc[g["row"].to_numpy()]
    out = pd.DataFrame({
        "run_id": run.get("run_id", ""), "repeat": rows["repeat"].to_numpy(),
        "kernel": np.asarray(ev.kernel_names, dtype=object)[g["name"].to_numpy()],
        "kind": np.asarray(KIND_NAMES, dtype=object)[g["kind"].to_numpy()], "device": g["device"].to_numpy(),
        "stream": g["stream"].to_numpy(), "op": rows["op"].to_numpy(), "family": rows["family"].to_numpy(),
        "calls": g["calls"].to_numpy(), "time_s": g["ns"].to_numpy() / 1e9})
    return out.sort_values("time_s", ascending=False, kind="stable").reset_index(drop=True)[KERNEL_COLUMNS]


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
