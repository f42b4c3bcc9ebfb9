"""Muse (masked image-token transformer, parallel decoding), built as aMUSEd.

Pipeline, as aMUSEd runs it: CLIP text encoder with projection over the
prompts and the empty prompts (classifier-free guidance; the penultimate hidden
states condition the transformer by cross-attention, the projected pooled
embedding by adaptive norms) -> N parallel decoding steps of the UVit2DModel
over the doubled batch, MaskGIT style: every step predicts every image token,
keeps the most confident, and re-masks the rest by a cosine schedule ->
VQModel decode of the token grid to pixels. `paper` is aMUSEd-512 (VQ-GAN with
16x downsampling and 8192 codes: 512 px = 32x32 = 1024 tokens; UViT with 1024
hidden, 22 layers, 16 heads, a 2x down/up-sampling conv block around the
transformer so its layers attend over 16x16 = 256 positions; CLIP-L/14 text
encoder; 12 steps). Greedy token choice (argmax) and a fixed Gumbel confidence
noise drawn at build time, all as tensor ops, so the same code runs on the
meta device. Random weights from configs, or real ones from a diffusers-layout
directory (`text_encoder/`, `transformer/`, `vqvae/`, safetensors).
Not here: how it is measured.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from genprof.spec import RunSpec
from genprof.workloads.base import (Built, Phases, Workload, clip_text_config, count_parameters, load_subfolders,
                                    make_parts, torch_dtype, vq_model)
from genprof.workloads.params import CLIP_TEXT
from genprof.workloads.registry import register

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        text=dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, projection_dim=32),
        transformer=dict(hidden_size=32, cond_embed_dim=32, micro_cond_encode_dim=8, micro_cond_embed_dim=40,
                         encoder_hidden_size=32, vocab_size=65, codebook_size=64, in_channels=16,
                         block_out_channels=32, num_res_blocks=1, downsample=True, upsample=True,
                         block_num_heads=2, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
        vq=dict(block_out_channels=(16, 32), layers_per_block=1, latent_channels=8, num_vq_embeddings=64,
                norm_num_groups=8),
        grid=8, steps=3, text_len=8),
    "small": dict(
        text=dict(vocab_size=8192, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                  num_attention_heads=4, projection_dim=256),
        transformer=dict(hidden_size=384, cond_embed_dim=256, micro_cond_encode_dim=64, micro_cond_embed_dim=320,
                         encoder_hidden_size=256, vocab_size=1088, codebook_size=1024, in_channels=192,
                         block_out_channels=192, num_res_blocks=3, downsample=True, upsample=True,
                         block_num_heads=4, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1056),
        vq=dict(block_out_channels=(16, 32, 64, 64, 128), layers_per_block=1, latent_channels=32,
                num_vq_embeddings=1024, norm_num_groups=8),
        grid=16, steps=12, text_len=77),
    "paper": dict(  # aMUSEd-512 (diffusers scripts/convert_amused.py and the openMUSE research-run config)
        text=dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, projection_dim=768, hidden_act="quick_gelu",
                  bos_token_id=49406, eos_token_id=49407),
        transformer=dict(hidden_size=1024, cond_embed_dim=768, micro_cond_encode_dim=256, micro_cond_embed_dim=1280,
                         encoder_hidden_size=768, vocab_size=8256, codebook_size=8192, in_channels=768,
                         block_out_channels=768, num_res_blocks=3, downsample=True, upsample=True,
                         block_num_heads=12, num_hidden_layers=22, num_attention_heads=16, intermediate_size=2816),
        vq=dict(block_out_channels=(128, 256, 256, 512, 768), layers_per_block=2, latent_channels=64,
                num_vq_embeddings=8192, norm_num_groups=32),
        grid=32, steps=12, text_len=77),
}
GUIDANCE_SCALE = 10.0  # aMUSEd's default
TEMPERATURE = (2.0, 0.0)  # confidence-noise temperature, annealed linearly over the steps (aMUSEd's default)
AESTHETIC_SCORE = 6  # micro-conditioning, aMUSEd's default


def build_parts(p: dict[str, Any]) -> dict[str, torch.nn.Module]:
    """CLIP text encoder with projection, UVit2DModel and VQModel from the preset's configs, random weights."""
    from diffusers import UVit2DModel
    from transformers import CLIPTextModelWithProjection

    text = CLIPTextModelWithProjection(clip_text_config(p["text"]))
    transformer = UVit2DModel(sample_size=p["grid"], **p["transformer"])
    vq = vq_model(p["vq"], p["grid"], mid_block_add_attention=False)
    return {"text_encoder": text, "transformer": transformer, "vqvae": vq}


