"""`--opt text-prune:keep=0.5[,layer=2,recent=1]` on `llava`: fewer generated tokens in the KV cache.

During decoding, from decoder layer `layer` on, the KV of a generated token
stays in the cache only while it is among the ceil(keep x generated so far)
generated tokens kept; each step the lowest-scored older one (attention
received from the current token in layer `layer`, averaged over heads: the
decoder engine's last-query scores) is dropped for good, and the `recent`
newest generated tokens always stay visible. The current token always attends
to itself. Prompt tokens are untouched.

A token policy on the decoder engine: it changes which generated tokens the
caches keep, and composes with `vision-prune` (prompt tokens) and with an
attention backend. Lossy; exact at keep=1.
`info["text_prune"]`: KV entries per layer after decoding (measured), the
generated entries kept; `summary.quality` from genprof.optimizations.quality.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from genprof.engine import TokenPolicy
from genprof.optimizations import quality
from genprof.optimizations.base import Optimization, register
from genprof.optimizations.sparsity import kept_count, number
from genprof.optimizations.vision_prune import check_keep, check_layer


class TextPolicy(TokenPolicy):
    name = "text-prune"

    def __init__(self, layer: int, keep: float, recent: int):
        self.layer, self.keep, self.recent = layer, keep, recent
        self.info: dict[str, Any] = {"text_layer": layer, "text_keep": keep, "text_recent": recent}
        self.retained = self.fed = 0

    def start(self, engine: Any) -> None:
        self.retained = self.fed = 0

    def _evicts(self, fed: int, retained: int) -> bool:
        """Whether a step that brings the generated tokens to `fed` (`retained` of them in the cache) drops one."""
        budget = max(min(self.recent, fed), kept_count(self.keep, fed))
        return retained > budget and retained - min(self.recent, retained) > 0

    def begin_step(self, engine: Any, step: Any) -> None:
        if step.phase == "decode" and self._evicts(self.fed + 1, self.retained + 1):  # scores only when used
            step.score_layers.add(self.layer)

    def end_step(self, engine: Any, step: Any) -> None:
        """Drop the KV of at most one generated token from layers >= layer so that ceil(keep x fed) generated
        tokens (and at least the `recent` newest) stay."""
        if step.phase != "decode":
            return
        g, i = step.groups[0], self.layer
        self.fed += 1
        self.retained += 1  # this step's token entered every layer's cache
        if not self._evicts(self.fed, self.retained):
            return
        candidates = self.retained - min(self.recent, self.retained)  # older generated entries that may go
        total = g.cache.length(i)
        start = total - self.retained  # the generated entries are the tail of the cache
        scores = g.scores[i][:, start:start + candidates]
        drop = scores.argmin(dim=1, keepdim=True) + start  # (b, 1)
        b = scores.shape[0]
        ar = torch.arange(total - 1, device=drop.device)[None].expand(b, total - 1)
        index = ar + (ar >= drop).long()  # every entry but `drop`, in order
        for layer in range(i, engine.n_layers):
            g.cache.keep(layer, index)
        self.retained -= 1

    def finish(self, engine: Any, gen: Any) -> None:
        kv = gen.caches[0].lengths()
        decoded = int(gen.tokens.shape[1]) - 1
        self.info.update({"kv_entries_per_layer": kv, "generated_kv_kept": self.retained,
                          "generated_kv_fed": decoded})


@register
class TextPrune(Optimization):
    name = "text-prune"
    applies_to = ("llava",)
    options = {"layer": None, "keep": None, "value": None, "recent": None}
    exact = False
    changes = frozenset({"generated-kv"})

    def check(self, spec: Any, workload: Any) -> None:
        super().check(spec, workload)
        self.layer, self.keep = check_layer(self, spec, workload), check_keep(self)
        self.recent = number("text-prune:recent", self.option("recent", default="1"), int, 0, 10**6,
                             "a number of tokens >= 0")

    def apply(self, built: Any) -> Any:
        policy = TextPolicy(self.layer, self.keep, self.recent)
        return replace(built, engine=built.engine.with_policy(policy), info={**built.info, "text_prune": policy.info},
                       quality=quality.measure)
