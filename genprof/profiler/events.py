"""Profiler events as columns, and their call tree, without a Python object per event.

A long trace holds millions of events; `torch.profiler.profile.events()` builds
a Python FunctionEvent per event and links them into a tree, which takes longer
than the run it describes (113 µs per event here). genprof keeps events as
numpy columns instead:

- `from_profile(prof)`: the raw kineto results of a finished profile: name,
  start, end, thread and correlation id of every CPU event (a few pybind calls
  each), the category of each distinct name; shapes, strides, dtypes and
  argument values are read later, only for the events that become op-table
  rows (a tensor list's shapes included).
- `from_chrome_trace(path)`: a Chrome/Kineto trace file (`.json` or
  `.json.gz`, as `export_chrome_trace` or any Kineto producer writes it),
  parsed as a stream (`genprof.profiler.tracefile`).

`tree(events)` then links every CPU event to its parent with array operations
only: within a thread, sorted by (start, -end), the parent of an event is the
nearest earlier event that ends after it starts, which is exactly what a stack
walk finds, computed for all events at once by binary lifting over a sparse
table of running maxima. Depth, ancestors of each kind, children's time and
device time of whole subtrees follow level by level (a few dozen array
operations, one per tree level).

Device events (GPU kernels, memcpy, memset) are columns too: correlation id,
start, duration, kind, device, stream and an interned name. Each goes to the
runtime call that launched it (cudaLaunchKernel, cuLaunchKernel,
hipLaunchKernel, cudaMemcpyAsync, ...: a CPU event of a runtime category with
the same correlation id), and its time to that call and all its ancestors; a
device event whose launch is not in the trace has no launching position.
What an event's name and category mean (op, scope, runtime call) is
`genprof.profiler.naming`; this module only reads and links.
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

ArgsFn = Callable[[Sequence[int]], list[tuple[list, list, list, list]]]
# Device-event categories (Kineto's current and older spellings) and their kind code.
DEVICE_KINDS = {"kernel": 0, "Kernel": 0, "gpu_memcpy": 1, "Memcpy": 1, "gpu_memset": 2, "Memset": 2}
KIND_NAMES = ("kernel", "memcpy", "memset")
# CPU-side categories of runtime/driver calls: the events that carry a launch's correlation id.
RUNTIME_CATEGORIES = frozenset({"cuda_runtime", "cuda_driver", "Runtime", "privateuse1_runtime",
                                "privateuse1_driver", "xpu_runtime", "xpu_driver", "mtia_runtime"})
# Not work: trace spans, GPU-side copies of CPU annotations, flows, GPU sync waits, profiler overhead.
SKIP_CATEGORIES = frozenset({"Trace", "gpu_user_annotation", "ac2g", "fwdbwd", "async_cpu_to_gpu",
                             "cuda_sync", "overhead", "cuda_profiler_range", "cpu_instant_event"})


def _i64() -> np.ndarray:
    return np.zeros(0, np.int64)


@dataclass
class EventTable:
    """CPU events as columns (index = event), plus device events as columns of their own.

    `names[name_id[i]]` is event i's name and `name_cat[name_id[i]]` its category
    (`cpu_op`, `user_annotation`, `cuda_runtime`, ...; '' when unknown); `start`/`end` in
    ns; `thread` a code per (process, thread); `corr` the correlation id (0: none).
    `args(indices)` gives the named events' (input shapes, input dtypes, concrete
    inputs, input strides) in the live profiler's structured form: a tensor list's
    entry is the list of its tensors' shapes (strides). Device events:
    `kernel_corr`, `kernel_ns` (duration), `kernel_start`, `kernel_kind` (0 kernel,
    1 memcpy, 2 memset), `kernel_device`, `kernel_stream`, `kernel_name_id` into
    `kernel_names`. `meta`: the trace file's top-level keys other than its events
    (deviceProperties, distributedInfo, ...); `reading`: how a trace file was read (`processes`, the
    helpers' peak memory growth `helper_peak_bytes`, the reason for a `fallback` to one pass).
    """

    names: list[str]
    name_id: np.ndarray
    thread: np.ndarray
    start: np.ndarray
    end: np.ndarray
    corr: np.ndarray
    args: ArgsFn
    name_cat: list[str] = field(default_factory=list)
    kernel_corr: np.ndarray = field(default_factory=_i64)
    kernel_ns: np.ndarray = field(default_factory=_i64)
    kernel_start: np.ndarray = field(default_factory=_i64)
    kernel_kind: np.ndarray = field(default_factory=_i64)
    kernel_device: np.ndarray = field(default_factory=_i64)
    kernel_stream: np.ndarray = field(default_factory=_i64)
    kernel_name_id: np.ndarray = field(default_factory=_i64)
    kernel_names: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    reading: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.name_id)

    def span_ns(self) -> tuple[int, int]:
        """(first start, last end) in ns over CPU and device events."""
        lo, hi = int(self.start.min()), int(self.end.max())
        if len(self.kernel_start):
            lo = min(lo, int(self.kernel_start.min()))
            hi = max(hi, int((self.kernel_start + self.kernel_ns).max()))
        return lo, hi

    def is_runtime(self) -> np.ndarray:
        """Per distinct name: whether it is a runtime/driver call (the events that launch device work)."""
        return np.fromiter((c in RUNTIME_CATEGORIES for c in self.name_cat), bool, len(self.names)) \
            if len(self.name_cat) == len(self.names) else np.zeros(len(self.names), bool)


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
    ids: dict[str, int] = {}
    names: list[str] = []
    cats: list[str] = []
    name_id = np.empty(len(cpu), np.int32)
    for k, r in enumerate(cpu):  # the category is asked once per distinct name
        n = r.name()
        i = ids.get(n)
        if i is None:
            i = ids[n] = len(names)
            names.append(n)
            cats.append(_category(r))
        name_id[k] = i
    start = np.fromiter((r.start_ns() for r in cpu), np.int64, len(cpu))
    dur = np.fromiter((r.duration_ns() for r in cpu), np.int64, len(cpu))
    thread = np.fromiter((r.start_thread_id() for r in cpu), np.int64, len(cpu))
    corr = np.fromiter((r.correlation_id() for r in cpu), np.int64, len(cpu))
    dev, kinds = [], []
    for i in np.flatnonzero(~is_cpu).tolist():
        kind = DEVICE_KINDS.get(_category(raw[i]) or "kernel")
        if kind is not None:  # GPU-side annotations and the like are not work
            dev.append(raw[i])
            kinds.append(kind)
    knames = _Interner()

    def args(indices: Sequence[int]) -> list[tuple[list, list, list, list]]:
        return [(cpu[i].structured_input_shapes(), cpu[i].dtypes(), cpu[i].concrete_inputs(),
                 cpu[i].structured_input_strides()) for i in indices]

    n = len(dev)
    return EventTable(
        names, name_id, thread, start, start + dur, corr, args, cats,
        kernel_corr=np.fromiter((r.correlation_id() for r in dev), np.int64, n),
        kernel_ns=np.fromiter((r.duration_ns() for r in dev), np.int64, n),
        kernel_start=np.fromiter((r.start_ns() for r in dev), np.int64, n),
        kernel_kind=np.asarray(kinds, np.int64),
        kernel_device=np.fromiter((r.device_index() for r in dev), np.int64, n),
        kernel_stream=np.fromiter((r.device_resource_id() for r in dev), np.int64, n),
        kernel_name_id=np.fromiter((knames(r.name()) for r in dev), np.int64, n),
        kernel_names=knames.values)


def _category(r: Any) -> str:
    """A raw event's category as the trace file writes it ('' where this torch does not say)."""
    try:
        return r.activity_type()
    except AttributeError:  # torch before activity_type(): annotations are all it can tell apart
        return "user_annotation" if getattr(r, "is_user_annotation", lambda: False)() else ""


def from_chrome_trace(path: str | Path) -> EventTable:
    """The events of a Chrome/Kineto trace file (.json or .json.gz), parsed as a stream."""
    from genprof.profiler.tracefile import read

    return read(path)


# ----------------------------------------------------------------------------------------- tree

@dataclass
class Tree:
    """The call tree of an EventTable's CPU events, in sorted order (thread, start, -end).

    `order[p]` is the event at sorted position p; every other array is indexed by
    sorted position: `parent` (-1: a root), `depth`, `levels[d]` (positions at
    depth d), `child_ns` (summed duration of the children), `device_ns` (kernel time
    of the subtree). `launch_pos[i]` is the position of the CPU event that launched
    device event `kernel_idx[i]` (GPU traces only); `kernel_pos[k]` the same for every
    device event k (-1: its launch is not in the trace); `kernels_of(pos)` names the
    kernels launched by the children of `pos` (built on first use: only fused attention
    rows ask).
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
    kernel_name_id: np.ndarray
    kernel_pos: np.ndarray
    _children: tuple[np.ndarray, np.ndarray] | None = None
    _kernels: dict[int, list[str]] | None = None

    def kernels_of(self, pos: int) -> list[str]:
        if self._kernels is None:
            self._kernels = {}
            for lp, k in zip(self.launch_pos.tolist(), self.kernel_idx.tolist()):
                p = int(self.parent[lp])
                if p >= 0:
                    self._kernels.setdefault(p, []).append(self.kernel_names[self.kernel_name_id[k]])
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
    kernel_pos = np.full(len(ev.kernel_corr), -1, np.int64)
    with_corr = _launch_candidates(ev)
    if len(ev.kernel_corr) and len(with_corr):
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        # correlation id -> the first launching CPU event (in the source's order) that carries it
        corr_vals, first = np.unique(ev.corr[with_corr], return_index=True)
        k = np.minimum(np.searchsorted(corr_vals, ev.kernel_corr), len(corr_vals) - 1)
        kernel_idx = np.flatnonzero((corr_vals[k] == ev.kernel_corr) & (ev.kernel_corr != 0))
        launch_pos = inv[with_corr[first][k[kernel_idx]]]
        kernel_pos[kernel_idx] = launch_pos
        device_ns += np.bincount(launch_pos, weights=ev.kernel_ns[kernel_idx], minlength=len(order)).astype(np.int64)
        for lvl in reversed(levels[1:]):  # subtree sums, deepest level first
            np.add.at(device_ns, parent[lvl], device_ns[lvl])
    return Tree(order, parent, depth, levels, child_ns, device_ns, launch_pos, kernel_idx, ev.kernel_names,
                ev.kernel_name_id, kernel_pos)


def _launch_candidates(ev: EventTable) -> np.ndarray:
    """The CPU events whose correlation id can name a launch: runtime/driver calls when the trace says
    which events those are (a live profile also gives ops a correlation id, from another numbering),
    else every CPU event that carries one."""
    with_corr = ev.corr != 0
    runtime = with_corr & ev.is_runtime()[ev.name_id] if len(ev) else with_corr
    return np.flatnonzero(runtime if runtime.any() else with_corr)


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


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No garbage collection inside: reading events allocates millions of small containers and no
    cycles, and each collection would rescan the whole heap."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
