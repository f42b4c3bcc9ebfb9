"""What the token-pruning optimizations share: keep counts, option parsing, a prefill FLOPs estimate.

Not here: the policies themselves (lazyllm, vision_prune, text_prune) or their quality (quality).
"""

from __future__ import annotations

import math
from typing import Any

from genprof.errors import GenprofError


def kept_count(keep: float, n: int) -> int:
    """How many of `n` tokens a keep fraction leaves: ceil(keep x n), at least 1, at most n."""
    return max(1, min(n, math.ceil(keep * n - 1e-9)))


def number(name: str, text: str | None, kind: type, low: float, high: float, what: str) -> Any:
    """An option value of type `kind` in [low, high], or a one-line error saying what is expected."""
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise GenprofError(f"{name}={text!r} is not valid; expected {what}") from None
    if not low <= value <= high:
        raise GenprofError(f"{name}={text!r} is not valid; expected {what}")
    return value


def decoder_prefill_flops(config: Any, tokens_per_layer: list[int]) -> float:
    """Analytic prefill FLOPs of a Llama-style decoder computing `tokens_per_layer[l]` tokens at layer l:
    2 x weights x tokens for the projections and the MLP, 4 x tokens^2 x width for QK^T and PV (the full
    square, as an unfused kernel computes it), plus the LM head for one token. The op table's counted
    FLOPs are the measured counterpart."""
    d, ff = config.hidden_size, config.intermediate_size
    kv_dim = d * config.num_key_value_heads // config.num_attention_heads
    linear = 2 * (2 * d * d + 2 * d * kv_dim + 3 * d * ff)  # FLOPs per token per layer
    return sum(linear * n + 4 * n * n * d for n in tokens_per_layer) + 2 * d * config.vocab_size
