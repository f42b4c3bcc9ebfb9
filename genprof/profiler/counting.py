"""FLOPs, bytes and attention sequence lengths of one op, from its recorded inputs.

The profiler records, for each op, its input shapes, strides, dtypes and the
values of its scalar and list arguments (stride, padding, ...), never its
outputs. The outputs come from the op itself: `replay.py` runs the recorded
call once on the meta device (cached per signature). From inputs and outputs,
per top-level op:

- bytes = inputs read + outputs written, each at its own element size:
  * a view or alias (`view`, `transpose`, `expand`, `contiguous` of a
    contiguous tensor, `to` of the same dtype, eval `dropout`, ...) writes
    nothing and counts 0; so do an allocation (`empty*`) and an in-place
    change of metadata (`detach_`, `resize_`, `squeeze_`, ...);
  * an in-place op reads and writes its `self`; an `out=` argument is written,
    not read; the fill and random ops (`fill_`, `zero_`, `normal_`, `copy_`'s
    destination) write `self` without reading it; `*_like` factories read
    nothing of their input;
  * an embedding reads the rows it gathers, not its whole table.
- FLOPs of the compute ops only: 2·(output elements)·K for the matmul family
  (K the contracted size), 2·(output elements)·(C_in/groups)·prod(kernel)
  for a convolution (transposed: over input elements), 2·B·H·P·(D + D_v) for
  attention where P is the number of (query, key) pairs computed: L_q·L_k, or
  for a causal mask only the unmasked pairs when a fused kernel ran (it skips
  the masked blocks; SDPA's math path computes them all). Elementwise, norm
  and memory ops count 0 FLOPs (as torch's FlopCounterMode): their cost is in
  bytes.
- seq_q / seq_kv / batch_heads / head_dim for attention ops.

A recorded 0-dim double (int64, bool) tensor may have been a Python number or
a real tensor, and where the two give the output different dtypes (0-dim float
* 0-dim double) the op's casts decide (`_cast_reading`): on a CPU an op casts
its inputs to the dtype it computes in by `aten::to` calls, which the trace
records as its children. Where none is recorded (a GPU kernel can cast as
it reads), the number.

Where a replay is impossible (docs/op-table.md lists the rules): an op that
called other ops counts as those ops (`children`: `einsum`, whose equation is
not recorded, is its permutes and `bmm`; an op made of other ops whose ops
are all views, as an `einsum` that only permutes, is a view: 0 bytes); a
non-ATen attention op (the flash-attn package) uses the attention formula and
writes a query-shaped output; anything else counts its recorded inputs, read
(its output is unknown).
It does not time anything and knows nothing about modules.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Callable, Iterable, NamedTuple, Sequence

from genprof.profiler import replay as rp

Shape = Sequence[int]
Signature = tuple  # (op, shapes, dtypes, args, strides)

DTYPE_BYTES = {name: dt.itemsize for name, dt in rp.DTYPES.items()}
ALLOCATION = frozenset({"aten::empty", "aten::empty_like", "aten::empty_strided", "aten::new_empty",
                        "aten::new_empty_strided", "aten::empty_permuted"})
METADATA_IN_PLACE = frozenset({"aten::detach_", "aten::resize_", "aten::resize_as_", "aten::as_strided_",
                               "aten::set_", "aten::squeeze_", "aten::unsqueeze_", "aten::t_", "aten::transpose_",
                               "aten::swapdims_", "aten::swapaxes_", "aten::requires_grad_"})
WRITE_ONLY_SELF = frozenset({"aten::fill_", "aten::zero_", "aten::copy_", "aten::normal_", "aten::uniform_",
                             "aten::random_", "aten::bernoulli_", "aten::exponential_", "aten::geometric_",
                             "aten::cauchy_", "aten::log_normal_"})
METADATA_INPUTS = frozenset({"aten::zeros_like", "aten::ones_like", "aten::full_like", "aten::rand_like",
                             "aten::randn_like", "aten::randint_like", "aten::new_zeros", "aten::new_ones",
                             "aten::new_full", "aten::new_tensor"})
GATHER_ROWS = frozenset({"aten::embedding"})
MATMUL_K = {  # op -> (index of the first matrix operand); K is its last dimension
    "aten::linear": 0, "aten::mm": 0, "aten::bmm": 0, "aten::matmul": 0, "aten::mv": 0, "aten::dot": 0,
    "aten::addmm": 1, "aten::baddbmm": 1, "aten::_addmm_activation": 1, "aten::addmv": 1,
}
SDPA_LIKE = ("attention", "flash_attn", "FlashAttn")
CASTS = frozenset({"aten::to", "aten::_to_copy"})
VIEW = "0: view or alias of an input"


def _numel(shape: Shape) -> int:
    return math.prod(shape) if shape else 1


def _tensor_shapes(shapes: Sequence[Any]) -> list[list[int]]:
    return [list(s) for s in shapes if s and all(isinstance(d, int) for d in s)]


def attention_dims(op: str, shapes: Sequence[Shape]) -> dict[str, int] | None:
    """seq_q, seq_kv, batch_heads, head_dim of an attention op; None if not one."""
    t = _tensor_shapes(shapes)
    if op in ("aten::softmax", "aten::_softmax", "aten::_safe_softmax", "aten::log_softmax") and t:
        s = t[0]
        return {"seq_q": s[-2] if len(s) > 1 else 1, "seq_kv": s[-1], "batch_heads": _numel(s[:-2]), "head_dim": 0}
    if len(t) < 2:
        return None
    if op.startswith(("flash_attn::", "FlashAttn")):  # flash-attn package layout: (B, L, H, D)
        q, k = t[0], t[1]
        return {"seq_q": q[1], "seq_kv": k[1], "batch_heads": q[0] * q[2], "head_dim": q[3]}
    if any(s in op for s in SDPA_LIKE):  # (B, H, L, D), or (B, L, D) without heads
        q, k = t[0], t[1]
        if len(q) < 3:
            return None
        return {"seq_q": q[-2], "seq_kv": k[-2], "batch_heads": _numel(q[:-2]), "head_dim": q[-1]}
    if op == "aten::baddbmm" and len(t) >= 3 and len(t[0]) >= 2:
        # baddbmm(scores_init, Q, K^T): its first input has the scores' shape (.., Lq, Lk)
        q = t[1]
        return {"seq_q": t[0][-2], "seq_kv": t[0][-1], "batch_heads": _numel(q[:-2]), "head_dim": q[-1]}
    if op in ("aten::matmul", "aten::bmm", "aten::baddbmm"):
        # QK^T is (.., Lq, D) @ (.., D, Lk) and PV is (.., Lq, Lk) @ (.., Lk, D): the shapes alone cannot
        # tell the two apart, so only Lq is reported; the softmax row of the same call carries both lengths.
        a = t[1] if op == "aten::baddbmm" and len(t) >= 3 else t[0]
        if len(a) < 2:
            return None
        return {"seq_q": a[-2], "seq_kv": 0, "batch_heads": _numel(a[:-2]), "head_dim": 0}
    return None


def causal_pairs(lq: int, lk: int, offset: int = 0) -> int:
    """(query, key) pairs a causal mask keeps: query i sees keys j <= i + offset (offset 0: torch's
    `is_causal`, aligned top-left; offset lk - lq: aligned bottom-right, as flash-attn's `causal`)."""
    # sum over queries i in [0, lq) of clamp(i + offset + 1, 0, lk): zero up to i0, a ramp up to i1, then lk
    i0 = min(max(0, -offset), lq)
    i1 = min(max(lk - offset - 1, i0), lq)
    ramp = (i1 - i0) * ((i0 + offset + 1) + (i1 + offset)) // 2
    return ramp + (lq - i1) * lk


def _attention_flops(op: str, shapes: Sequence[Any], values: dict[str, Any], fused: bool) -> tuple[int, str]:
    t = _tensor_shapes(shapes)
    dims = attention_dims(op, shapes)
    if not dims or len(t) < 3:
        return 0, "0"
    b_h, lq, lk, d, dv = dims["batch_heads"], dims["seq_q"], dims["seq_kv"], dims["head_dim"], t[2][-1]
    pairs, rule = lq * lk, "attention: 2·B·H·Lq·Lk·(D+Dv)"
    if fused and (values.get("is_causal") or values.get("custom_mask_type") == 1):
        pairs, rule = causal_pairs(lq, lk), "attention, causal: 2·B·H·(unmasked pairs)·(D+Dv)"
    elif fused and (values.get("causal") or values.get("custom_mask_type") == 2):
        pairs, rule = causal_pairs(lq, lk, lk - lq), "attention, causal: 2·B·H·(unmasked pairs)·(D+Dv)"
    return 2 * b_h * pairs * (d + dv), rule


def _flops(op: str, shapes: Sequence[Any], r: rp.Replay | None, fused: bool) -> tuple[int, str]:
    """FLOPs of one call and the name of the formula."""
    if any(s in op for s in SDPA_LIKE):
        return _attention_flops(op, shapes, r.values if r else {}, fused)
    if r is None or not r.outputs:
        return 0, "0"
    out = r.outputs[0][0]
    ins = [x for _, x, _ in r.inputs]
    if op in MATMUL_K:
        a = ins[MATMUL_K[op]].shape
        return 2 * _numel(out.shape) * (a[-1] if a else 1), "matmul: 2·(output elements)·K"
    if op == "aten::addbmm":  # sums the batch of products into one matrix
        b1 = ins[1].shape
        return 2 * _numel(out.shape) * b1[0] * b1[-1], "matmul: 2·(output elements)·batch·K"
    if "conv" in op and len(ins) >= 2 and len(ins[1].shape) >= 3:
        x, w = ins[0].shape, ins[1].shape
        if "transpose" in op or bool(r.values.get("transposed")):
            return 2 * _numel(x) * _numel(w[1:]), "transposed convolution: 2·(input elements)·(C_out/groups)·prod(kernel)"
        return 2 * _numel(out.shape) * _numel(w[1:]), "convolution: 2·(output elements)·(C_in/groups)·prod(kernel)"
    return 0, "0"


def _bytes(op: str, r: rp.Replay) -> tuple[int, str]:
    """Bytes read + written by one replayed call, and the name of the rule."""
    written = [t for t, w in r.outputs if w]
    if op in ALLOCATION:
        return 0, "0: allocation"
    if op in METADATA_IN_PLACE:
        return 0, "0: changes metadata in place"
    if r.outputs and not written:
        return 0, VIEW
    rule = "inputs + outputs"
    read = 0
    for name, t, role in r.inputs:
        if role == "out":
            rule = "inputs + outputs (`out=` written, not read)"
        elif op in METADATA_INPUTS:
            rule = "output only (the input gives its shape)"
        elif role == "inplace" and op in WRITE_ONLY_SELF:
            rule = "inputs + `self` written, not read"
        else:
            read += t.nbytes
            if role == "inplace":
                rule = "inputs + `self` written in place"
    if op in GATHER_ROWS:  # embedding(weight, indices): reads the gathered rows, not the table
        read = sum(t.nbytes for name, t, _ in r.inputs if name != "weight") + sum(t.nbytes for t in written)
        rule = "indices + gathered rows + output"
    if not r.outputs:
        rule = "inputs (returns no tensor)"
    return read + sum(t.nbytes for t in written), rule


def _input_bytes(shapes: Sequence[Any], dtypes: Sequence[str]) -> int:
    return sum(_numel(s) * DTYPE_BYTES.get(d, 4) for s, d in zip(shapes, dtypes)
               if d in DTYPE_BYTES and isinstance(s, (list, tuple)))


def _cast_reading(r: rp.Replay, children: Callable[[], Iterable[tuple[Signature, Callable]]] | None) -> rp.Replay:
    """Of a replay with recorded 0-dim tensors read as Python numbers and its reading as tensors (where
    their outputs' dtypes differ), the one whose output has the dtype the op cast its inputs to (its
    `aten::to` children, recorded on a CPU); the numbers' where the children do not tell."""
    if r.as_tensors is None or children is None:
        return r
    cast = set()
    for (c_op, *c_args), _ in children():
        c = rp.replay(c_op, *c_args) if c_op in CASTS else None
        if c is not None and c.outputs:
            cast.add(c.outputs[0][0].dtype)
    tensors, numbers = r.as_tensors.outputs[0][0].dtype, r.outputs[0][0].dtype
    return r.as_tensors if tensors in cast and numbers not in cast else r


def per_call(op: str, shapes: Sequence[Any], dtypes: Sequence[str], args: Sequence[Any],
             strides: Sequence[Any] | None = None, *, list_dtype: str = "float") -> bool:
    """Whether calls with this record may count differently, each by its children (`_cast_reading`):
    a caller that counts once per signature counts these per call."""
    shapes = [s if isinstance(s, (list, tuple)) else [] for s in shapes]
    r = rp.replay(op, shapes, dtypes, args, strides, list_dtype)
    return r is not None and r.as_tensors is not None


class Counted(NamedTuple):
    """One call's count and the rules that made it (docs/op-table.md lists them per op kind)."""

    flops: int
    bytes: int
    flops_rule: str
    bytes_rule: str


def count(op: str, shapes: Sequence[Any], dtypes: Sequence[str], args: Sequence[Any],
          strides: Sequence[Any] | None = None, *, list_dtype: str = "float", fused_attention: bool = True,
          children: Callable[[], Iterable[tuple[Signature, Callable]]] | None = None) -> tuple[int, int]:
    """(FLOPs, bytes read + written) of one call of `op`.

    `list_dtype`: the dtype name assumed for the elements of a tensor list (not recorded);
    `fused_attention`: False when an attention op ran SDPA's math path (a causal mask then saves
    nothing); `children`: the ops this call made, as (signature, their own children), counted in
    its place when the record cannot be replayed."""
    c = explain(op, shapes, dtypes, args, strides, list_dtype=list_dtype, fused_attention=fused_attention,
                children=children)
    return c.flops, c.bytes


def explain(op: str, shapes: Sequence[Any], dtypes: Sequence[str], args: Sequence[Any],
            strides: Sequence[Any] | None = None, *, list_dtype: str = "float", fused_attention: bool = True,
            children: Callable[[], Iterable[tuple[Signature, Callable]]] | None = None) -> Counted:
    """`count` with the names of the rules that counted the call."""
    shapes = [s if isinstance(s, (list, tuple)) else [] for s in shapes]
    r = rp.replay(op, shapes, dtypes, args, strides, list_dtype)
    if r is not None:
        r = _cast_reading(r, children)
        flops, flops_rule = _flops(op, shapes, r, fused_attention)
        nbytes, bytes_rule = _bytes(op, r)
        return Counted(flops, nbytes, flops_rule, bytes_rule)
    flops, flops_rule = _flops(op, shapes, None, fused_attention)
    if children is not None and not flops:
        nbytes, rules = 0, set()
        for (c_op, c_shapes, c_dtypes, c_args, c_strides), grandchildren in children():
            c = explain(c_op, c_shapes, c_dtypes, c_args, c_strides, list_dtype=list_dtype, children=grandchildren)
            flops, nbytes = flops + c.flops, nbytes + c.bytes
            rules.add(c.bytes_rule)
        if flops or nbytes or (rules == {VIEW} and rp.composite(op)):  # made of views: a view (einsum "ij->ji")
            return Counted(flops, nbytes, "the ops it called", "the ops it called")
    if flops:  # an attention op outside ATen (flash-attn package): output = the query's shape
        t = _tensor_shapes(shapes)
        elem = DTYPE_BYTES.get(dtypes[0], 2) if dtypes else 2
        return Counted(flops, _input_bytes(shapes, dtypes) + _numel(t[0]) * elem, flops_rule,
                       "inputs + a query-shaped output")
    return Counted(0, _input_bytes(shapes, dtypes), "0", "recorded inputs only (output unknown)")


def dominant_dtype(signatures: Iterable[tuple[Sequence[Any], Sequence[str]]]) -> str:
    """The floating dtype most tensor inputs have (by count), "float" if none: the dtype assumed
    for the elements of tensor lists, which the profiler does not record."""
    seen: Counter[str] = Counter()
    for _, dtypes in signatures:
        seen.update(d for d in dtypes if d in rp.DTYPES and rp.DTYPES[d].is_floating_point)
    return seen.most_common(1)[0][0] if seen else "float"
