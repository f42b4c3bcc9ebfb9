"""attn=math|sdpa|flash on every workload: same outputs, different op tables, refused where unavailable."""

from __future__ import annotations

import pytest
import torch

import genprof
from genprof.errors import GenprofError
from genprof.optimizations.attention import math_attention
from genprof.spec import RunSpec
from genprof.phases import NullPhases

F = torch.nn.functional
CPU_BACKENDS = ("sdpa", "flash")
# float32 on the CPU; the fused kernels sum in another order than the explicit matmuls, and
# diffusion feeds each step's output into the next, so differences grow a little over steps.
RTOL, ATOL = 1e-4, 1e-4


def _output(workload: str, backend: str):
    built = genprof.build(genprof.make_spec(workload, size="tiny", optimizations=[f"attn={backend}"]))
    with torch.inference_mode():
        return built.run(NullPhases())


@pytest.mark.parametrize("workload", genprof.list_workloads())
def test_every_cpu_backend_matches_math_on_every_workload(workload):
    ref = _output(workload, "math")
    for backend in CPU_BACKENDS:
        out = _output(workload, backend)
        if out.dtype.is_floating_point:
            torch.testing.assert_close(out, ref, rtol=RTOL, atol=ATOL, msg=f"{workload} attn={backend}")
        else:  # generated tokens
            assert torch.equal(out, ref), f"{workload} attn={backend}"


@pytest.mark.parametrize("workload", ["stable-diffusion", "llm"])
def test_math_shows_unfused_ops_and_flash_one_fused_kernel(workload, tmp_path):
    tables, kernels = {}, {}
    for backend in ("math", "flash"):
        res = genprof.run(workload, size="tiny", repeats=1, warmup=0, out=tmp_path, optimizations=[f"attn={backend}"])
        assert res.ok, res.meta.get("traceback")
        tables[backend] = res.ops[res.ops["family"] == "Attention"]
        kernels[backend] = set(res.meta["summary"]["attention_kernels"])
    # run.json records what actually ran
    assert kernels["math"] == {"aten::baddbmm", "aten::softmax", "aten::bmm"}
    assert kernels["flash"] == {"aten::_scaled_dot_product_flash_attention_for_cpu"}
    math_ops, flash_ops = set(tables["math"]["op"]), set(tables["flash"]["op"])
    assert math_ops == {"aten::baddbmm", "aten::softmax", "aten::bmm"}
    assert flash_ops == {"aten::scaled_dot_product_attention"}
    assert set(tables["flash"]["kernel"]) == {"aten::_scaled_dot_product_flash_attention_for_cpu"}
    # the same attention FLOPs either way, except the (query, key) pairs a causal mask removes: the
    # fused kernel skips them, the math path computes them (docs/op-table.md)
    flash = tables["flash"]
    full = flash["calls"] * 2 * flash["batch_heads"] * flash["seq_q"] * flash["seq_kv"] * 2 * flash["head_dim"]
    causal = flash[flash["flops"] < full]
    masked = sum(r.calls * 2 * r.batch_heads * int((~torch.ones(r.seq_q, r.seq_kv, dtype=torch.bool).tril()).sum())
                 * 2 * r.head_dim for r in causal.itertuples())
    assert (flash["flops"] <= full).all() and (workload != "llm" or not causal.empty)
    assert tables["math"]["flops"].sum() == flash["flops"].sum() + masked


def test_math_attention_matches_sdpa_with_masks_causal_and_gqa():
    q, k, v = torch.randn(2, 4, 9, 16), torch.randn(2, 4, 6, 16), torch.randn(2, 4, 6, 8)
    mask = torch.rand(9, 6) > 0.3
    mask[:, 0] = True
    torch.testing.assert_close(math_attention(q, k, v, attn_mask=mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    torch.testing.assert_close(math_attention(q, q, q, is_causal=True), F.scaled_dot_product_attention(q, q, q, is_causal=True))
    fmask = torch.randn(2, 1, 9, 6)
    torch.testing.assert_close(math_attention(q, k, v, attn_mask=fmask, scale=0.2),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=fmask, scale=0.2))
    kg, vg = torch.randn(2, 1, 6, 16), torch.randn(2, 1, 6, 16)
    torch.testing.assert_close(math_attention(q, kg, vg, enable_gqa=True),
                               F.scaled_dot_product_attention(q, kg, vg, enable_gqa=True))


@pytest.mark.parametrize("backend", ["efficient", "cudnn", "flash-attn"])
def test_backends_missing_on_the_cpu_are_refused_naming_the_available_ones(backend):
    with pytest.raises(GenprofError, match=r"not available on cpu.*available here: math, sdpa, flash"):
        genprof.api.validate(genprof.make_spec("llm", optimizations=[f"attn={backend}"]))


def test_unknown_backend_and_repeated_opt_are_refused():
    with pytest.raises(GenprofError, match="valid: math, sdpa, flash"):
        genprof.api.validate(genprof.make_spec("llm", optimizations=["attn=turbo"]))
    with pytest.raises(GenprofError, match="given twice"):
        genprof.api.validate(genprof.make_spec("llm", optimizations=["attn=math", "attn=flash"]))


def test_optimized_build_leaves_the_cached_model_unchanged():
    plain = genprof.build(RunSpec("llm", size="tiny"))
    math_built = genprof.build(genprof.make_spec("llm", size="tiny", optimizations=["attn=math"]))
    with torch.inference_mode():
        math_built.run(NullPhases())  # attn=math swaps SDPA in only while it runs
    assert genprof.build(RunSpec("llm", size="tiny")) is plain
    assert F.scaled_dot_product_attention.__module__ != "genprof.optimizations.attention"
