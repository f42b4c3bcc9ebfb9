"""An independent count of FLOPs and bytes, to test genprof's counts against.

genprof counts from what a profiler trace records of each op (input shapes,
dtypes, argument values) and replays the op on the meta device for its
outputs. This module never looks at a trace and never replays anything: it
runs the same inference again and watches the real tensors.

- Bytes: a TorchDispatchMode records the real inputs and outputs of every op.
  The inference runs under `torch.inference_mode()` (as genprof's does), where
  the mode sees the ops Python called (`aten::linear`, `aten::group_norm`, SDPA,
  ...) before they decompose: the same ops the profiler records as top-level.
- FLOPs: `torch.utils.flop_counter.FlopCounterMode`, with SDPA held to its
  MATH backend so that attention is counted as the matmuls it is made of.

Both are attributed to (phase, step) by a `Phases` object of our own.
The conventions of "bytes moved" (what counts as read and as written) are
definitions, the same on both sides, written out again here from torch's op
schemas and the real tensors' storages:
- an output that shares its storage with an input and is not marked written by
  the schema is an alias (a view): the op writes nothing, counts 0;
- allocation (`empty*`) and in-place changes of metadata (`detach_`, `resize_`,
  `squeeze_`, ...) write no data; `*_like` factories read nothing of
  their input; fill and random ops (`fill_`, `zero_`, `normal_`, `copy_`)
  write their `self` without reading it; an `out=` argument is written, not read;
- an embedding reads the rows it gathers (its output), not its whole table.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterator

import pandas as pd
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

OUTSIDE_PHASES, NO_STEP = "(outside phases)", -1
ALLOCATION = {"aten::empty", "aten::empty_like", "aten::empty_strided", "aten::new_empty",
              "aten::new_empty_strided", "aten::empty_permuted"}
LIKE = {"aten::zeros_like", "aten::ones_like", "aten::full_like", "aten::rand_like", "aten::randn_like",
        "aten::randint_like", "aten::new_zeros", "aten::new_ones", "aten::new_full", "aten::new_tensor"}
METADATA_IN_PLACE = {"aten::detach_", "aten::resize_", "aten::resize_as_", "aten::as_strided_", "aten::set_",
                     "aten::squeeze_", "aten::unsqueeze_", "aten::t_", "aten::transpose_", "aten::swapdims_",
                     "aten::swapaxes_", "aten::requires_grad_"}
FILLS = {"aten::fill_", "aten::zero_", "aten::copy_", "aten::normal_", "aten::uniform_", "aten::random_",
         "aten::bernoulli_", "aten::exponential_", "aten::geometric_", "aten::cauchy_", "aten::log_normal_"}


@dataclass
class Call:
    """One op call: where it ran, what it is, the shapes key the profiler records, its bytes, and
    what a profiler record of it would hold or lack (for the differences by design)."""

    phase: str
    step: int
    op: str
    shapes: str
    nbytes: int
    values: dict[str, Any]  # non-tensor arguments
    tensors: dict[str, list[torch.Size]]  # argument name -> shapes of its tensors
    wrapped: int  # bytes of Python numbers passed for Tensor arguments (recorded as 0-dim tensors)
    recorded_in: int  # bytes of the inputs a profiler record shows (no `Tensor?[]`), wrapped numbers included
    list_dtypes: frozenset  # dtypes of the tensors of Tensor[] arguments
    dtypes: frozenset  # dtypes of every tensor the call read or returned
    moved: bool  # returned a tensor on another device than its inputs

class _Phases:
    """The workload's Phases protocol, keeping the current (phase, step) and FLOPs per (phase, step)."""

    def __init__(self) -> None:
        self.where = (OUTSIDE_PHASES, NO_STEP)
        self.flops: dict[tuple[str, int], int] = defaultdict(int)
        self.counter: FlopCounterMode | None = None
        self._last = 0

    def _move(self, where: tuple[str, int]) -> None:
        total = self.counter.get_total_flops() if self.counter is not None else 0
        self.flops[self.where] += total - self._last
        self._last, self.where = total, where

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        before = self.where
        self._move((name, NO_STEP))
        try:
            yield
        finally:
            self._move(before)

    @contextlib.contextmanager
    def step(self, index: int) -> Iterator[None]:
        before = self.where
        self._move((before[0], int(index)))
        try:
            yield
        finally:
            self._move(before)


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _tensors(v: Any) -> list[torch.Tensor]:
    if isinstance(v, torch.Tensor):
        return [v]
    if isinstance(v, (list, tuple)):
        return [t for x in v for t in _tensors(x)]
    return []


def _shape_key(arg: Any, v: Any) -> Any:
    """The shape the profiler records for an argument: a tensor's, a tensor list's (not a `Tensor?[]`)."""
    if isinstance(v, torch.Tensor):
        return list(v.shape)
    if str(arg.type) == "List[Tensor]" and isinstance(v, (list, tuple)):
        return [list(x.shape) for x in v]
    return []