def load_parts(path: str, dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    """Real weights from an aMUSEd diffusers-layout directory (save_pretrained, safetensors)."""
    from diffusers import UVit2DModel, VQModel
    from transformers import CLIPTextModelWithProjection

    return load_subfolders(path, dtype, {"text_encoder": CLIPTextModelWithProjection, "transformer": UVit2DModel,
                                         "vqvae": VQModel})


def mask_schedule(tokens: int, steps: int) -> list[int]:
    """How many tokens stay masked after each step: aMUSEd's cosine schedule, as plain integers.

    floor(N cos(pi/2 (i+1)/S)), never more than one fewer than before, at least one, and none
    after the last step. It depends on N and S only, so the loop has no data-dependent branch.
    """
    out, prev = [], tokens
    for i in range(steps):
        if i == steps - 1:
            n = 0
        else:
            n = max(1, min(prev - 1, math.floor(tokens * math.cos(math.pi / 2 * (i + 1) / steps))))
        out.append(n)
        prev = n
    return out


@register
class Muse(Workload):
    name = "muse"
    kind = "transformer-tti"
    stand_in = ("aMUSEd-512 architecture (diffusers UVit2DModel + VQModel + CLIPTextModelWithProjection), "
                "MaskGIT parallel decoding")
    phases = ("text_encoder", "decode_tokens", "vq_decode")
    presets = PRESETS
    bounds = {"text_len": CLIP_TEXT}
    counted_by = "steps"
    count_meaning = "parallel decoding steps (every step predicts every image token)"

    def build(self, spec: RunSpec) -> Built:
        p = self.config(spec)
        device, dtype = torch.device(spec.device), torch_dtype(spec.dtype)
        parts = make_parts(spec, lambda: build_parts(p), load_parts)
        text, transformer, vq = parts["text_encoder"], parts["transformer"], parts["vqvae"]
        steps = spec.steps or p["steps"]
        batch, text_len = spec.batch, p["text_len"]
        grid = transformer.config.sample_size
        n_tokens = grid * grid
        codebook = transformer.config.codebook_size
        mask_id = transformer.config.vocab_size - 1
        sched_cfg = os.path.join(spec.weights or "", "scheduler", "scheduler_config.json")
        if spec.weights and os.path.isfile(sched_cfg):
            import json

            with open(sched_cfg) as f:
                mask_id = int(json.load(f).get("mask_token_id", mask_id))
        vq_factor = 2 ** (len(vq.config.block_out_channels) - 1)
        image_px = grid * vq_factor
        vq_dim = vq.config.vq_embed_dim or vq.config.latent_channels
        schedule = mask_schedule(n_tokens, steps)

        gen = torch.Generator().manual_seed(spec.seed)
        # Prompt and empty prompt token ids (random ids: no tokenizer is needed to profile).
        ids = torch.randint(0, text.config.vocab_size, (2 * batch, text_len), generator=gen).to(device)
        uniform = torch.rand((steps, batch, n_tokens), generator=gen).clamp_(1e-20, 1.0)
        gumbel = (-torch.log((-torch.log(uniform)).clamp(1e-20))).to(device)
        t0, t1 = TEMPERATURE
        temps = [t0 + (t1 - t0) * i / max(steps - 1, 1) for i in range(steps)]  # as torch.linspace
        micro = torch.tensor([[image_px, image_px, 0, 0, AESTHETIC_SCORE]], dtype=torch.float32)
        micro_conds = micro.expand(2 * batch, -1).to(device, dtype)

        def infer(phases: Phases) -> torch.Tensor:
            with phases.phase("text_encoder"):
                out = text(ids, output_hidden_states=True)
                pooled, hidden = out.text_embeds, out.hidden_states[-2]
            tokens = torch.full((batch, n_tokens), mask_id, dtype=torch.long, device=device)
            with phases.phase("decode_tokens"):
                for i in range(steps):
                    with phases.step(i):
                        x = torch.cat([tokens, tokens]).view(2 * batch, grid, grid)
                        logits = transformer(x, micro_conds=micro_conds, pooled_text_emb=pooled,
                                             encoder_hidden_states=hidden)
                        cond, uncond = logits.chunk(2)  # ids: prompts first, then the empty prompts
                        logits = uncond + GUIDANCE_SCALE * (cond - uncond)
                        logits = logits.reshape(batch, codebook, n_tokens).transpose(1, 2)
                        conf, pred = logits.float().softmax(-1).max(-1)
                        unknown = tokens == mask_id
                        pred = torch.where(unknown, pred, tokens)
                        n_mask = schedule[i]
                        if n_mask == 0:  # the last step: every token revealed
                            tokens = pred
                            continue
                        score = torch.log(conf.clamp(min=1e-20)) + temps[i] * gumbel[i]
                        score = torch.where(unknown, score, torch.finfo(score.dtype).max)
                        lowest = score.topk(n_mask, dim=-1, largest=False).indices
                        remask = torch.zeros_like(unknown).scatter(-1, lowest, True)
                        tokens = torch.where(remask, mask_id, pred)
            with phases.phase("vq_decode"):
                image = vq.decode(tokens, force_not_quantize=True, shape=(batch, grid, grid, vq_dim)).sample
                return image.clip(0, 1)

        attn_grid = grid // 2 if transformer.config.downsample else grid
        info = {
            "parameters": count_parameters(parts), "steps": steps, "batch": batch,
            "token_grid": [grid, grid], "image_tokens": n_tokens, "codebook_size": codebook,
            "transformer_grid": [attn_grid, attn_grid], "transformer_positions": attn_grid * attn_grid,
            "masked_after_step": schedule, "image_px": image_px, "vq_downsampling": vq_factor,
            "text_len": text_len, "guidance": "classifier-free, transformer batch 2x",
            "sampling": "greedy tokens, confidence + annealed Gumbel noise, cosine masking schedule",
        }
        return Built(parts=parts, infer=infer, info=info)

    @staticmethod
    def derived_metrics(phase_stats: dict[str, dict[str, float]], info: dict[str, Any]) -> dict[str, float]:
        """Time per parallel decoding step, from the decode_tokens median."""
        if "decode_tokens" not in phase_stats or not info.get("steps"):
            return {}
        return {"time_per_step_s": phase_stats["decode_tokens"]["median_s"] / info["steps"]}
