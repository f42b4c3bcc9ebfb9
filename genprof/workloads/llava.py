"""LLaVA (multimodal LLM): CLIP vision tower + MLP projector + Llama decoder, prefill then decode.

Pipeline, as LLaVA-1.5 runs it: the CLIP vision tower encodes the image; the
hidden states of its second-to-last layer, without the CLS token, are the
image features (336 px / 14 px patches = 24 x 24 = 576 image tokens at
`paper`); the 2-layer MLP projector maps them to the decoder width; the Llama
decoder reads `text, image tokens, text` (the image where the `<image>`
placeholder sits) in one forward (`prefill`, which produces the first token:
time to first token, so the vision tower and projector count in it) and then
`decode`s one token per step against the KV cache (greedy). Phases: `vision`
(vision tower + projector) and `prefill` (decoder over the prompt), then
`decode`; time to first token is vision + prefill.

The model is transformers' LlavaForConditionalGeneration built from a
LlavaConfig(CLIPVisionConfig, LlamaConfig), so a LLaVA-1.5 checkpoint in the
transformers layout (`llava-hf/llava-1.5-7b-hf`: config.json + safetensors)
loads with `--weights DIR`. `paper` is LLaVA-1.5-7B: CLIP ViT-L/14-336,
projector 1024 -> 4096 -> 4096 (GELU), Vicuna-7B. Parts: `vision_tower`,
`projector`, `language_model` (decoder layers and the LM head).

The decoder runs through `LlavaRunner`, a forward of our own over the
transformers modules (embedding, each decoder layer, norm, LM head are called
as modules, so the profiler attributes their time); it gives the same logits
as the transformers forward, and it is where vision-context sparsification
(`--opt vision-prune`, `--opt text-prune`, genprof/optimizations/vision_prune.py)
drops tokens. `--set task=retrieval` feeds the synthetic visual retrieval task
(genprof/workloads/visual_retrieval.py) to the model trained on it (bundled in
genprof/assets/retrieval-llava, or `--weights DIR`), so accuracy is measurable.
Not here: image preprocessing (pixel values are made directly), tokenizers,
sampling other than greedy, LLaVA-NeXT's image tiling.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from genprof.errors import GenprofError, unknown_choice
from genprof.spec import RunSpec
from genprof.workloads.base import Built, Phases, Workload, count_parameters, make_parts, require_weights_dir
from genprof.workloads.params import LLAMA_POSITIONS, Bound
from genprof.workloads.registry import register

_LLAMA_7B = dict(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32)
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                             image_size=32, patch_size=8, projection_dim=32),
                 text=dict(vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=4),
                 prefix_len=4, suffix_len=8, tokens=8, task="random"),
    "small": dict(vision=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                              image_size=224, patch_size=14, projection_dim=256),
                  text=dict(vocab_size=8192, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                            num_attention_heads=8, num_key_value_heads=8),
                  prefix_len=16, suffix_len=32, tokens=32, task="random"),
    "paper": dict(  # LLaVA-1.5-7B: CLIP ViT-L/14 at 336 px (24 layers, 1024 wide) + Vicuna-7B
        vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    image_size=336, patch_size=14, projection_dim=768),
        text=_LLAMA_7B,
        prefix_len=36, suffix_len=28, tokens=128, task="random"),  # system prompt + USER: / question + ASSISTANT:
}
TASKS = ("random", "retrieval")


def build_model(p: dict[str, Any], attn_implementation: str = "sdpa") -> torch.nn.Module:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(**p["vision"])
    text = LlamaConfig(max_position_embeddings=4096, **p["text"])
    n_img = (vision.image_size // vision.patch_size) ** 2
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=text.vocab_size - 1,
                         projector_hidden_act="gelu", vision_feature_layer=-2,
                         vision_feature_select_strategy="default", image_seq_length=n_img)
    config._attn_implementation = attn_implementation
    return LlavaForConditionalGeneration(config)


def load_model(path: str, dtype: torch.dtype, attn_implementation: str = "sdpa") -> torch.nn.Module:
    from transformers import LlavaForConditionalGeneration

    require_weights_dir(path, "config.json")
    return LlavaForConditionalGeneration.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation)


def split_parts(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The model parts the profiler attributes time to."""
    inner = model.model
    lm = LanguageModel(inner.language_model, model.lm_head)
    return {"vision_tower": inner.vision_tower, "projector": inner.multi_modal_projector, "language_model": lm}


