"""Profiler events as columns, and their call tree, without a Python object per event.

A long trace holds millions of events; `torch.profiler.profile.events()` builds
a Python FunctionEvent per event and links them into a tree, which takes longer
than the run it describes (113 µs per event here). genprof keeps events as
numpy columns instead:

- `from_profile(prof)`: the raw kineto results of a finished profile: name,
  start, end, thread and correlation id of every CPU event (a few pybind calls
  each); shapes, strides, dtypes and argument values are read later, only for
  the events that become op-table rows (a tensor list's shapes included).
- `from_chrome_trace(path)`: a Chrome/Kineto trace file (`.json` or
  `.json.gz`, as `export_chrome_trace` or any Kineto producer writes it),
  parsed as a stream, one event object at a time, keeping only the columns;
  memory stays proportional to the columns, not to the file.

`tree(events)` then links every CPU event to its parent with array operations
only: within a thread, sorted by (start, -end), the parent of an event is the
nearest earlier event that ends after it starts, which is exactly what a stack
walk finds, computed for all events at once by binary lifting over a sparse
table of running maxima. Depth, ancestors of each kind, children's time and
device time of whole subtrees follow level by level (a few dozen array
operations, one per tree level).

GPU kernels (and memcpy/memset) are device events; their time goes to the CPU
event that launched them (same correlation id) and to all its ancestors.
"""

from __future__ import annotations

import gzip
from array import array
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from genprof.errors import GenprofError

ArgsFn = Callable[[Sequence[int]], list[tuple[list, list, list, list]]]
ShapesFn = Callable[[Sequence[int]], list[str]]
DEVICE_CATEGORIES = frozenset({"kernel", "gpu_memcpy", "gpu_memset", "Kernel", "Memcpy", "Memset"})
SKIP_CATEGORIES = frozenset({"Trace", "gpu_user_annotation", "ac2g", "fwdbwd"})


@dataclass
class EventTable:
    """CPU events as columns (index = event), plus the device events that CPU events launched.

    `names[name_id[i]]` is event i's name; `start`/`end` in ns; `thread` a code per
    (process, thread); `corr` the correlation id (0: none). `shapes(indices)` gives
    the input shapes of the named events as the op table writes them
    (`str(list)`), `args(indices)` their (input shapes, input dtypes, concrete
    inputs, input strides), both in the live profiler's structured form: a
    tensor list's entry is the list of its tensors' shapes (strides).
    """

    names: list[str]
    name_id: np.ndarray
    thread: np.ndarray
    start: np.ndarray
    end: np.ndarray
    corr: np.ndarray
    shapes: ShapesFn
    args: ArgsFn
    kernel_corr: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    kernel_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    kernel_name: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.name_id)


class _Interner:
    def __init__(self) -> None:
        self.ids: dict[Any, int] = {}
        self.values: list[Any] = []

    def __call__(self, value: Any) -> int:
        i = self.ids.get(value)
        if i is None:
            i = self.ids[value] = len(self.values)
            self.values.append(value)
        return i


# ------------------------------------------------------------------------------------- sources

def from_profile(prof: Any) -> EventTable:
    """The events of a finished torch.profiler.profile (its raw kineto results)."""
    raw = prof.profiler.kineto_results.events()
    is_cpu = np.fromiter((getattr(r.device_type(), "name", "") == "CPU" for r in raw), bool, len(raw))
    cpu_idx = np.flatnonzero(is_cpu)
    cpu = [raw[i] for i in cpu_idx]
    names = _Interner()
    name_id = np.fromiter((names(r.name()) for r in cpu), np.int32, len(cpu))
    start = np.fromiter((r.start_ns() for r in cpu), np.int64, len(cpu))
    dur = np.fromiter((r.duration_ns() for r in cpu), np.int64, len(cpu))
    thread = np.fromiter((r.start_thread_id() for r in cpu), np.int64, len(cpu))
    corr = np.fromiter((r.correlation_id() for r in cpu), np.int64, len(cpu))
    dev = [raw[i] for i in np.flatnonzero(~is_cpu)]

    def shapes(indices: Sequence[int]) -> list[str]:
        return [str(cpu[i].structured_input_shapes()) for i in indices]

    def args(indices: Sequence[int]) -> list[tuple[list, list, list, list]]:
        return [(cpu[i].structured_input_shapes(), cpu[i].dtypes(), cpu[i].concrete_inputs(),
                 cpu[i].structured_input_strides()) for i in indices]

    return EventTable(names.values, name_id, thread, start, start + dur, corr, shapes, args,
                      np.fromiter((r.correlation_id() for r in dev), np.int64, len(dev)),
                      np.fromiter((r.duration_ns() for r in dev), np.int64, len(dev)),
                      [r.name() for r in dev])


