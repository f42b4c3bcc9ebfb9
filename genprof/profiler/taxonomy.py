"""Operator taxonomy: which family an op belongs to, and what kind of attention.

Families: Convolution, Linear, Attention, Normalization, Activation,
Elementwise, Memory, Embedding, Communication (collectives: `c10d::` and
functional collectives), Other (plus Overhead for time no op covers).
Traces recorded elsewhere add Compiled (torch.compile's Triton kernels) and
Optimizer (work inside an optimizer step), given by the op table from kernel
names and scopes, not by an op's name.
An op is classified from its ATen name and the module that ran it: a fused
attention kernel is Attention anywhere; the matmuls and softmax of an unfused
attention are Attention only inside an attention module (elsewhere a matmul is
Linear). Unknown ops fall to Other, and `unknown_ops` lists them so nothing is
dropped silently. This module does not time or count anything.
"""

from __future__ import annotations

import re

import torch

FAMILIES = ("Convolution", "Linear", "Attention", "Normalization", "Activation",
            "Elementwise", "Memory", "Embedding", "Communication", "Compiled", "Optimizer", "Other", "Overhead")

OVERHEAD_OP = "[overhead]"  # the row for time inside a scope that no op covers

# Fused attention kernels: one op computes softmax(QK^T)V.
FUSED_ATTENTION = frozenset({
    "aten::scaled_dot_product_attention",
    "aten::_scaled_dot_product_flash_attention",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_efficient_attention",
    "aten::_scaled_dot_product_cudnn_attention",
    "aten::_scaled_dot_product_fused_attention_overrideable",
    "aten::_flash_attention_forward",
    "aten::_efficient_attention_forward",
    "flash_attn::_flash_attn_forward",
    "flash_attn::_flash_attn_varlen_forward",
    "FlashAttnFunc",
    "FlashAttnVarlenFunc",
})
# The pieces of an unfused attention, when they run inside an attention module.
UNFUSED_ATTENTION = frozenset({
    "aten::matmul", "aten::bmm", "aten::baddbmm", "aten::einsum",
    "aten::softmax", "aten::_softmax", "aten::_safe_softmax", "aten::log_softmax",
})
MATMUL = frozenset({"aten::linear", "aten::addmm", "aten::mm", "aten::matmul", "aten::bmm",
                    "aten::baddbmm", "aten::einsum", "aten::addbmm", "aten::_addmm_activation"})
CONVOLUTION = re.compile(r"^aten::(_?convolution|conv\d?d|conv_transpose\d?d|mkldnn_convolution|"
                         r"cudnn_convolution|_convolution|slow_conv|thnn_conv|conv_tbc)")
NORMALIZATION = re.compile(r"^aten::(native_)?(layer_norm|group_norm|batch_norm|instance_norm|rms_norm|"
                           r"_fused_rms_norm|_batch_norm_impl_index|norm$|linalg_vector_norm)")
ACTIVATION = frozenset({
    "aten::silu", "aten::silu_", "aten::gelu", "aten::gelu_", "aten::relu", "aten::relu_",
    "aten::sigmoid", "aten::tanh", "aten::softplus", "aten::mish", "aten::leaky_relu",
    "aten::hardswish", "aten::elu", "aten::glu", "aten::quick_gelu", "aten::softmax",
    "aten::_softmax", "aten::log_softmax", "aten::_safe_softmax",
})
ELEMENTWISE = re.compile(r"^aten::(add|sub|rsub|mul|div|pow|sqrt|rsqrt|exp|log|neg|abs|clamp|clip|where|"
                         r"masked_fill|maximum|minimum|eq|ne|lt|le|gt|ge|sin|cos|cumsum|sum|mean|max|"
                         r"min|argmax|argmin|topk|sort|searchsorted|bucketize|lerp|addcmul|addcdiv|reciprocal|floor|ceil|round|"
                         r"logical_|bitwise_|fill_|zero_|triu|tril|square|erf|sign|all|any|isin|"
                         r"remainder|fmod|prod|var|std|multinomial|uniform_|normal_|bernoulli|"
                         r"randn|rand|randint|exponential_|quantile|avg_pool|max_pool|adaptive_avg_pool|adaptive_max_pool|dropout|native_dropout|feature_dropout|alpha_dropout|isnan|isinf|nan_to_num|outer|amax|"
                         r"__and__|__or__|__xor__|_foreach_)")