class LanguageModel(torch.nn.Module):
    """The Llama decoder and its LM head as one part (the modules are shared with the LLaVA model)."""

    def __init__(self, decoder: torch.nn.Module, lm_head: torch.nn.Module):
        super().__init__()
        self.decoder = decoder
        self.lm_head = lm_head


# ----------------------------------------------------------------------------------------------------------
# Sparsification settings and the decoder forward that applies them


@dataclass(frozen=True)
class Sparsity:
    """Which tokens the decoder keeps. Defaults keep everything (the plain model).

    vision_keep < 1 (or vision_layer set): from decoder layer `vision_layer` on, only
    ceil(vision_keep x image tokens) image tokens (highest `vision_score`) stay, in their original
    order and with their original positions. text_keep < 1: from decoder layer `text_layer` on, a
    generated token's KV stays in the cache only while it is among the ceil(text_keep x generated)
    best-scored generated tokens; the `text_recent` most recent ones always stay.
    """

    vision: bool = False
    vision_layer: int = 2
    vision_keep: float = 1.0
    vision_score: str = "attn"  # attn | norm
    text: bool = False
    text_layer: int = 2
    text_keep: float = 1.0
    text_recent: int = 1


def kept_count(keep: float, n: int) -> int:
    return max(1, min(n, math.ceil(keep * n - 1e-9)))


