"""Taxonomy and counting on small hand-built modules where the answer is known exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from genprof.profiler import measure_trace, taxonomy
from genprof.workloads.base import Built


def trace(module: nn.Module, *inputs: torch.Tensor, backend=None):
    """Profile one call of `module` through the real trace path; return the op table of repeat 0."""
    module.eval()

    def infer(phases):
        with phases.phase("run"):
            if backend is None:
                return module(*inputs)
            with sdpa_kernel(backend):
                return module(*inputs)

    m = measure_trace(Built(parts={"m": module}, infer=infer), torch.device("cpu"), repeats=1, warmup=1,
                      run={"run_id": "t"})
    return m.ops[m.ops["family"] != "Overhead"]


class ConvBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)

    def forward(self, x):
        return F.silu(self.norm(self.conv(x)))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(16, 64)
        self.down = nn.Linear(64, 16)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))


class FusedAttention(nn.Module):
    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)

    def split(self, x):
        b, l, d = x.shape
        return x.view(b, l, self.heads, d // self.heads).transpose(1, 2)

    def attend(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)

    def forward(self, x, context=None):
        context = x if context is None else context
        q, k, v = self.split(self.to_q(x)), self.split(self.to_k(context)), self.split(self.to_v(context))
        o = self.attend(q, k, v)
        b, h, l, dh = o.shape
        return self.to_out(o.transpose(1, 2).reshape(b, l, h * dh))


class UnfusedAttention(FusedAttention):
    def attend(self, q, k, v):
        scores = torch.matmul(q, k.transpose(-1, -2)) / q.shape[-1] ** 0.5
        return torch.matmul(torch.softmax(scores, dim=-1), v)


class CrossBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn1 = FusedAttention()
        self.attn2 = FusedAttention()

    def forward(self, x, ctx):
        return self.attn2(self.attn1(x), ctx)


def family_calls(ops):
    return ops.groupby("family")["calls"].sum().to_dict()


def test_conv_block_families_calls_and_flops():
    x = torch.randn(2, 4, 16, 16)
    ops = trace(ConvBlock(), x)
    conv = ops[ops["family"] == "Convolution"]
    assert conv["calls"].sum() == 1
    assert conv["flops"].sum() == 2 * 2 * 8 * 16 * 16 * 4 * 9
    assert conv["module"].tolist() == ["m.conv"]
    assert ops.loc[ops["family"] == "Normalization", "module"].tolist() == ["m.norm"]
    assert family_calls(ops)["Activation"] == 1


def test_mlp_is_two_linear_calls_with_2mnk_flops():
    x = torch.randn(3, 10, 16)
    ops = trace(MLP(), x)
    lin = ops[ops["family"] == "Linear"]
    assert lin["calls"].sum() == 2
    assert lin["flops"].sum() == 2 * 30 * 64 * 16 * 2
    assert sorted(lin["module"]) == ["m.down", "m.up"]
    assert ops.loc[ops["op"] == "aten::gelu", "family"].tolist() == ["Activation"]


@pytest.mark.parametrize("backend", [SDPBackend.MATH, SDPBackend.FLASH_ATTENTION])
def test_fused_attention_flops_match_formula_on_every_cpu_backend(backend):
    b, l, d, h = 2, 24, 32, 4
    ops = trace(FusedAttention(d, h), torch.randn(b, l, d), backend=backend)
    att = ops[ops["family"] == "Attention"]
    assert att["op"].tolist() == ["aten::scaled_dot_product_attention"]
    assert att["flops"].sum() == 4 * b * h * l * l * (d // h)
    assert (att["seq_q"].iloc[0], att["seq_kv"].iloc[0], att["head_dim"].iloc[0]) == (l, l, d // h)
    lin = ops[ops["family"] == "Linear"]
    assert lin["calls"].sum() == 4  # q, k, v, out projections are Linear, not Attention
    assert lin["flops"].sum() == 4 * 2 * b * l * d * d


def test_unfused_attention_is_two_matmuls_and_a_softmax_with_the_same_flops():
    b, l, d, h = 2, 24, 32, 4
    ops = trace(UnfusedAttention(d, h), torch.randn(b, l, d))
    att = ops[ops["family"] == "Attention"]
    assert sorted(att["op"]) == ["aten::matmul", "aten::matmul", "aten::softmax"]
    assert att["flops"].sum() == 4 * b * h * l * l * (d // h)
    assert set(att["attention_kind"]) == {"self"}
    softmax = att[att["op"] == "aten::softmax"].iloc[0]
    assert (softmax["seq_q"], softmax["seq_kv"]) == (l, l)


def test_cross_attention_is_told_from_self_attention_by_module_name():
    ops = trace(CrossBlock(), torch.randn(1, 10, 32), torch.randn(1, 7, 32))
    att = ops[ops["family"] == "Attention"].set_index("module")
    assert att.loc["m.attn1", "attention_kind"] == "self"
    assert att.loc["m.attn2", "attention_kind"] == "cross"
    assert (att.loc["m.attn2", "seq_q"], att.loc["m.attn2", "seq_kv"]) == (10, 7)


def test_matmul_outside_an_attention_module_is_linear():
    assert taxonomy.family("aten::matmul", "MLP") == "Linear"
    assert taxonomy.family("aten::matmul", "LlamaAttention") == "Attention"
    assert taxonomy.family("aten::softmax", "") == "Activation"


def test_rmsnorm_written_as_elementwise_ops_is_normalization():
    assert taxonomy.family("aten::rsqrt", "LlamaRMSNorm") == "Normalization"
    assert taxonomy.family("aten::rsqrt", "") == "Elementwise"


def test_unknown_ops_go_to_other_and_are_listed():
    assert taxonomy.family("mylib::weird_op") == "Other"
    assert taxonomy.unknown_ops(["aten::add", "mylib::weird_op"]) == ["mylib::weird_op"]


def test_hooks_are_removed_after_tracing():
    m = MLP()
    trace(m, torch.randn(2, 16))
    assert all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m.modules())


def test_attention_kind_reads_temporal_from_any_ancestor_and_cross_from_diffusers():
    class Attention(nn.Module):
        def __init__(self, cross: bool):
            super().__init__()
            self.is_cross_attention = cross

    q = "unet.down_blocks.0.temp_attentions.0.transformer_blocks.0.attn2"
    assert taxonomy.attention_kind(q, Attention(cross=False)) == "temporal-self"
    assert taxonomy.attention_kind("unet.mid_block.attentions.0.transformer_blocks.0.attn2", Attention(True)) == "cross"
    assert taxonomy.attention_kind("model.decoder.block.0.layer.1.EncDecAttention", nn.Identity()) == "cross"
    declared = nn.Identity()
    declared.genprof_attention_kind = "spatial-self"
    assert taxonomy.attention_kind("x.attn2", declared) == "spatial-self"
