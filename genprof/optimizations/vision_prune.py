"""Vision-language context sparsification on `llava` (Dynamic-LLaVA style, training-free): two toggles.

`--opt vision-prune:layer=2,keep=0.2[,score=attn|norm]`: at decoder layer
`layer`, ceil(keep x image tokens) image tokens are kept, in their original
order and with their original position ids; the others are dropped from that
layer on (later layers run on fewer tokens, and their KV caches hold only the
kept ones, so every decode step is cheaper too). Text tokens are never dropped.
Scores (no learned predictor, unlike Dynamic-LLaVA):
- `attn` (default): the attention each image token receives from the last
  prompt token in layer `layer - 1` (the last layer that sees every token),
  averaged over heads. Only that one query row is computed (q of the last
  token against the layer's cached keys), so the full attention matrix is
  never formed and the fused SDPA kernels still run the layers. Needs layer >= 1.
- `norm`: the L2 norm of each image token's hidden state entering `layer`.

`--opt text-prune:keep=0.5[,layer=2,recent=1]`: during decoding, from layer
`layer` on, the KV of a generated token stays in the cache only while it is
among the ceil(keep x generated so far) generated tokens kept; each step the
lowest-scored older one (attention received from the current token in layer
`layer`, averaged over heads) is dropped for good, and the `recent` newest
generated tokens always stay visible. The current token always attends to
itself. Prompt tokens are untouched by text-prune.

Both are lossy (`exact = False`) and exact at keep=1 (same logits as the plain
model). Each sets `info["vision_prune"]` / `info["text_prune"]` (kept tokens,
tokens per decoder layer, KV entries, an analytic FLOPs fraction) and a
`quality` hook: the unpruned model on the same inputs gives the reference
(greedy tokens, logits); the pruned model is teacher-forced on those tokens;
reported: next-token agreement, KL(unpruned || pruned) of the first-token
distribution (and the mean over positions), greedy sequence match, and with
`--set task=retrieval` the task accuracy of both. Not here: the learned
predictors of Dynamic-LLaVA, decoding without a KV cache.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any

import torch

from genprof.errors import GenprofError
from genprof.optimizations.base import Optimization, register
from genprof.workloads import llava as lv


def _number(name: str, text: str | None, kind: type, low: float, high: float, what: str) -> Any:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise GenprofError(f"{name}={text!r} is not valid; expected {what}") from None
    if not low <= value <= high:
        raise GenprofError(f"{name}={text!r} is not valid; expected {what}")
    return value


def decoder_layers(spec: Any) -> int:
    """The number of decoder layers the spec's llava model will have (preset, or the weights' config.json)."""
    from genprof.workloads import visual_retrieval as vr
    from genprof.workloads.registry import get

    p = get("llava").config(spec)
    weights = spec.weights or (str(vr.ASSET) if p["task"] == "retrieval" else None)
    if weights:
        path = os.path.join(weights, "config.json")
        if os.path.exists(path):
            with open(path) as f:
                return int(json.load(f).get("text_config", {}).get("num_hidden_layers", 32))
        return 10**6  # unknown here; the workload reports a missing config.json itself
    return int(p["text"]["num_hidden_layers"])


class _Sparsify(Optimization):
    applies_to = ("llava",)
    exact = False

    def _layer(self, spec: Any, default: int) -> int:
        n = decoder_layers(spec)
        return _number(f"{self.name}:layer", self.option("layer", default=str(default)), int, 0, n - 1,
                       f"a decoder layer index from 0 to {n - 1}")

    def _keep(self) -> float:
        return _number(f"{self.name}:keep", self.option("keep", "value", default="0.2"), float, 1e-9, 1.0,
                       "a fraction in (0, 1]")

    def _wrap(self, built: Any, sp: lv.Sparsity, key: str, info: dict[str, Any]) -> Any:
        runner, inputs, tokens, _ = built.infer.llava
        infer = lv.make_infer(runner, inputs, tokens, sp)
        return replace(built, infer=infer, info={**built.info, key: info},
                       quality=make_quality(runner, inputs, tokens, sp))


@register
class VisionPrune(_Sparsify):
    name = "vision-prune"
    options = {"layer": None, "keep": None, "value": None, "score": ("attn", "norm")}

    def check(self, spec: Any) -> None:
        super().check(spec)
        self.layer = self._layer(spec, 2)
        self.keep = self._keep()
        self.score = self.option("score", default="attn")
        if self.score == "attn" and self.layer == 0:
            raise GenprofError("vision-prune:score=attn needs layer >= 1 (it reads the attention of the layer "
                               "before); use layer=1 or more, or score=norm")

    def apply(self, built: Any) -> Any:
        sp = replace(built.infer.llava[3], vision=True, vision_layer=self.layer, vision_keep=self.keep,
                     vision_score=self.score)
        return self._wrap(built, sp, "vision_prune", plan(built, sp))


@register
class TextPrune(_Sparsify):
    name = "text-prune"
    options = {"layer": None, "keep": None, "value": None, "recent": None}

    def check(self, spec: Any) -> None:
        super().check(spec)
        self.layer = self._layer(spec, 2)
        self.keep = self._keep()
        self.recent = _number("text-prune:recent", self.option("recent", default="1"), int, 0, 10**6,
                              "a number of tokens >= 0")

    def apply(self, built: Any) -> Any:
        sp = replace(built.infer.llava[3], text=True, text_layer=self.layer, text_keep=self.keep,
                     text_recent=self.recent)
        return self._wrap(built, sp, "text_prune", plan(built, sp))


def plan(built: Any, sp: lv.Sparsity) -> dict[str, Any]:
    """What the sparsity keeps, known before running: tokens per decoder layer, KV entries after decoding,
    and the analytic FLOPs fraction of the prefill (decoder alone, and with the vision tower and projector)."""
    runner, inputs, tokens, _ = built.infer.llava
    cfg = runner.config
    tc, vc = cfg.text_config, cfg.vision_config
    info = built.info
    n_img, prompt, layers = info["image_tokens"], info["prompt_len"], info["decoder_layers"]
    kept = lv.kept_count(sp.vision_keep, n_img) if sp.vision else n_img
    per_layer = [prompt - n_img + kept if sp.vision and i >= sp.vision_layer else prompt for i in range(layers)]
    gen_kept = max(min(sp.text_recent, tokens), lv.kept_count(sp.text_keep, tokens)) if sp.text and tokens else tokens
    kv = [per_layer[i] + (gen_kept if sp.text and i >= sp.text_layer else tokens) for i in range(layers)]

    d, ff = tc.hidden_size, tc.intermediate_size
    kv_dim = d * tc.num_key_value_heads // tc.num_attention_heads
    linear = 2 * (2 * d * d + 2 * d * kv_dim + 3 * d * ff)  # FLOPs per token per layer

    def decoder(ns: list[int]) -> float:
        return sum(linear * n + 4 * n * n * d for n in ns) + 2 * d * tc.vocab_size

    dv, nv = vc.hidden_size, n_img + 1
    vision = vc.num_hidden_layers * (2 * nv * (4 * dv * dv + 2 * dv * vc.intermediate_size) + 4 * nv * nv * dv)
    vision += 2 * n_img * (dv * d + d * d)  # projector
    full, pruned = decoder([prompt] * layers), decoder(per_layer)
    out = {"image_tokens": n_img, "image_tokens_kept": kept, "tokens_per_layer": per_layer,
           "kv_entries_per_layer": kv, "kv_entries_fraction": sum(kv) / ((prompt + tokens) * layers),
           "decoder_prefill_flops_fraction": pruned / full,
           "prefill_flops_fraction": (pruned + vision) / (full + vision),
           "flops": "analytic (2 x weights x tokens + 4 x tokens^2 x width per layer); counted FLOPs are in the "
                    "op table"}
    if sp.vision:
        out.update(layer=sp.vision_layer, keep=sp.vision_keep, score=sp.vision_score)
    if sp.text:
        out.update(text_layer=sp.text_layer, text_keep=sp.text_keep, text_recent=sp.text_recent,
                   generated_kv_kept=gen_kept)
    return out


def make_quality(runner: lv.LlavaRunner, inputs: lv.Inputs, tokens: int, sp: lv.Sparsity):
    """Quality of the pruned model against the unpruned one on the same inputs (outside any timing)."""

    def quality(output: Any) -> dict[str, Any]:
        return compare(runner, inputs, tokens, sp, output)

    return quality


@torch.inference_mode()
def reference(runner: lv.LlavaRunner, inputs: lv.Inputs, tokens: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The unpruned model's greedy tokens and logits on `inputs`: what `compare` measures against."""
    return runner.generate(lv.Sparsity(), inputs.pixel_values, inputs.prefix, inputs.suffix, tokens)