class _Ns(int):
    """A JSON fraction of microseconds read as exact integer nanoseconds."""


def _us_to_ns(text: str) -> _Ns:
    """Kineto writes times in microseconds with 3 decimals: read them exactly, without float rounding."""
    whole, dot, frac = text.partition(".")
    if dot and len(frac) <= 3 and frac.isdigit() and whole.lstrip("-").isdigit():
        ns = int(whole) * 1000
        return _Ns(ns + int(frac.ljust(3, "0")) * (-1 if whole.startswith("-") else 1))
    return _Ns(round(float(text) * 1000))


def _ns(value: Any) -> int:
    """A trace time field in ns: exact when written with decimals, else microseconds."""
    if isinstance(value, _Ns):
        return int(value)
    return round(float(value or 0) * 1000)


_WS = re.compile(r"[\s,]*")
_BLOCK = 8 << 20


def _open_text(path: Path):
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, "rt", encoding="utf-8", errors="replace")


def _events_stream(path: Path):
    """Yield the objects of a trace's `traceEvents` array (or of a bare JSON array), one at a time."""
    dec = json.JSONDecoder(parse_float=_us_to_ns)
    with _open_text(path) as f:
        buf = f.read(_BLOCK)
        eof = len(buf) < _BLOCK
        if buf.lstrip().startswith("["):
            pos = buf.index("[") + 1
        else:
            m = re.search(r'"traceEvents"\s*:\s*\[', buf)
            while m is None and not eof:  # the array may come after other keys
                more = f.read(_BLOCK)
                eof = len(more) < _BLOCK
                buf += more
                m = re.search(r'"traceEvents"\s*:\s*\[', buf)
            if m is None:
                raise GenprofError(f"{path}: not a Chrome/Kineto trace (no traceEvents array)")
            pos = m.end()
        while True:
            pos = _WS.match(buf, pos).end()
            if len(buf) - pos < (1 << 20) and not eof:
                more = f.read(_BLOCK)
                eof = len(more) < _BLOCK
                buf = buf[pos:] + more
                pos = _WS.match(buf, 0).end()
            if pos >= len(buf):
                raise GenprofError(f"{path}: trace ends inside the traceEvents array (truncated file?)")
            if buf[pos] == "]":
                return
            try:
                obj, pos = dec.raw_decode(buf, pos)
            except json.JSONDecodeError as e:
                raise GenprofError(f"{path}: not valid trace JSON near character {e.pos}: {e.msg}") from None
            yield obj


