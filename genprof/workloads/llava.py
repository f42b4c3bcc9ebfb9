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

The decoder runs on the decoder engine (genprof.engine), as `llm`'s does:
the vision phase makes the prompt (text ids, projected image features, text
ids; the image tokens are the prompt's `image` region), the engine's batch
schedule prefills and decodes it with the transformers modules (same logits
as the transformers forward). Vision-context sparsification (`--opt
vision-prune`, `--opt text-prune`, genprof/optimizations/) adds token
policies to the engine. `--set task=retrieval` feeds the synthetic visual retrieval task
(genprof/workloads/visual_retrieval.py) to the model trained on it (bundled in
genprof/assets/retrieval-llava, or `--weights DIR`), so accuracy is measurable.
Not here: image preprocessing (pixel values are made directly), tokenizers,
sampling other than greedy, LLaVA-NeXT's image tiling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from genprof.engine import DecoderEngine, Prompt
from genprof.errors import GenprofError, unknown_choice
from genprof.spec import RunSpec
from genprof.workloads.base import (Built, Phases, Workload, count_parameters, make_parts, require_weights_dir,
                                    weights_config_value)
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
    """The Llama decoder and its LM head as one part (the modules are shared with the LLaVA model). It has
    the shape of a causal LM (`model`, `lm_head`, `config`), so the decoder engine runs it."""

    def __init__(self, decoder: torch.nn.Module, lm_head: torch.nn.Module):
        super().__init__()
        self.decoder = decoder
        self.lm_head = lm_head

    @property
    def model(self) -> torch.nn.Module:
        return self.decoder

    @property
    def config(self) -> Any:
        return self.decoder.config


def image_features(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """LLaVA's image features: a hidden layer of the vision tower (CLS dropped by default), projected."""
    c, inner = model.config, model.model
    out = inner.vision_tower(pixel_values, output_hidden_states=True)
    feats = out.hidden_states[c.vision_feature_layer]
    if c.vision_feature_select_strategy == "default":
        feats = feats[:, 1:]
    return inner.multi_modal_projector(feats)


@dataclass
class Inputs:
    pixel_values: torch.Tensor
    prefix: torch.Tensor
    suffix: torch.Tensor
    answers: torch.Tensor | None = None  # the task's answer tokens (task=retrieval)


def make_prompt(model: torch.nn.Module, inputs: Inputs, tokens: int) -> Callable[[Phases], Prompt]:
    """The engine's prompt: the vision tower and projector run in phase `vision`, then `prefix, image, suffix`."""

    def prompt(phases: Phases) -> Prompt:
        with phases.phase("vision"):
            feats = image_features(model, inputs.pixel_values)
        p, n_img = inputs.prefix.shape[1], feats.shape[1]
        return Prompt([inputs.prefix, feats, inputs.suffix], tokens, regions={"image": (p, p + n_img)})

    return prompt


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

    def decoder_layers(self, spec: RunSpec) -> int:
        from genprof.workloads import visual_retrieval as vr

        p = self.config(spec)
        weights = spec.weights or (str(vr.ASSET) if p["task"] == "retrieval" else None)
        return weights_config_value(weights, "num_hidden_layers", sub="text_config") or \
            int(p["text"]["num_hidden_layers"])

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
        lm = all_parts["language_model"]
        engine = DecoderEngine(lm, prompt=make_prompt(model, inputs, tokens))
        return Built(parts=all_parts, engine=engine, info=info,
                     inputs={"prompt": inputs, "answers": inputs.answers})

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