def call_bytes(op: str, schema: Any, values: dict[str, Any], out: Any) -> int:
    """Bytes read + written by one call, from its real tensors (the conventions above)."""
    written_args = {a.name for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write}
    out_args = {a.name for a in schema.arguments if a.name in written_args and a.kwarg_only}
    ins = {name: _tensors(v) for name, v in values.items()}
    in_storage = {_storage(t) for ts in ins.values() for t in ts}
    written_storage = {_storage(t) for name in written_args for t in ins.get(name, [])}
    outs = _tensors(out)
    written = [t for t in outs if _storage(t) in written_storage or _storage(t) not in in_storage]
    if op in ALLOCATION or op in METADATA_IN_PLACE or (outs and not written):
        return 0
    read = 0
    for name, ts in ins.items():
        if name in out_args or op in LIKE or (name in written_args and op in FILLS):
            continue
        if op == "aten::embedding" and name == "weight":
            read += sum(_nbytes(t) for t in outs)
            continue
        read += sum(_nbytes(t) for t in ts)
    return read + sum(_nbytes(t) for t in written)


class _Recorder(TorchDispatchMode):
    def __init__(self, phases: _Phases) -> None:
        super().__init__()
        self.phases = phases
        self.calls: list[Call] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        schema = func._schema
        values: dict[str, Any] = {}
        for i, a in enumerate(schema.arguments):
            if i < len(args) and not a.kwarg_only:
                values[a.name] = args[i]
            elif a.name in kwargs:
                values[a.name] = kwargs[a.name]
            else:
                values[a.name] = a.default_value if a.has_default_value() else None
        op = schema.name
        shapes = str([_shape_key(a, values[a.name]) for a in schema.arguments])
        wrapped = recorded = 0
        list_dtypes: set = set()
        for a in schema.arguments:
            v, t = values[a.name], str(a.type)
            if t in ("Tensor", "Optional[Tensor]") and isinstance(v, (bool, int, float, complex)):
                wrapped += _WRAPPED[type(v)]
            if t in ("Tensor", "Optional[Tensor]", "List[Tensor]"):
                recorded += sum(_nbytes(x) for x in _tensors(v))
            if t == "List[Tensor]":
                list_dtypes |= {x.dtype for x in _tensors(v)}
        every = _tensors(list(values.values())) + _tensors(out)
        moved = len({t.device for t in every}) > 1
        where = self.phases.where
        self.calls.append(Call(where[0], where[1], op, shapes, call_bytes(op, schema, values, out),
                               {k: v for k, v in values.items() if not _tensors(v)},
                               {k: [t.shape for t in _tensors(v)] for k, v in values.items() if _tensors(v)},
                               wrapped, recorded + wrapped, frozenset(list_dtypes),
                               frozenset(t.dtype for t in every), moved))
        return out


_WRAPPED = {bool: 1, int: 8, float: 8, complex: 16}  # as the profiler records them: bool, long int, double


@dataclass
class Count:
    calls: list[Call]
    flops: dict[tuple[str, int], int]  # (phase, step) -> FLOPs counted by FlopCounterMode (MATH attention)


def traced(built: Any, device: str, labels: dict[str, Any]) -> tuple[pd.DataFrame, Count]:
    """genprof's op table of one traced inference, and the independent count of two more runs of
    the same model: one under the recorder (bytes), one under the FLOP counter.

    Three runs, not one: under a dispatch mode the profiler records the mode between an op and the
    ops it calls (so genprof's trace would not be the usual one), and FlopCounterMode decomposes an
    op it has no formula for with torch's Python decompositions, which change what aliases what
    (eval `dropout` becomes a copy). The FLOP run is under `no_grad` rather than `inference_mode`,
    so that ops reach the counter already decomposed by their C++ kernels."""
    from genprof.profiler import measure_trace

    ops = measure_trace(built, torch.device(device), 1, 0, labels).ops
    ours = _Phases()
    recorder = _Recorder(ours)
    with torch.inference_mode(), recorder:
        built.run(ours)
    flops = _Phases()
    flops.counter = FlopCounterMode(display=False)
    with sdpa_kernel([SDPBackend.MATH]), torch.no_grad(), flops.counter:
        built.run(flops)
    flops._move(flops.where)
    return ops, Count(recorder.calls, dict(flops.flops))


def masked_pairs(lq: int, lk: int) -> int:
    """(query, key) pairs a causal mask (torch's `is_causal`: top-left aligned) removes."""
    return int(lq * lk - torch.ones(lq, lk, dtype=torch.bool).tril().sum())


# ------------------------------------------------------------------------------------------- comparison