class KVCache:
    """A per-layer key/value cache (lists of tensors) whose entries the runner can drop."""

    def __init__(self, n_layers: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.keys[layer_idx], self.values[layer_idx]
        self.keys[layer_idx] = key if k is None else torch.cat([k, key], dim=-2)
        self.values[layer_idx] = value if v is None else torch.cat([v, value], dim=-2)
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        k = self.keys[layer_idx]
        return 0 if k is None else k.shape[-2]

    def keep(self, layer_idx: int, index: torch.Tensor) -> None:
        """Keep only the entries `index` (batch, n) of one layer, in that order."""
        for store in (self.keys, self.values):
            t = store[layer_idx]
            idx = index[:, None, :, None].expand(t.shape[0], t.shape[1], index.shape[1], t.shape[3])
            store[layer_idx] = torch.gather(t, 2, idx)

    def lengths(self) -> list[int]:
        return [0 if k is None else int(k.shape[-2]) for k in self.keys]


class LlavaRunner:
    """Vision tower, projector and decoder of a LlavaForConditionalGeneration, run module by module."""

    def __init__(self, model: torch.nn.Module):
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        self.model = model
        self.config = model.config
        inner = model.model
        self.vision_tower, self.projector = inner.vision_tower, inner.multi_modal_projector
        self.decoder, self.lm_head = inner.language_model, model.lm_head
        self.layers = list(self.decoder.layers)
        self.rope = apply_rotary_pos_emb
        params = inspect.signature(self.layers[0].forward).parameters
        self.cache_kw = "cache" if "cache" in params else (
            "past_key_values" if "past_key_values" in params else "past_key_value")

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """LLaVA's image features: a hidden layer of the vision tower (CLS dropped by default), projected."""
        c = self.config
        out = self.vision_tower(pixel_values, output_hidden_states=True)
        feats = out.hidden_states[c.vision_feature_layer]
        if c.vision_feature_select_strategy == "default":
            feats = feats[:, 1:]
        return self.projector(feats)

    def _layer(self, i: int, h: torch.Tensor, pos: torch.Tensor, pe: tuple[torch.Tensor, torch.Tensor],
               cache: KVCache) -> torch.Tensor:
        """Decoder layer i on `h` at positions `pos`, whose rotary (cos, sin) is `pe`."""
        out = self.layers[i](h, attention_mask=None, position_ids=pos, use_cache=True,
                             position_embeddings=pe, **{self.cache_kw: cache})
        return out[0] if isinstance(out, tuple) else out

    def _last_query_attention(self, i: int, h_last: torch.Tensor, pos_last: torch.Tensor,
                              keys: torch.Tensor) -> torch.Tensor:
        """Attention of one query (the last token, input of layer i) over `keys` (layer i's cache),
        averaged over heads: (batch, n_keys). One row only: the full attention matrix is never formed."""
        layer = self.layers[i]
        attn = layer.self_attn
        x = layer.input_layernorm(h_last)
        b = x.shape[0]
        q = attn.q_proj(x).view(b, 1, -1, attn.head_dim).transpose(1, 2)
        cos, sin = self.decoder.rotary_emb(x, pos_last)
        q, _ = self.rope(q, q, cos, sin)
        k = keys
        if k.shape[1] != q.shape[1]:
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        w = torch.matmul(q, k.transpose(-1, -2)) * attn.scaling
        return w.softmax(dim=-1).mean(dim=1)[:, 0]

    def prefill(self, sp: Sparsity, prefix: torch.Tensor, feats: torch.Tensor, suffix: torch.Tensor,
                cache: KVCache, trace: dict[str, Any] | None = None) -> torch.Tensor:
        """The decoder over `prefix, image, suffix`: logits of the next token (batch, vocab)."""
        embed = self.decoder.embed_tokens
        h = torch.cat([embed(prefix), feats.to(embed.weight.dtype), embed(suffix)], dim=1)
        b, n = h.shape[:2]
        p, n_img = prefix.shape[1], feats.shape[1]
        pos = torch.arange(n, device=h.device)[None].expand(b, n)
        pe = self.decoder.rotary_emb(h, pos)  # once per forward; again only when the positions change
        per_layer = []
        for i in range(self.n_layers):
            if sp.vision and i == sp.vision_layer - 1:
                self._h_prev_last = h[:, -1:]  # the last prompt token entering layer i, for the attention score
            if sp.vision and i == sp.vision_layer:
                h, pos = self._select_image_tokens(sp, i, h, pos, cache, p, n_img)
                pe = self.decoder.rotary_emb(h, pos)
            per_layer.append(int(h.shape[1]))
            h = self._layer(i, h, pos, pe, cache)
        if trace is not None:
            trace["tokens_per_layer"] = per_layer
            trace["next_position"] = n
        return self.lm_head(self.decoder.norm(h[:, -1:]))[:, -1]

    def _select_image_tokens(self, sp: Sparsity, i: int, h: torch.Tensor, pos: torch.Tensor, cache: KVCache,
                             p: int, n_img: int) -> tuple[torch.Tensor, torch.Tensor]:
        b = h.shape[0]
        k = kept_count(sp.vision_keep, n_img)
        if sp.vision_score == "attn":
            # attention the image tokens received from the last prompt token in the last full layer (i - 1)
            scores = self._last_query_attention(i - 1, self._h_prev_last, pos[:, -1:], cache.keys[i - 1])
            scores = scores[:, p:p + n_img]
        else:  # L2 norm of the image tokens' hidden states entering layer i
            scores = h[:, p:p + n_img].float().norm(dim=-1)
        top = torch.topk(scores, k, dim=1).indices.sort(dim=1).values + p  # original order
        text_before = torch.arange(p, device=h.device)[None].expand(b, p)
        text_after = torch.arange(p + n_img, h.shape[1], device=h.device)[None].expand(b, h.shape[1] - p - n_img)
        index = torch.cat([text_before, top, text_after], dim=1)
        h = torch.gather(h, 1, index[..., None].expand(b, index.shape[1], h.shape[2]))
        return h, torch.gather(pos, 1, index)

    def decode_step(self, sp: Sparsity, token: torch.Tensor, position: int, cache: KVCache,
                    generated: int) -> torch.Tensor:
        """One decode step: `token` (batch, 1) at `position`; `generated` tokens were fed before it."""
        embed = self.decoder.embed_tokens
        h = embed(token)
        b = h.shape[0]
        pos = torch.full((b, 1), position, dtype=torch.long, device=h.device)
        pe = self.decoder.rotary_emb(h, pos)
        for i in range(self.n_layers):
            if sp.text and i == sp.text_layer:
                h_at_layer = h
            h = self._layer(i, h, pos, pe, cache)
        logits = self.lm_head(self.decoder.norm(h))[:, -1]
        if sp.text:
            self._evict_generated(sp, h_at_layer, pos, cache, generated + 1)
        return logits

    def _evict_generated(self, sp: Sparsity, h_in: torch.Tensor, pos: torch.Tensor, cache: KVCache,
                         fed: int) -> None:
        """Drop the KV of at most one generated token from layers >= text_layer so that
        ceil(text_keep x fed) generated tokens (and at least the `text_recent` newest) stay."""
        i = sp.text_layer
        self._retained_generated += 1  # this step's token entered every layer's cache
        retained = self._retained_generated
        budget = max(min(sp.text_recent, fed), kept_count(sp.text_keep, fed))
        if retained <= budget:
            return
        candidates = retained - min(sp.text_recent, retained)  # older generated entries that may go
        if candidates <= 0:
            return
        total = cache.get_seq_length(i)
        start = total - retained  # the generated entries are the tail of the cache
        scores = self._last_query_attention(i, h_in, pos, cache.keys[i])[:, start:start + candidates]
        drop = scores.argmin(dim=1, keepdim=True) + start  # (b, 1)
        b = scores.shape[0]
        ar = torch.arange(total - 1, device=drop.device)[None].expand(b, total - 1)
        index = ar + (ar >= drop).long()  # every entry but `drop`, in order
        for layer in range(i, self.n_layers):
            cache.keep(layer, index)
        self._retained_generated = retained - 1

    def generate(self, sp: Sparsity, pixel_values: torch.Tensor, prefix: torch.Tensor, suffix: torch.Tensor,
                 tokens: int, phases: Phases | None = None, force: torch.Tensor | None = None,
                 trace: dict[str, Any] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Greedy generation: the first token from prefill, then `tokens` decode steps. With `force`
        (batch, tokens + 1), those tokens are fed instead of the argmax (teacher forcing). Returns the
        generated tokens (batch, tokens + 1) and the logits of every position."""
        from genprof.workloads.base import NullPhases

        phases = phases or NullPhases()
        cache = KVCache(self.n_layers)
        self._retained_generated = 0
        trace = {} if trace is None else trace
        with phases.phase("vision"):
            feats = self.image_features(pixel_values)
        with phases.phase("prefill"):
            logits = self.prefill(sp, prefix, feats, suffix, cache, trace)
            next_tok = logits.argmax(-1, keepdim=True)
        out, all_logits = [next_tok], [logits]
        position = trace["next_position"]
        with phases.phase("decode"):
            for i in range(tokens):
                with phases.step(i):
                    fed = next_tok if force is None else force[:, i:i + 1]
                    logits = self.decode_step(sp, fed, position + i, cache, i)
                    next_tok = logits.argmax(-1, keepdim=True)
                    out.append(next_tok)
                    all_logits.append(logits)
        trace["kv_entries_per_layer"] = cache.lengths()
        return torch.cat(out, dim=1), all_logits


# ----------------------------------------------------------------------------------------------------------


@dataclass
class Inputs:
    pixel_values: torch.Tensor
    prefix: torch.Tensor
    suffix: torch.Tensor
    answers: torch.Tensor | None = None  # the task's answer tokens (task=retrieval)


def make_infer(runner: LlavaRunner, inputs: Inputs, tokens: int, sp: Sparsity,
               trace: dict[str, Any] | None = None) -> Callable[[Phases], torch.Tensor]:
    """One inference (greedy tokens, batch x (tokens + 1)) under the sparsity `sp`."""

    def infer(phases: Phases) -> torch.Tensor:
        out, _ = runner.generate(sp, inputs.pixel_values, inputs.prefix, inputs.suffix, tokens, phases,
                                 trace=trace)
        return out

    infer.llava = (runner, inputs, tokens, sp)  # type: ignore[attr-defined]  # what vision-prune rewraps
    return infer


@register
class Llava(Workload):
    name = "llava"
    kind = "multimodal-llm"
    stand_in = ("LLaVA-1.5 (transformers LlavaForConditionalGeneration: CLIP vision tower + MLP projector + "
                "Llama decoder)")
    phases = ("vision", "prefill", "decode")
    presets = PRESETS
    counted_by = "tokens"
    count_meaning = "decoded tokens"
    bounds = {"task": Bound(choices=TASKS), "tokens": Bound(le=LLAMA_POSITIONS)}

    def config(self, spec: RunSpec) -> dict[str, Any]:
        p = super().config(spec)
        if p["task"] not in TASKS:
            raise unknown_choice("--set task for llava", str(p["task"]), TASKS)
        return p

    def build(self, spec: RunSpec) -> Built:
        p = self.config(spec)
        device = torch.device(spec.device)
        task = p["task"]
        if task == "retrieval" and spec.device == "meta":
            raise GenprofError("--set task=retrieval needs real weights and a real device; use --device cpu/cuda")
        weights = spec.weights
        if task == "retrieval" and not weights:
            from genprof.workloads import visual_retrieval as vr

            weights = str(vr.ASSET)  # the model trained on the task
        if weights != spec.weights:
            from dataclasses import replace

            spec = replace(spec, weights=weights)
        parts = make_parts(spec, lambda: {"llava": build_model(p)},
                           lambda path, dtype: {"llava": load_model(path, dtype)})
        model = parts["llava"]
        runner = LlavaRunner(model)
        vc, tc = model.config.vision_config, model.config.text_config
        n_img = (vc.image_size // vc.patch_size) ** 2
        tokens = spec.tokens or p["tokens"]
        gen = torch.Generator().manual_seed(spec.seed)
        if task == "retrieval":
            from genprof.workloads import visual_retrieval as vr

            if vc.image_size != vr.IMAGE_SIZE or tc.vocab_size != vr.VOCAB:
                raise GenprofError(f"--set task=retrieval needs a model trained on it (image {vr.IMAGE_SIZE} px, "
                                   f"vocabulary {vr.VOCAB}); {weights!r} is not one")
            b = vr.make_batch(spec.batch, seed=spec.seed)
            inputs = Inputs(b.pixel_values, b.prefix, b.suffix, b.answers)
        else:
            text_ids = tc.vocab_size - 1  # below the image placeholder id
            inputs = Inputs(torch.randn(spec.batch, vc.num_channels, vc.image_size, vc.image_size, generator=gen),
                            torch.randint(0, text_ids, (spec.batch, p["prefix_len"]), generator=gen),
                            torch.randint(0, text_ids, (spec.batch, p["suffix_len"]), generator=gen))
        dtype = next(model.parameters()).dtype
        inputs = Inputs(inputs.pixel_values.to(device=device, dtype=dtype), inputs.prefix.to(device),
                        inputs.suffix.to(device), None if inputs.answers is None else inputs.answers.to(device))
        prompt = inputs.prefix.shape[1] + n_img + inputs.suffix.shape[1]
        all_parts = split_parts(model)
        info = {
            "parameters": count_parameters(all_parts), "image_tokens": n_img, "image_px": vc.image_size,
            "patch_px": vc.patch_size, "text_tokens": prompt - n_img, "prompt_len": prompt,
            "decode_tokens": tokens, "batch": spec.batch, "task": task,
            "vision_feature_layer": model.config.vision_feature_layer, "decoder_layers": tc.num_hidden_layers,
            "sampling": "greedy (argmax)", "attn_implementation": getattr(tc, "_attn_implementation", ""),
        }
        if weights:
            info["weights"] = weights
        return Built(parts=all_parts, infer=make_infer(runner, inputs, tokens, Sparsity()), info=info)

    @staticmethod
    def derived_metrics(phase_stats: dict[str, dict[str, float]], info: dict[str, Any]) -> dict[str, float]:
        """Time to first token (vision + prefill) and time per output token, from the phase medians."""
        out: dict[str, float] = {}
        if "prefill" in phase_stats:
            out["ttft_s"] = phase_stats["prefill"]["median_s"] + phase_stats.get("vision", {}).get("median_s", 0.0)
            out["prefill_s"] = phase_stats["prefill"]["median_s"]
        if "decode" in phase_stats and info.get("decode_tokens"):
            tpot = phase_stats["decode"]["median_s"] / info["decode_tokens"]
            out["tpot_s"] = tpot
            out["decode_tokens_per_s"] = info["batch"] / tpot
        return out
