"""CM3leon (autoregressive decoder-only over mixed text and image tokens), built from Llama blocks.

Pipeline, as CM3leon runs it for text-to-image: one decoder-only transformer
over a single vocabulary of text and image tokens. `prefill` runs the text
prompt through the decoder in one forward (filling the KV cache); `decode`
then emits the image tokens one at a time, each a step of its own: step 0
feeds the `<break>` token that opens the image span, step i feeds image token
i-1, and every step attends to the whole cache (prompt + image so far). Both
the prompt and an unconditional prompt (text replaced by a mask token) run as
one batch, classifier-free guidance as in CM3leon; only image ids are sampled
(greedy, argmax). A VQ image decoder turns the token grid into pixels. `paper`
follows CM3leon-7B (32 layers, d_model 4096, 32 heads, 4096-token context;
56,320-token vocabulary holding the 8192 image codes; image tokenizer of Gafni
et al. with 8x downsampling: 256 px = 32x32 = 1024 tokens).

Stand-ins: the decoder is transformers' LlamaForCausalLM (RMSNorm, RoPE,
SwiGLU MLP of 11008 so its weights match the 4x-wide two-matrix MLP of the
OPT-style CM3leon); the image decoder is a diffusers VQModel with 8x
downsampling and 8192 codes. Random weights from configs, or real ones from a
directory with `model/` (transformers) and `vqvae/` (diffusers), safetensors.
Not here: retrieval augmentation, contrastive decoding (CD-K), sampling.
"""

from __future__ import annotations

from typing import Any

import torch

from genprof.errors import GenprofError
from genprof.spec import RunSpec
from genprof.workloads.base import (Built, Phases, Workload, cache_kwarg, count_parameters, dynamic_cache,
                                    load_subfolders, make_parts, vq_model)
from genprof.workloads.registry import register

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(config=dict(vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=4),
                 codebook=64, prompt_len=8, grid=4,
                 vq=dict(block_out_channels=(16, 32), layers_per_block=1, latent_channels=8, vq_embed_dim=8,
                         norm_num_groups=8)),
    "small": dict(config=dict(vocab_size=8192, hidden_size=384, intermediate_size=1024, num_hidden_layers=6,
                              num_attention_heads=6, num_key_value_heads=6),
                  codebook=1024, prompt_len=32, grid=16,
                  vq=dict(block_out_channels=(32, 32, 64, 64), layers_per_block=1, latent_channels=32,
                          vq_embed_dim=32, norm_num_groups=16)),
    "paper": dict(  # CM3leon-7B (Yu et al. 2023): 32 layers, 4096 model, 32 heads, 4096 context
        config=dict(vocab_size=56320, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=32),
        codebook=8192, prompt_len=128, grid=32,
        vq=dict(block_out_channels=(128, 256, 256, 512), layers_per_block=2, latent_channels=256,
                vq_embed_dim=256, norm_num_groups=32)),
}
GUIDANCE_SCALE = 3.0


def build_model(p: dict[str, Any]) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(max_position_embeddings=4096, **p["config"])
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config)


def build_vq(p: dict[str, Any]) -> torch.nn.Module:
    return vq_model(p["vq"], p["grid"], num_vq_embeddings=p["codebook"])