def from_chrome_trace(path: str | Path) -> EventTable:
    """The events of a Chrome/Kineto trace file (.json or .json.gz), parsed as a stream."""
    path = Path(path)
    if not path.is_file():
        raise GenprofError(f"trace file not found: {path}")
    names, threads, sigs = _Interner(), _Interner(), _Interner()
    name_id, thread, start, dur, corr, sig = (array("q") for _ in range(6))  # 8 bytes an event each
    k_corr: list[int] = []
    k_ns: list[int] = []
    k_name: list[str] = []
    sig_args: list[tuple[list, list, list, list]] = []
    for e in _events_stream(path):
        if e.get("ph") != "X":
            continue
        cat = e.get("cat", "")
        if cat in SKIP_CATEGORIES:
            continue
        a = e.get("args") or {}
        if cat in DEVICE_CATEGORIES:
            k_corr.append(int(a.get("correlation", 0) or 0))
            k_ns.append(_ns(e.get("dur", 0)))
            k_name.append(e.get("name", ""))
            continue
        name_id.append(names(e.get("name", "")))
        thread.append(threads((e.get("pid"), e.get("tid"))))
        start.append(_ns(e.get("ts", 0)))
        dur.append(_ns(e.get("dur", 0)))
        corr.append(int(a.get("correlation", 0) or 0))
        dims = a.get("Input Dims")
        if dims is None:
            sig.append(-1)
        else:
            types, conc, strides = a.get("Input type", []), a.get("Concrete Inputs", []), a.get("Input Strides", [])
            key = (repr(dims), repr(types), repr(conc), repr(strides))
            if key not in sigs.ids:
                sig_args.append(_live_args(dims, types, conc, strides))
            sig.append(sigs(key))
    if not name_id:
        raise GenprofError(f"{path}: the trace holds no CPU events")
    sig_arr = np.frombuffer(sig, np.int64)

    def args(indices: Sequence[int]) -> list[tuple[list, list, list, list]]:
        out = []
        for i in indices:
            s = sig_arr[i]
            if s < 0:
                out.append(([], [], [], []))
            else:
                out.append(sig_args[s])
        return out

    sig_shapes = [str(a[0]) for a in sig_args]

    def shapes(indices: Sequence[int]) -> list[str]:
        return ["[]" if sig_arr[i] < 0 else sig_shapes[sig_arr[i]] for i in indices]

    st = np.frombuffer(start, np.int64)
    return EventTable(names.values, np.frombuffer(name_id, np.int64).astype(np.int32), np.frombuffer(thread, np.int64),
                      st, st + np.frombuffer(dur, np.int64), np.frombuffer(corr, np.int64), shapes, args,
                      np.asarray(k_corr, np.int64), np.asarray(k_ns, np.int64), k_name)


def _concrete(text: Any) -> Any:
    """A Kineto 'Concrete Inputs' string as the value the live profiler reports ('' -> None,
    '[2, 2]' -> [2, 2], '0.' -> 0.0, 'inf' -> inf, '[2., 2.]' -> [2.0, 2.0])."""
    if not isinstance(text, str):
        return text
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    if text.startswith("[") and text.endswith("]"):
        items = [_concrete(t.strip()) for t in text[1:-1].split(",")] if text[1:-1].strip() else []
        if all(isinstance(v, (int, float)) for v in items):
            return items
    return text


def _live_args(dims: list, types: list, conc: list, strides: list | None = None) -> tuple[list, list, list, list]:
    """Trace-file arguments in the live profiler's structured form (shapes, dtypes, values, strides)."""
    strides = list(strides) if isinstance(strides, list) and len(strides) == len(dims) else [[] for _ in dims]
    return list(dims), list(types), [_concrete(c) for c in conc], strides


# ----------------------------------------------------------------------------------------- tree

@dataclass
class Tree:
    """The call tree of an EventTable's CPU events, in sorted order (thread, start, -end).

    `order[p]` is the event at sorted position p; every other array is indexed by
    sorted position: `parent` (-1: a root), `depth`, `levels[d]` (positions at
    depth d), `child_ns` (summed duration of the children), `device_ns` (kernel time
    of the subtree). `launch_pos[i]` is the position of the CPU event that launched
    kernel `kernel_idx[i]` (GPU traces only); `kernels_of(pos)` names the kernels
    launched by the children of `pos` (built on first use: only fused attention rows ask).
    """

    order: np.ndarray
    parent: np.ndarray
    depth: np.ndarray
    levels: list[np.ndarray]
    child_ns: np.ndarray
    device_ns: np.ndarray
    launch_pos: np.ndarray
    kernel_idx: np.ndarray
    kernel_names: list[str]
    _children: tuple[np.ndarray, np.ndarray] | None = None
    _kernels: dict[int, list[str]] | None = None

    def kernels_of(self, pos: int) -> list[str]:
        if self._kernels is None:
            self._kernels = {}
            for lp, k in zip(self.launch_pos.tolist(), self.kernel_idx.tolist()):
                p = int(self.parent[lp])
                if p >= 0:
                    self._kernels.setdefault(p, []).append(self.kernel_names[k])
        return self._kernels.get(pos, [])

    def children(self, pos: int) -> np.ndarray:
        if self._children is None:
            has = np.flatnonzero(self.parent >= 0)
            by_parent = has[np.argsort(self.parent[has], kind="stable")]
            offsets = np.concatenate([[0], np.cumsum(np.bincount(self.parent[has], minlength=len(self.parent)))])
            self._children = (by_parent, offsets)
        by_parent, offsets = self._children
        return by_parent[offsets[pos]:offsets[pos + 1]]


