"""FLOPs, bytes and attention sequence lengths of one op, from its recorded shapes.

The profiler records, for each op, its input shapes, dtypes and the values of
its scalar and list arguments (stride, padding, ...). From these this module
computes, per top-level op:
- FLOPs of the compute ops only (matmuls, convolutions, attention): 2·M·N·K for
  a matmul, 2·N·Cout·prod(out)·(Cin/groups)·prod(kernel) for a convolution,
  and 4·B·H·Lq·Lk·D for attention, fused or not (torch's FlopCounterMode counts
  0 for the CPU flash kernel, so we never rely on it). Elementwise, norm and
  memory ops count 0 FLOPs (as FlopCounterMode does): they are bandwidth-bound,
  their cost is in `bytes`.
- bytes read + written: the sum of input tensor sizes plus the output size; the
  output shape is derived for the ops above, taken as the broadcast of the
  inputs for elementwise ops, and views move no data (0 bytes). An embedding
  lookup reads only the rows it gathers (indices + gathered rows + output), not
  its whole table.
- seq_q / seq_kv / batch_heads / head_dim for attention ops.
It does not time anything and knows nothing about modules.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

Shape = Sequence[int]

DTYPE_BYTES = {
    "float": 4, "double": 8, "c10::Half": 2, "c10::BFloat16": 2, "long int": 8, "long": 8,
    "int": 4, "short int": 2, "signed char": 1, "unsigned char": 1, "bool": 1,
    "c10::Float8_e4m3fn": 1, "c10::Float8_e5m2": 1, "c10::complex<float>": 8,
}
VIEW_OPS = frozenset({
    "aten::view", "aten::_unsafe_view", "aten::reshape", "aten::_reshape_alias", "aten::permute",
    "aten::transpose", "aten::t", "aten::expand", "aten::expand_as", "aten::as_strided",
    "aten::squeeze", "aten::unsqueeze", "aten::flatten", "aten::unflatten", "aten::slice",
    "aten::select", "aten::narrow", "aten::split", "aten::chunk", "aten::unbind", "aten::detach",
    "aten::alias", "aten::view_as", "aten::diagonal", "aten::empty", "aten::empty_like",
    "aten::empty_strided", "aten::lift_fresh", "aten::split_with_sizes", "aten::movedim",
})
SDPA_LIKE = ("attention", "flash_attn", "FlashAttn")


def _numel(shape: Shape) -> int:
    return math.prod(shape) if shape else 1


def _tensor_shapes(shapes: Sequence[Shape]) -> list[Shape]:
    return [s for s in shapes if s]


def _broadcast(shapes: Sequence[Shape]) -> list[int]:
    """The broadcast shape; the first shape where they do not broadcast (an op that only reads another's dtype)."""
    shapes = _tensor_shapes(shapes)
    if not shapes:
        return []
    rank = max(len(s) for s in shapes)
    out = [1] * rank
    for s in shapes:
        for i, d in enumerate(s, start=rank - len(s)):
            if d != out[i] and 1 not in (d, out[i]):
                return list(shapes[0])
            out[i] = max(out[i], d)
    return out


def _matmul_dims(a: Shape, b: Shape) -> tuple[int, list[int]]:
    """FLOPs and output shape of torch.matmul(a, b) with broadcasting."""
    a, b = list(a), list(b)
    if len(a) == 1:
        a = [1] + a
    if len(b) == 1:
        b = b + [1]
    m, k, n = a[-2], a[-1], b[-1]
    batch = _broadcast([a[:-2] or [1], b[:-2] or [1]])
    return 2 * _numel(batch) * m * n * k, batch + [m, n]


def _conv(shapes: Sequence[Shape], args: Sequence[Any], op: str) -> tuple[int, list[int]]:
    x, w = shapes[0], shapes[1]
    nsp = len(x) - 2
    transposed = "transpose" in op

    def arg(i: int, default: Any) -> Any:
        v = args[i] if i < len(args) else None
        return default if v is None or v == "" else v

    def expand(v: Any) -> list[int]:
        return [int(v)] * nsp if isinstance(v, (int, float)) else [int(t) for t in v] * (nsp if len(v) == 1 else 1)

    stride = expand(arg(3, 1))
    if op in ("aten::convolution", "aten::_convolution"):
        padding, dilation = arg(4, 0), expand(arg(5, 1))
        transposed = bool(arg(6, False))
        out_pad, groups = expand(arg(7, 0)), int(arg(8, 1))
    elif transposed:  # conv_transpose{1,2,3}d(input, weight, bias, stride, padding, output_padding, groups, dilation)
        padding, out_pad, groups, dilation = arg(4, 0), expand(arg(5, 0)), int(arg(6, 1)), expand(arg(7, 1))
    else:  # conv{1,2,3}d(input, weight, bias, stride, padding, dilation, groups)
        padding, dilation, groups, out_pad = arg(4, 0), expand(arg(5, 1)), int(arg(6, 1)), [0] * nsp
    ksize = list(w[2:])
    if isinstance(padding, str):
        pads = [0] * nsp if padding == "valid" else [None] * nsp
    else:
        pads = expand(padding)
    out_sp = []
    for i in range(nsp):
        if transposed:
            out_sp.append((x[2 + i] - 1) * stride[i] - 2 * pads[i] + dilation[i] * (ksize[i] - 1) + out_pad[i] + 1)
        elif pads[i] is None:  # padding="same"
            out_sp.append(x[2 + i])
        else:
            out_sp.append((x[2 + i] + 2 * pads[i] - dilation[i] * (ksize[i] - 1) - 1) // stride[i] + 1)
    if transposed:
        cout = w[1] * groups
        flops = 2 * x[0] * _numel(x[2:]) * x[1] * w[1] * _numel(ksize)
    else:
        cout = w[0]
        flops = 2 * x[0] * cout * _numel(out_sp) * w[1] * _numel(ksize)
    return flops, [x[0], cout] + out_sp


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


def count(op: str, shapes: Sequence[Shape], dtypes: Sequence[str], args: Sequence[Any]) -> tuple[int, int]:
    """(FLOPs, bytes read + written) of one call of `op`."""
    shapes = [list(s) if isinstance(s, (list, tuple)) else [] for s in shapes]
    sizes = [DTYPE_BYTES.get(d, 4) for d in dtypes] + [4] * (len(shapes) - len(dtypes))
    in_bytes = sum(_numel(s) * b for s, b in zip(shapes, sizes) if s)
    elem = next((b for s, b in zip(shapes, sizes) if s), 4)
    flops, out = 0, None
    try:
        flops, out = _flops_and_out(op, shapes, args)
    except (IndexError, TypeError, ValueError, ZeroDivisionError):
        flops, out = 0, None
    if op in VIEW_OPS:
        return 0, 0
    if op == "aten::type_as":  # the second tensor lends its dtype: a copy of the first, or nothing when they agree
        same = len(dtypes) >= 2 and dtypes[0] == dtypes[1]
        return 0, 0 if same or not shapes[0] else _numel(shapes[0]) * (sizes[0] + sizes[1])
    if op == "aten::embedding" and len(shapes) >= 2 and shapes[0] and shapes[1]:
        gathered = _numel(shapes[1]) * shapes[0][-1] * sizes[0]  # rows read, then written as the output
        return 0, int(_numel(shapes[1]) * sizes[1] + 2 * gathered)
    if out is None:
        out = _broadcast(shapes)
    return int(flops), int(in_bytes + _numel(out) * elem if out else in_bytes)


def _flops_and_out(op: str, shapes: list[Shape], args: Sequence[Any]) -> tuple[int, list[int] | None]:
    t = _tensor_shapes(shapes)
    if op == "aten::linear":
        x, w = shapes[0], shapes[1]
        return 2 * _numel(x[:-1]) * w[0] * w[1], list(x[:-1]) + [w[0]]
    if op in ("aten::addmm", "aten::_addmm_activation"):
        a, b = shapes[1], shapes[2]
        return 2 * a[0] * a[1] * b[1], [a[0], b[1]]
    if op == "aten::mm":
        a, b = shapes[0], shapes[1]
        return 2 * a[0] * a[1] * b[1], [a[0], b[1]]
    if op in ("aten::bmm", "aten::matmul"):
        return _matmul_dims(shapes[0], shapes[1])
    if op == "aten::baddbmm":
        return _matmul_dims(shapes[1], shapes[2])
    if "conv" in op and len(t) >= 2 and len(shapes[0]) >= 3:
        return _conv(shapes, args, op)
    dims = attention_dims(op, shapes) if any(s in op for s in SDPA_LIKE) else None
    if dims:
        q, v = t[0], t[2] if len(t) > 2 else t[1]
        dv = v[-1]
        b_h, lq, lk, d = dims["batch_heads"], dims["seq_q"], dims["seq_kv"], dims["head_dim"]
        out = (list(q[:-1]) + [dv]) if not op.startswith(("flash_attn", "FlashAttn")) else list(q)
        return 2 * b_h * lq * lk * d + 2 * b_h * lq * lk * dv, out
    if op in ("aten::cat", "aten::concat", "aten::concatenate") and t:
        return 0, [sum(_numel(s) for s in t)]
    return 0, None