# Where genprof's count and this one differ by design, and why. `expected_bytes` applies each one to
# a recorded call: what genprof must count, given what a profiler record of the call holds.
BY_DESIGN = {
    "causal attention": "genprof counts the (query, key) pairs a fused kernel computes under a causal "
                        "mask; FlopCounterMode, on the MATH path, counts the whole Lq x Lk matrix: the "
                        "masked pairs (counted here with torch.tril) are taken off its count",
    "python number": "a Python number passed for a Tensor argument is recorded as a 0-dim tensor "
                     "(8 bytes) and genprof counts it as read",
    "tensor list dtype": "the profiler records a tensor list's shapes, not its dtype: genprof assumes the "
                         "run's floating dtype, so a list of integers counts at that element size",
    "unrecorded inputs": "`index`'s and `index_put_`'s indices (a `Tensor?[]`) are not recorded, and the "
                         "output size of `nonzero` or `unique` depends on the data: genprof counts the "
                         "recorded inputs only",
    "built from Python data": "`torch.tensor(data)` makes its tensor below the dispatch modes: the profiler "
                              "records its `empty`/`to`, this recorder does not see them",
    "device move": "a Device argument is not recorded: `to(device)` that keeps the dtype is replayed on one "
                   "device, where it is a no-op (0 bytes)",
}
UNRECORDED_INPUTS = {"aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_",
                     "aten::nonzero", "aten::nonzero_numpy", "aten::masked_select", "aten::unique",
                     "aten::_unique2", "aten::unique_consecutive", "aten::unique_dim"}
BUILT_FROM_DATA = {"aten::empty", "aten::to", "aten::_to_copy", "aten::copy_", "aten::lift_fresh"}
SDPA = {"aten::scaled_dot_product_attention", "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_flash_attention", "aten::_scaled_dot_product_efficient_attention",
        "aten::_scaled_dot_product_cudnn_attention"}


def expected_bytes(call: Call, list_dtype: torch.dtype) -> tuple[int, str]:
    """(bytes genprof must count for this call, the BY_DESIGN reason it differs from call.nbytes or '')."""
    if call.op in UNRECORDED_INPUTS:
        return call.recorded_in, "unrecorded inputs"
    if call.op == "aten::to" and call.moved and len(call.dtypes) == 1:
        return 0, "device move"
    nbytes, why = call.nbytes, ""
    if call.list_dtypes and call.list_dtypes != {list_dtype} and nbytes:
        (real,) = call.dtypes  # a list op whose tensors share one dtype (cat, stack)
        nbytes, why = nbytes // real.itemsize * list_dtype.itemsize, "tensor list dtype"
    if call.wrapped and nbytes:
        nbytes, why = nbytes + call.wrapped, why or "python number"
    return nbytes, why


def masked_flops(call: Call) -> int:
    """FLOPs of the pairs a causal mask removes from one SDPA call (0 if not causal)."""
    if call.op not in SDPA or not call.values.get("is_causal"):
        return 0
    q, k, v = call.tensors["query"][0], call.tensors["key"][0], call.tensors["value"][0]
    return 2 * int(torch.Size(q[:-2]).numel()) * masked_pairs(q[-2], k[-2]) * (q[-1] + v[-1])


def compare(ops: pd.DataFrame, ind: Count, dtype: torch.dtype, device: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per call site, per phase) tables of genprof's counts beside the independent ones.

    Per site (phase, step, op, input shapes): calls and bytes of both, with the reason of any
    difference by design. Per phase: FLOPs and bytes of both, the independent FLOPs less the
    masked pairs of causal attention that genprof counted as fused."""
    key = ["phase", "step", "op", "input_shapes"]
    g = ops[ops["op"] != "[overhead]"]
    mine = g.groupby(key).agg(calls=("calls", "sum"), bytes=("bytes", "sum"), flops=("flops", "sum"),
                              kernel=("kernel", "first"))
    rows: dict[tuple, dict[str, Any]] = {}
    masked: dict[str, int] = defaultdict(int)
    for c in ind.calls:
        k = (c.phase, c.step, c.op, c.shapes)
        r = rows.setdefault(k, {"ind_calls": 0, "ind_bytes": 0, "expected": 0, "why": ""})
        exp, why = expected_bytes(c, dtype)
        r["ind_calls"] += 1
        r["ind_bytes"] += c.nbytes
        r["expected"] += exp
        r["why"] = r["why"] or why
        kernel = str(mine["kernel"].get(k, "")) if k in mine.index else ""
        if device == "meta" or "_attention_math" not in kernel:
            masked[c.phase] += masked_flops(c)
    theirs = pd.DataFrame.from_dict(rows, orient="index")
    theirs.index = pd.MultiIndex.from_tuples(theirs.index, names=key)
    sites = mine.join(theirs, how="outer").reset_index()
    sites[["calls", "bytes", "ind_calls", "ind_bytes", "expected"]] = \
        sites[["calls", "bytes", "ind_calls", "ind_bytes", "expected"]].fillna(0).astype("int64")
    sites["why"] = sites["why"].fillna("")
    unseen = sites["ind_calls"].eq(0) & sites["op"].isin(BUILT_FROM_DATA)
    sites.loc[unseen, "expected"] = sites.loc[unseen, "bytes"]
    sites.loc[unseen, "why"] = "built from Python data"
    flops = defaultdict(int)
    for (phase, _), f in ind.flops.items():
        flops[phase] += f
    phases = sites.groupby("phase").agg(flops=("flops", "sum"), bytes=("bytes", "sum"),
                                        expected_bytes=("expected", "sum")).reset_index()
    phases["ind_flops"] = [flops.get(p, 0) - masked.get(p, 0) for p in phases["phase"]]
    phases["ind_flops_math"] = [flops.get(p, 0) for p in phases["phase"]]
    return sites, phases