MEMORY = re.compile(r"^aten::(view|_unsafe_view|reshape|_reshape_alias|permute|transpose|t$|t_|expand|"
                    r"expand_as|contiguous|clone|copy_|_copy|to$|_to_copy|cat|concat|stack|split|chunk|"
                    r"unbind|narrow|slice|select|index|gather|scatter|squeeze|unsqueeze|flatten|"
                    r"unflatten|repeat|repeat_interleave|tile|pad|constant_pad_nd|reflection_pad|"
                    r"replication_pad|upsample|_upsample|interpolate|empty|empty_like|empty_strided|"
                    r"zeros|zeros_like|ones|ones_like|full|full_like|new_|arange|linspace|as_strided|"
                    r"detach|alias|lift_fresh|item|_local_scalar_dense|resize_|roll|flip|movedim|"
                    r"masked_select|nonzero|_pin_memory|pin_memory|lift|set_|split_with_sizes|"
                    r"index_select|index_put|index_copy|pixel_shuffle|pixel_unshuffle|view_as|"
                    r"diagonal|numpy_T|mT|unfold|col2im|im2col|tensor|scalar_tensor|align_to|"
                    r"is_nonzero|is_same_size|_has_compatible_shallow_copy_type|dim|size|stride|"
                    r"result_type|broadcast_tensors|meshgrid|_assert|equal|conj|resolve_|"
                    r"record_stream|_nested|sym_|type_as)")
EMBEDDING = re.compile(r"^aten::(embedding|_embedding_bag|embedding_bag|embedding_dense)")
COMMUNICATION = re.compile(r"^(c10d|_c10d_functional|c10d_functional|_dtensor)::")


def is_attention_module(module_type: str) -> bool:
    """An attention module computes softmax(QK^T)V itself (not a block containing one)."""
    return module_type.endswith("Attention") or module_type in ("MultiheadAttention", "Attention")


def is_norm_module(module_type: str) -> bool:
    """RMSNorm and friends are written as pow/mean/rsqrt/mul: their ops are Normalization."""
    return "Norm" in module_type


def family(op: str, module_type: str = "") -> str:
    """The family of one op run inside a module of type `module_type` ('' for none)."""
    if op == OVERHEAD_OP:
        return "Overhead"
    if op in FUSED_ATTENTION:
        return "Attention"
    if COMMUNICATION.match(op):
        return "Communication"
    if op in UNFUSED_ATTENTION and is_attention_module(module_type):
        return "Attention"
    if CONVOLUTION.match(op):
        return "Convolution"
    if op in MATMUL:
        return "Linear"
    if NORMALIZATION.match(op) or (is_norm_module(module_type) and ELEMENTWISE.match(op)):
        return "Normalization"
    if op in ACTIVATION:
        return "Activation"
    if EMBEDDING.match(op):
        return "Embedding"
    if MEMORY.match(op):
        return "Memory"
    if ELEMENTWISE.match(op):
        return "Elementwise"
    return "Other"


# What `attention_kind` says, and what it means (docs/op-table.md). Workloads declare the kinds beyond self and
# cross on their modules.
ATTENTION_KINDS = {
    "self": "queries and keys are the same tokens (image, video or text)",
    "cross": "queries from the image/video tokens, keys and values from the text",
    "joint": "one attention over text and image/video tokens together, both as queries (MMDiT, Flux, CogVideoX)",
    "self+cross": "queries from the image tokens, keys over text + image tokens (DeepFloyd IF)",
    "spatial-self": "self-attention within a frame (video UNets, C-ViViT)",
    "spatial-cross": "cross-attention within a frame",
    "temporal-self": "self-attention across frames at one position",
    "temporal-cross": "cross-attention across frames",
}


def attention_kind(qualname: str, module: torch.nn.Module | None) -> str:
    """`self` or `cross` (and `temporal-`/`spatial-` where the module says so), or a declared kind.

    A module may declare its kind (one of ATTENTION_KINDS) with an attribute `genprof_attention_kind`.
    diffusers' Attention says `is_cross_attention`; otherwise the name decides
    (`attn2`, `cross`, `encoder_attn`, T5's `EncDecAttention` mean cross-attention).
    """
    declared = getattr(module, "genprof_attention_kind", None)
    if declared:
        return str(declared)
    names = qualname.lower().split(".")
    if hasattr(module, "is_cross_attention"):  # diffusers says so itself
        cross = bool(module.is_cross_attention)
    else:
        cross = names[-1] in ("attn2", "encoder_attn", "encdecattention") or "cross" in names[-1]
    axis = "temporal-" if any("temp" in n for n in names) else ""
    return axis + ("cross" if cross else "self")


def unknown_ops(ops) -> list[str]:
    """The op names that fall to Other: listed so that users see what is unclassified."""
    return sorted({op for op in ops if family(op) == "Other"})