def load_parts(path: str, dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    from diffusers import VQModel
    from transformers import AutoModelForCausalLM

    return load_subfolders(path, dtype, {"model": (AutoModelForCausalLM, {"attn_implementation": "sdpa"}),
                                         "vqvae": VQModel})


@register
class CM3leon(Workload):
    name = "cm3leon"
    kind = "transformer-tti"
    stand_in = ("CM3leon-7B shape as a Llama decoder (transformers LlamaForCausalLM, KV cache) over text + image "
                "tokens + diffusers VQModel image decoder")
    phases = ("prefill", "decode", "vq_decode")
    presets = PRESETS
    counted_by = "tokens"
    count_meaning = "image tokens decoded (one per step)"

    def max_count(self, p: dict[str, Any]) -> int:
        return p["grid"] ** 2

    def build(self, spec: RunSpec) -> Built:
        p = self.config(spec)
        device = torch.device(spec.device)
        parts = make_parts(spec, lambda: {"model": build_model(p), "vqvae": build_vq(p)}, load_parts)
        model, vq = parts["model"], parts["vqvae"]
        vocab = model.config.vocab_size
        codebook = vq.config.num_vq_embeddings
        image_offset = vocab - codebook  # the image codes are the last ids of the vocabulary
        if image_offset < 3:
            raise GenprofError(f"cm3leon: the model's vocabulary ({vocab}) must hold text ids, <break>, <mask> "
                               f"and the VQ codebook ({codebook})")
        break_id, mask_id = image_offset - 1, image_offset - 2
        factor = 2 ** (len(vq.config.block_out_channels) - 1)
        grid = vq.config.sample_size // factor
        n_grid = grid * grid
        tokens = min(spec.tokens or n_grid, n_grid)
        vq_dim = vq.config.vq_embed_dim or vq.config.latent_channels
        batch, prompt_len = spec.batch, p["prompt_len"]
        cache_kw = cache_kwarg(model)

        gen = torch.Generator().manual_seed(spec.seed)
        # Text prompts (random text ids: no tokenizer is needed to profile), then as many unconditional
        # prompts of the same length: the text replaced by the mask token (CM3leon's CFG).
        text = torch.randint(0, mask_id, (batch, prompt_len), generator=gen)
        prompt = torch.cat([text, torch.full_like(text, mask_id)]).to(device)
        brk = torch.full((2 * batch, 1), break_id, dtype=torch.long).to(device)
        pad = torch.zeros((batch, n_grid - tokens), dtype=torch.long).to(device)  # rest of the grid, counting runs

        def infer(phases: Phases) -> torch.Tensor:
            cache = dynamic_cache(model)
            with phases.phase("prefill"):
                model(prompt, use_cache=True, logits_to_keep=1, **{cache_kw: cache})
            out, next_in = [], brk
            with phases.phase("decode"):
                for i in range(tokens):
                    with phases.step(i):
                        logits = model(next_in, use_cache=True, **{cache_kw: cache}).logits[:, -1, image_offset:]
                        cond, uncond = logits.chunk(2)
                        code = (uncond + GUIDANCE_SCALE * (cond - uncond)).argmax(-1, keepdim=True)
                        out.append(code)
                        next_in = (code + image_offset).repeat(2, 1)  # both streams continue with the same token
            codes = torch.cat(out + [pad], dim=1)
            with phases.phase("vq_decode"):
                image = vq.decode(codes, force_not_quantize=True, shape=(batch, grid, grid, vq_dim)).sample
                return image.clamp(-1, 1)

        parameters = count_parameters(parts)
        embed = sum(w.numel() for w in model.get_input_embeddings().parameters())
        info = {
            "parameters": parameters,
            "parameters_detail": {"embedding": embed, "non_embedding": parameters["model"] - embed},
            "prompt_len": prompt_len, "decode_tokens": tokens, "image_tokens": n_grid, "token_grid": [grid, grid],
            "batch": batch, "vocab_size": vocab, "codebook_size": codebook, "image_token_offset": image_offset,
            "image_px": grid * factor, "vq_downsampling": factor,
            "guidance": "classifier-free (masked-text prompt), decoder batch 2x", "sampling": "greedy (argmax)",
            "attn_implementation": getattr(model.config, "_attn_implementation", ""),
        }
        return Built(parts=parts, infer=infer, info=info)

    @staticmethod
    def derived_metrics(phase_stats: dict[str, dict[str, float]], info: dict[str, Any]) -> dict[str, float]:
        """Prefill time, time per image token and image tokens per second, from the phase medians."""
        out: dict[str, float] = {}
        if "prefill" in phase_stats:
            out["prefill_s"] = phase_stats["prefill"]["median_s"]
        if "decode" in phase_stats and info.get("decode_tokens"):
            per_token = phase_stats["decode"]["median_s"] / info["decode_tokens"]
            out["time_per_image_token_s"] = per_token
            out["image_tokens_per_s"] = info["batch"] / per_token
        return out
