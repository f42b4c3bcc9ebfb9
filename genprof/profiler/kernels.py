"""GPU work by kernel: which family a kernel's name says, and how busy each device and stream was.

Kernel names say what an opaque op computed: a `fbgemm::`, custom or compiled
op has family Other by its name, but its kernels are cuBLAS/CUTLASS GEMMs,
cuDNN convolutions, flash/fMHA attention, NCCL/RCCL collectives or Triton
kernels written by torch.compile. `family(name)` reads that; the op table uses
it for rows whose op is opaque and for device work that no op launched.

`busy(start, end)` is the time a set of intervals covers (their union), so that
a trace with several streams shows GPU busy time beside summed kernel time
(the difference is overlap). `gpu_summary(ev)` gives both per device and
stream. Nothing here links kernels to ops (`genprof.profiler.events` does).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import numpy as np

from genprof.profiler.events import KIND_NAMES, EventTable

# First match wins: communication, attention and convolution before GEMM (conv and fMHA kernels are GEMM-like).
_PATTERNS = [
    ("Communication", re.compile(r"nccl|rccl|all_?reduce|all_?gather|reduce_?scatter|all_?to_?all|sendrecv",
                                 re.I)),
    ("Attention", re.compile(r"flash|fmha|attention|_attn_|\battn|mha_fwd|mha_bwd", re.I)),
    ("Convolution", re.compile(r"conv(?!ert)|fprop|dgrad|wgrad|winograd|implicit_?gemm|scudnn|hcudnn|fft2d|"
                               r"im2col|col2im|miopen", re.I)),
    ("Linear", re.compile(r"gemm|gemv|cublas|cutlass|Cijk_|hipblas|rocblas|wgmma|xmma|splitKreduce|matmul|"
                          r"(^|_)(add|b)?mm(_|\d|$)", re.I)),
    ("Normalization", re.compile(r"layer_?norm|rms_?norm|group_?norm|batch_?norm|instance_?norm|RowwiseMoments|"
                                 r"GammaBeta|bn_fw|bn_bw", re.I)),
    ("Embedding", re.compile(r"embedding", re.I)),
    ("Memory", re.compile(r"^Memcpy|^Memset|copy|CatArray|FillFunctor|fill_kernel|index_select|gather_kernel|"
                          r"scatter", re.I)),
    ("Elementwise", re.compile(r"elementwise|reduce_kernel|Reduce|softmax", re.I)),
]
_TRITON = re.compile(r"^triton_")
_TRITON_TEMPLATE = re.compile(r"^triton_tem_")


@lru_cache(maxsize=1 << 16)
def family(name: str) -> str:
    """The family a kernel's name says: Communication, Attention, Convolution, Linear (GEMM),
    Compiled (torch.compile's Triton kernels), Normalization, Embedding, Memory, Elementwise, else Other.
    Read from the name without its argument list (argument types name unrelated things)."""
    name = short_name(name)
    if _TRITON.match(name) and not _TRITON_TEMPLATE.match(name):
        return "Compiled"  # Inductor names fused kernels after the ops they fuse: the name is no op
    for fam, pat in _PATTERNS:
        if pat.search(name):
            return fam
    return "Compiled" if _TRITON.match(name) else "Other"


def short_name(name: str) -> str:
    """A kernel's name without `void` and its argument list (template arguments stay: they tell kernels apart):
    `void at::native::(anonymous namespace)::f<float>(int, float*)` -> `at::native::(anonymous namespace)::f<float>`."""
    s = name[5:] if name.startswith("void ") else name
    depth = 0
    for i, ch in enumerate(s):
        if ch in "<{[":
            depth += 1
        elif ch in ">}]":
            depth -= 1
        elif ch == "(" and depth == 0 and i > 0 and not s.startswith("(anonymous namespace)", i):
            return s[:i]
    return s


def busy(start: np.ndarray, end: np.ndarray) -> int:
    """Length of the union of intervals [start, end) (same unit as the inputs)."""
    if len(start) == 0:
        return 0
    o = np.argsort(start, kind="stable")
    s, e = start[o], end[o]
    reach = np.maximum.accumulate(e)
    new = np.ones(len(s), bool)
    new[1:] = s[1:] > reach[:-1]  # a gap before this interval: a new busy block
    first = np.flatnonzero(new)
    return int((np.maximum.reduceat(e, first) - s[first]).sum())


def gpu_summary(ev: EventTable) -> dict[str, Any]:
    """Per device: summed time of kernels, memcpy and memset, busy time (the union over its streams),
    overlap (sum - busy), and per stream the same; plus the totals. Seconds."""
    out: dict[str, Any] = {"events": int(len(ev.kernel_ns)), "devices": {}}
    if not len(ev.kernel_ns):
        return out
    end = ev.kernel_start + ev.kernel_ns
    total = {k: 0.0 for k in ("sum_s", "busy_s")}
    for dev in np.unique(ev.kernel_device).tolist():
        on = ev.kernel_device == dev
        d: dict[str, Any] = {"events": int(on.sum())}
        for code, kind in enumerate(KIND_NAMES):
            d[f"{kind}_s"] = float(ev.kernel_ns[on & (ev.kernel_kind == code)].sum()) / 1e9
        d["sum_s"] = float(ev.kernel_ns[on].sum()) / 1e9
        d["busy_s"] = busy(ev.kernel_start[on], end[on]) / 1e9
        d["overlap_s"] = d["sum_s"] - d["busy_s"]
        streams = {}
        for s in np.unique(ev.kernel_stream[on]).tolist():
            m = on & (ev.kernel_stream == s)
            streams[str(s)] = {"events": int(m.sum()), "sum_s": float(ev.kernel_ns[m].sum()) / 1e9,
                               "busy_s": busy(ev.kernel_start[m], end[m]) / 1e9}
        d["streams"] = streams
        out["devices"][str(dev)] = d
        total["sum_s"] += d["sum_s"]
        total["busy_s"] += d["busy_s"]
    out.update(total)
    return out
