"""`--opt vision-prune:layer=2,keep=0.2[,score=attn|norm]` on `llava`: fewer image tokens from a decoder layer on.

Dynamic-LLaVA-style vision-context sparsification, training-free: at decoder
layer `layer`, ceil(keep x image tokens) image tokens are kept, in their
original order and with their original positions; the others are dropped from
that layer on (later layers run on fewer tokens, and their KV caches hold only
the kept ones, so every decode step is cheaper too). Text tokens are never
dropped. Scores (no learned predictor, unlike Dynamic-LLaVA):
- `attn` (default): the attention each image token receives from the last
  prompt token in layer `layer - 1` (the last layer that sees every token),
  averaged over heads: the decoder engine's last-query scores (one query row;
  the full attention matrix is never formed and the fused kernels still run
  the layers). Needs layer >= 1.
- `norm`: the L2 norm of each image token's hidden state entering `layer`.

A token policy on the decoder engine: it changes which prompt tokens the
layers compute, and composes with `text-prune` (generated tokens) and with an
attention backend. Lossy; exact at keep=1 (same logits as the plain model).
`info["vision_prune"]`: image tokens kept, tokens per decoder layer at prefill
and KV entries per layer after decoding (both measured from the run), an
analytic FLOPs fraction of the prefill; `summary.quality` from
genprof.optimizations.quality.
Not here: the learned predictors of Dynamic-LLaVA, decoding without a KV cache.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from genprof.engine import TokenPolicy
from genprof.errors import GenprofError
from genprof.optimizations import quality
from genprof.optimizations.base import Optimization, register
from genprof.optimizations.sparsity import decoder_prefill_flops, kept_count, number


def vision_flops(vc: Any, n_img: int, d_text: int) -> float:
    """Analytic FLOPs of the CLIP vision tower (image tokens + CLS) and the 2-layer projector."""
    dv, nv = vc.hidden_size, n_img + 1
    tower = vc.num_hidden_layers * (2 * nv * (4 * dv * dv + 2 * dv * vc.intermediate_size) + 4 * nv * nv * dv)
    return tower + 2 * n_img * (dv * d_text + d_text * d_text)


class VisionPolicy(TokenPolicy):
    name = "vision-prune"

    def __init__(self, layer: int, keep: float, score: str, vision: float):
        self.layer, self.keep, self.score, self.vision = layer, keep, score, vision
        self.info: dict[str, Any] = {"layer": layer, "keep": keep, "score": score}
        self.per_layer: list[int] = []

    def start(self, engine: Any) -> None:
        self.per_layer = []

    def begin_step(self, engine: Any, step: Any) -> None:
        if step.phase == "prefill" and self.score == "attn":
            step.score_layers.add(self.layer - 1)

    def before_layer(self, engine: Any, layer: int, step: Any) -> None:
        if step.phase != "prefill":
            return
        if layer == self.layer:
            step.set_tokens([self._select(step)])
        self.per_layer.append(int(step.x.shape[1]))

    def _select(self, step: Any) -> tuple[torch.Tensor, torch.Tensor]:
        g = step.groups[0]
        h, pos = step.tokens(g)
        b, n = h.shape[:2]
        p0, p1 = step.regions["image"]
        k = kept_count(self.keep, p1 - p0)
        if self.score == "attn":  # attention from the last prompt token in the last full layer
            scores = g.scores[self.layer - 1][:, p0:p1]
        else:  # L2 norm of the image tokens' hidden states entering this layer
            scores = h[:, p0:p1].float().norm(dim=-1)
        top = torch.topk(scores, k, dim=1).indices.sort(dim=1).values + p0  # original order
        index = torch.cat([torch.arange(p0, device=h.device)[None].expand(b, p0), top,
                           torch.arange(p1, n, device=h.device)[None].expand(b, n - p1)], dim=1)
        step.regions["image"] = (p0, p0 + k)
        return (torch.gather(h, 1, index[..., None].expand(b, index.shape[1], h.shape[2])),
                torch.gather(pos.expand(b, n), 1, index))

    def finish(self, engine: Any, gen: Any) -> None:
        L, prompt = engine.n_layers, self.per_layer[0]
        kv = gen.caches[0].lengths()
        decoded = int(gen.tokens.shape[1]) - 1
        n_img = self.info["image_tokens"]
        full, pruned = decoder_prefill_flops(engine.config, [prompt] * L), decoder_prefill_flops(engine.config,
                                                                                                 self.per_layer)
        self.info.update({
            "image_tokens_kept": kept_count(self.keep, n_img), "tokens_per_layer": list(self.per_layer),
            "kv_entries_per_layer": kv, "kv_entries_fraction": sum(kv) / ((prompt + decoded) * L),
            "decoder_prefill_flops_fraction": pruned / full,
            "prefill_flops_fraction": (pruned + self.vision) / (full + self.vision),
            "flops": "analytic (2 x weights x tokens + 4 x tokens^2 x width per layer); counted FLOPs are in "
                     "the op table"})


def check_layer(opt: Optimization, spec: Any, workload: Any) -> int:
    n = workload.decoder_layers(spec)
    return number(f"{opt.name}:layer", opt.option("layer", default="2"), int, 0, n - 1,
                  f"a decoder layer index from 0 to {n - 1}")


def check_keep(opt: Optimization) -> float:
    return number(f"{opt.name}:keep", opt.option("keep", "value", default="0.2"), float, 1e-9, 1.0,
                  "a fraction in (0, 1]")


@register
class VisionPrune(Optimization):
    name = "vision-prune"
    applies_to = ("llava",)
    options = {"layer": None, "keep": None, "value": None, "score": ("attn", "norm")}
    exact = False
    changes = frozenset({"prompt-tokens"})

    def check(self, spec: Any, workload: Any) -> None:
        super().check(spec, workload)
        self.layer, self.keep = check_layer(self, spec, workload), check_keep(self)
        self.score = self.option("score", default="attn")
        if self.score == "attn" and self.layer == 0:
            raise GenprofError("vision-prune:score=attn needs layer >= 1 (it reads the attention of the layer "
                               "before); use layer=1 or more, or score=norm")

    def apply(self, built: Any) -> Any:
        n_img = built.info["image_tokens"]
        vision = vision_flops(built.parts["vision_tower"].config, n_img, built.engine.config.hidden_size)
        policy = VisionPolicy(self.layer, self.keep, self.score, vision)
        policy.info["image_tokens"] = n_img
        return replace(built, engine=built.engine.with_policy(policy), info={**built.info, "vision_prune": policy.info},
                       quality=quality.measure)