def nearest_enclosing(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """For each i (sorted by start): the largest j < i with end[j] > start[i], or -1.

    Binary lifting over a sparse table: level k holds the maximum of end over the
    2^k positions ending at p; from i-1 downwards, each whole window whose maximum
    is <= start[i] is skipped, largest windows first.
    """
    n = len(start)
    if n == 0:
        return np.zeros(0, np.int64)
    table = [end]
    w = 1
    while 2 * w <= n:
        prev = table[-1]
        cur = prev.copy()
        cur[w:] = np.maximum(prev[w:], prev[:-w])
        table.append(cur)
        w *= 2
    pos = np.arange(n, dtype=np.int64) - 1
    for k in range(len(table) - 1, -1, -1):
        w = 1 << k
        ok = pos - w + 1 >= 0
        idx = np.flatnonzero(ok)
        skip = table[k][pos[idx]] <= start[idx]
        pos[idx[skip]] -= w
    found = pos >= 0
    found[found] = end[pos[found]] > start[found]
    return np.where(found, pos, -1)


def tree(ev: EventTable) -> Tree:
    order = np.lexsort((np.arange(len(ev)), -ev.end, ev.start, ev.thread))
    start, end, thread = ev.start[order], ev.end[order], ev.thread[order]
    parent = nearest_enclosing(start, end)
    has = parent >= 0
    has[has] = thread[parent[has]] == thread[has]  # the nearest earlier event of another thread is no parent
    parent = np.where(has, parent, -1)
    depth = _depth(parent)
    by_depth = np.argsort(depth, kind="stable")
    counts = np.bincount(depth) if len(depth) else np.zeros(0, np.int64)
    levels = np.split(by_depth, np.cumsum(counts)[:-1]) if len(depth) else []
    dur = end - start
    child_ns = np.bincount(parent[has], weights=dur[has], minlength=len(order)).astype(np.int64)
    device_ns = np.zeros(len(order), np.int64)
    launch_pos = np.zeros(0, np.int64)
    kernel_idx = np.zeros(0, np.int64)
    with_corr = np.flatnonzero(ev.corr != 0)
    if len(ev.kernel_corr) and len(with_corr):
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        # correlation id -> the first CPU event (in the source's order) that carries it
        corr_vals, first = np.unique(ev.corr[with_corr], return_index=True)
        k = np.minimum(np.searchsorted(corr_vals, ev.kernel_corr), len(corr_vals) - 1)
        kernel_idx = np.flatnonzero(corr_vals[k] == ev.kernel_corr)
        launch_pos = inv[with_corr[first][k[kernel_idx]]]
        device_ns += np.bincount(launch_pos, weights=ev.kernel_ns[kernel_idx], minlength=len(order)).astype(np.int64)
        for lvl in reversed(levels[1:]):  # subtree sums, deepest level first
            np.add.at(device_ns, parent[lvl], device_ns[lvl])
    return Tree(order, parent, depth, levels, child_ns, device_ns, launch_pos, kernel_idx, ev.kernel_name)


def _depth(parent: np.ndarray) -> np.ndarray:
    """Number of ancestors of each node, by pointer doubling (O(log depth) array passes).

    `dist[i]` counts the edges from i to `jump[i]`; each pass adds the jumped-to
    node's own distance and jumps again, until every jump has passed the root.
    """
    dist = (parent >= 0).astype(np.int64)
    jump = parent.copy()
    while True:
        live = np.flatnonzero(jump >= 0)
        if not len(live):
            return dist
        j = jump[live]
        dist[live] = dist[live] + dist[j]
        jump[live] = jump[j]
