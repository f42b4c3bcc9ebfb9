"""Attention backends ("Flash Attention") as a toggle on every workload: `--opt attn=NAME`.

- `math`: the pre-fusion baseline. Every call of
  torch.nn.functional.scaled_dot_product_attention is computed explicitly as
  baddbmm (QK^T, scaled) -> softmax -> bmm (x V), the way diffusers' classic
  processor does, so the op table shows the unfused matmuls and the softmax.
  One mechanism for every library (diffusers, transformers, our own modules),
  since all of them route attention through that function.
- `sdpa`: PyTorch's dispatcher picks the kernel (the default behaviour).
- `flash`, `efficient`, `cudnn`: SDPA forced to one kernel with
  torch.nn.attention.sdpa_kernel. On a CPU only the flash-style CPU kernel
  exists; EFFICIENT and cuDNN are refused there, never silently replaced.
- `flash-attn`: the flash-attn package (CUDA, fp16/bf16; `pip install genprof[flash]`).
It changes the attention implementation only, so it composes with every
other optimization. It adds a context around each inference (`Built.contexts`):
the decoder engine and every library look the attention function up at each
call, so one mechanism reaches them all. Which kernel actually ran is read from
the profiler (op table column `kernel`); `backend_of` names the backend those
kernels belong to, and a traced run whose kernels are not the requested
backend's fails instead of being stored as a measurement of it.
Not here: the attention math of any model (the workloads own it).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from genprof.errors import GenprofError
from genprof.optimizations.base import Optimization, register

BACKENDS = ("math", "sdpa", "flash", "efficient", "cudnn", "flash-attn")
# The kernels (op table `kernel`, or the op itself when unfused) each backend runs, by name prefix.
KERNELS = {
    "flash": ("aten::_scaled_dot_product_flash_attention", "aten::_flash_attention_forward"),
    "efficient": ("aten::_scaled_dot_product_efficient_attention", "aten::_efficient_attention_forward"),
    "cudnn": ("aten::_scaled_dot_product_cudnn_attention",),
    "sdpa-math": ("aten::_scaled_dot_product_attention_math",),
    "flash-attn": ("flash_attn::",),
    "math": ("aten::baddbmm", "aten::bmm", "aten::softmax", "aten::_softmax", "aten::matmul"),
}


def backend_of(kernels: Any) -> str:
    """The backend that ran a run's attention kernels (names as in summary.attention_kernels): one of
    KERNELS' keys, `none` when there was no attention, `mixed(a+b)` when several backends ran."""
    found = set()
    for k in kernels:
        found.add(next((b for b, prefixes in KERNELS.items() if str(k).startswith(prefixes)), f"other({k})"))
    if not found:
        return "none"
    return found.pop() if len(found) == 1 else "mixed(" + "+".join(sorted(found)) + ")"


def math_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None,
                   dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                   enable_gqa: bool = False) -> torch.Tensor:
    """softmax(Q K^T * scale + mask) V with explicit baddbmm / softmax / bmm (no fused kernel)."""
    *batch, lq, d = query.shape
    lk, dv = key.shape[-2], value.shape[-1]
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        rep = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(rep, dim=-3), value.repeat_interleave(rep, dim=-3)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    q = query.reshape(-1, lq, d)
    k = key.expand(*batch, lk, d).reshape(-1, lk, d)
    v = value.expand(*batch, lk, dv).reshape(-1, lk, dv)
    bias = None
    if is_causal:
        bias = torch.full((lq, lk), float("-inf"), dtype=q.dtype, device=q.device).triu_(1)
    if attn_mask is not None:
        m = attn_mask
        if m.dtype == torch.bool:
            m = torch.zeros(m.shape, dtype=q.dtype, device=q.device).masked_fill_(~m, float("-inf"))
        bias = m if bias is None else bias + m
    if bias is not None:
        bias = bias.to(q.dtype).expand(*batch, lq, lk).reshape(-1, lq, lk)
        scores = torch.baddbmm(bias, q, k.transpose(-1, -2), alpha=scale)
    else:
        empty = torch.empty(q.shape[0], lq, lk, dtype=q.dtype, device=q.device)
        scores = torch.baddbmm(empty, q, k.transpose(-1, -2), beta=0.0, alpha=scale)
    probs = scores.softmax(dim=-1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    return torch.bmm(probs, v).reshape(*batch, lq, dv)


def _flash_attn_package(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask=None,
                        dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                        enable_gqa: bool = False) -> torch.Tensor:
    from flash_attn import flash_attn_func

    if attn_mask is not None:
        raise GenprofError("attn=flash-attn cannot take an attention mask here; use attn=flash or attn=sdpa")
    out = flash_attn_func(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                          dropout_p=dropout_p, softmax_scale=scale, causal=is_causal)
    return out.transpose(1, 2)


@contextlib.contextmanager
def _patched_sdpa(fn) -> Iterator[None]:
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = fn
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def backend_context(backend: str):
    """A context manager under which attention runs on `backend`."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if backend == "math":
        return _patched_sdpa(math_attention)
    if backend == "flash-attn":
        return _patched_sdpa(_flash_attn_package)
    if backend == "sdpa":
        return contextlib.nullcontext()
    kernel = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
              "cudnn": SDPBackend.CUDNN_ATTENTION}[backend]
    return sdpa_kernel(kernel)


def available(backend: str, device: torch.device) -> bool:
    """Whether a backend runs on this device (a tiny probe call)."""
    if device.type == "meta":
        return True
    if backend == "flash-attn":
        if device.type != "cuda":
            return False
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            return False
        return True
    q = torch.randn(1, 2, 8, 64, device=device, dtype=torch.float16 if device.type == "cuda" else torch.float32)
    try:
        with backend_context(backend):
            F.scaled_dot_product_attention(q, q, q)
    except RuntimeError:
        return False
    return True


@register
class AttentionBackend(Optimization):
    name = "attn"
    options = {"value": BACKENDS, "backend": BACKENDS}
    changes = frozenset({"attention"})

    @property
    def backend(self) -> str:
        return self.option("value", "backend", default="sdpa")

    def check(self, spec: Any, workload: Any) -> None:
        super().check(spec, workload)
        device = torch.device(spec.device)
        if not available(self.backend, device):
            valid = [b for b in BACKENDS if available(b, device)]
            why = " (pip install 'genprof[flash]' on a CUDA machine)" if self.backend == "flash-attn" else ""
            raise GenprofError(f"attn={self.backend} is not available on {device.type}{why}; "
                               f"available here: {', '.join(valid)}")

    def apply(self, built: Any) -> Any:
        backend = self.backend
        return replace(built, contexts=built.contexts + (lambda: backend_context(backend),),
                       info={**built.info, "attention_backend": backend})