@torch.inference_mode()
def compare(runner: lv.LlavaRunner, inputs: lv.Inputs, tokens: int, sp: lv.Sparsity,
            output: torch.Tensor | None = None,
            ref: tuple[torch.Tensor, list[torch.Tensor]] | None = None) -> dict[str, Any]:
    """`sp` against the unpruned model; `ref`: `reference(runner, inputs, tokens)` when already computed."""
    args = (inputs.pixel_values, inputs.prefix, inputs.suffix, tokens)
    ref_tokens, ref_logits = reference(runner, inputs, tokens) if ref is None else ref
    _, logits = runner.generate(sp, *args, force=ref_tokens)
    ref = torch.stack(ref_logits, 1).float().log_softmax(-1)  # (batch, positions, vocab)
    new = torch.stack(logits, 1).float().log_softmax(-1)
    kl = (ref.exp() * (ref - new)).sum(-1)  # KL(unpruned || pruned) per position
    agree = (new.argmax(-1) == ref_tokens).float()
    out: dict[str, Any] = {
        "next_token_agreement": float(agree.mean()),
        "first_token_agreement": float(agree[:, 0].mean()),
        "kl_first_token": float(kl[:, 0].mean()),
        "kl_mean": float(kl.mean()),
        "positions": int(agree.shape[1]), "samples": int(agree.shape[0]),
        "reference": "unpruned model, same inputs; pruned model teacher-forced on its greedy tokens",
    }
    if output is not None and isinstance(output, torch.Tensor) and output.shape == ref_tokens.shape:
        out["greedy_sequence_match"] = float((output == ref_tokens).all(dim=1).float().mean())
    if inputs.answers is not None:
        out["accuracy"] = float((new[:, 0].argmax(-1) == inputs.answers).float().mean())
        out["accuracy_unpruned"] = float((ref_tokens[:, 0] == inputs.answers).float().mean())
    return out
