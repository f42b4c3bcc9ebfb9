"""Stable Diffusion 3 medium (MMDiT: text and image tokens in one joint attention), built from the published config.

Pipeline, as diffusers' StableDiffusion3Pipeline runs it: three text
encoders over the prompts and the empty prompts (classifier-free guidance):
CLIP ViT-L and OpenCLIP bigG (both `CLIPTextModelWithProjection`, 77
tokens; penultimate hidden states concatenated, 768 + 1280 = 2048, zero-padded
to T5's 4096; pooled projections concatenated, 2048) and T5-v1.1-XXL (256
tokens); the context is the CLIP states then the T5 states, 77 + 256 = 333
tokens. Then N steps of the SD3Transformer2DModel on the doubled latent batch
with a flow-matching Euler scheduler (shift 3.0): every block keeps separate
weights for the image and the text stream but runs ONE attention over both
(image tokens + 333 text tokens), tagged `joint`. Then the 16-channel VAE
decodes (latents / scaling + shift). `paper` is stable-diffusion-3-medium:
24 blocks of 24 heads x 64, 1024 px = 128x128x16 latent = 4096 image tokens,
28 steps, guidance 7.0. Random weights from configs, or real ones from a
diffusers-layout directory (`text_encoder/`, `text_encoder_2/`,
`text_encoder_3/`, `transformer/`, `vae/`, safetensors). Not here: skip-layer
guidance, SD3.5's dual-attention blocks, how it is measured.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from genprof.spec import RunSpec
from genprof.workloads import _dit
from genprof.workloads.base import (Built, Phases, Workload, clip_text_config, count_parameters, load_scheduler,
                                    load_subfolders)
from genprof.workloads.registry import register

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        transformer=dict(num_layers=2, num_attention_heads=2, attention_head_dim=8, pos_embed_max_size=16),
        text=_dit.CLIP_TINY, text_2={**_dit.CLIP_TINY, "hidden_size": 16, "projection_dim": 16, "num_attention_heads": 2},
        text_3=_dit.T5_TINY, vae=dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8),
        latent=8, steps=2, text_len=16, t5_len=8),
    "small": dict(
        transformer=dict(num_layers=6, num_attention_heads=4, attention_head_dim=64, pos_embed_max_size=64),
        text={**_dit.CLIP_TINY, "vocab_size": 8192, "hidden_size": 64, "intermediate_size": 256,
              "num_hidden_layers": 4, "projection_dim": 64},
        text_2={**_dit.CLIP_TINY, "vocab_size": 8192, "hidden_size": 128, "intermediate_size": 512,
                "num_hidden_layers": 4, "projection_dim": 128},
        text_3=_dit.T5_SMALL, vae=dict(block_out_channels=(8, 16, 32, 32), layers_per_block=2, norm_num_groups=8),
        latent=64, steps=5, text_len=32, t5_len=32),
    "paper": dict(  # stabilityai/stable-diffusion-3-medium-diffusers
        transformer=dict(num_layers=24, num_attention_heads=24, attention_head_dim=64, pos_embed_max_size=192),
        text=_dit.CLIP_L, text_2=_dit.CLIP_G, text_3=_dit.T5_XXL, vae=_dit.SD_VAE,
        latent=128, steps=28, text_len=77, t5_len=256),
}
GUIDANCE_SCALE = 7.0  # StableDiffusion3Pipeline default
VAE_SCALING, VAE_SHIFT = 1.5305, 0.0609  # SD3's VAE
FLOW_SHIFT = 3.0  # SD3's FlowMatchEulerDiscreteScheduler


def build_parts(p: dict[str, Any]) -> dict[str, torch.nn.Module]:
    """The three text encoders, the MMDiT and the VAE from the preset's configs, random weights.

    The context width is T5's (the CLIP states are padded to it); the pooled
    input is both CLIP projections together.
    """
    from diffusers import SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection

    t = p["transformer"]
    transformer = SD3Transformer2DModel(
        sample_size=p["latent"], patch_size=2, in_channels=16, out_channels=16,
        joint_attention_dim=p["text_3"]["d_model"], caption_projection_dim=t["num_attention_heads"] * t["attention_head_dim"],
        pooled_projection_dim=p["text"]["projection_dim"] + p["text_2"]["projection_dim"], **t)
    return {"text_encoder": CLIPTextModelWithProjection(clip_text_config(p["text"])),
            "text_encoder_2": CLIPTextModelWithProjection(clip_text_config(p["text_2"])),
            "text_encoder_3": _dit.t5_encoder(p["text_3"]), "transformer": transformer,
            "vae": _dit.kl16_vae(p["vae"], p["latent"], VAE_SCALING, VAE_SHIFT)}


def load_parts(path: str, dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    """Real weights from a diffusers-layout SD3 directory (save_pretrained, safetensors)."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, T5EncoderModel

    return load_subfolders(path, dtype, {
        "text_encoder": CLIPTextModelWithProjection, "text_encoder_2": CLIPTextModelWithProjection,
        "text_encoder_3": T5EncoderModel, "transformer": SD3Transformer2DModel, "vae": AutoencoderKL})


def make_scheduler(weights: str | None) -> Any:
    """SD3's flow-matching Euler scheduler (shift 3.0; its `scheduler/` config when real weights come with one)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return load_scheduler(FlowMatchEulerDiscreteScheduler, weights, shift=FLOW_SHIFT)


@register
class SD3(Workload):
    name = "sd3"
    kind = "diffusion-tti"
    stand_in = ("Stable Diffusion 3 medium (diffusers SD3Transformer2DModel: MMDiT, joint attention over image + "
                "text tokens; CLIP-L, CLIP-G, T5-XXL; 16-channel VAE; 1024 px)")
    phases = ("text_encoder", "denoise", "decode")
    presets = PRESETS

    def build(self, spec: RunSpec) -> Built:
        p, device, dtype, parts, scheduler = _dit.start(self, spec, build_parts, load_parts, make_scheduler)
        clip_l, clip_g, t5 = parts["text_encoder"], parts["text_encoder_2"], parts["text_encoder_3"]
        transformer, vae = parts["transformer"], parts["vae"]
        kinds = _dit.tag_attention(transformer, lambda name: "joint")
        steps = spec.steps or p["steps"]
        batch, text_len, t5_len = spec.batch, p["text_len"], p["t5_len"]
        latent, channels = transformer.config.sample_size, transformer.config.in_channels
        gen = torch.Generator().manual_seed(spec.seed)
        rows = 2 * batch  # empty prompts first, then the prompts
        ids_l = _dit.prompt_ids(gen, clip_l.config.vocab_size, rows, text_len, device)
        ids_g = _dit.prompt_ids(gen, clip_g.config.vocab_size, rows, text_len, device)
        ids_t5 = _dit.prompt_ids(gen, t5.config.vocab_size, rows, t5_len, device)
        noise = torch.randn((batch, channels, latent, latent), generator=gen).to(device, dtype)
        width = t5.config.d_model

        def encode() -> tuple[torch.Tensor, torch.Tensor]:
            out_l = clip_l(ids_l, output_hidden_states=True)
            out_g = clip_g(ids_g, output_hidden_states=True)
            clip = torch.cat([out_l.hidden_states[-2], out_g.hidden_states[-2]], dim=-1)
            clip = F.pad(clip, (0, width - clip.shape[-1]))
            context = torch.cat([clip, t5(ids_t5)[0]], dim=-2)
            return context, torch.cat([out_l.text_embeds, out_g.text_embeds], dim=-1)

        def infer(phases: Phases) -> torch.Tensor:
            with phases.phase("text_encoder"):
                context, pooled = encode()
            scheduler.set_timesteps(steps)
            latents = noise
            with phases.phase("denoise"):
                for i, t in enumerate(scheduler.timesteps):
                    with phases.step(i):
                        x = torch.cat([latents, latents])
                        v = transformer(hidden_states=x, timestep=t.expand(rows).to(device), encoder_hidden_states=context,
                                        pooled_projections=pooled).sample
                        v_uncond, v_text = v.chunk(2)
                        v = v_uncond + GUIDANCE_SCALE * (v_text - v_uncond)
                        latents = scheduler.step(v, t, latents).prev_sample
            with phases.phase("decode"):
                return vae.decode(latents / vae.config.scaling_factor + vae.config.shift_factor).sample

        tokens = (latent // transformer.config.patch_size) ** 2
        info = {
            "parameters": count_parameters(parts), "steps": steps, "batch": batch,
            "latent_shape": [batch, channels, latent, latent], "image_px": latent * 2 ** (len(vae.config.block_out_channels) - 1),
            "image_tokens": tokens, "text_tokens": text_len + t5_len, "joint_tokens": tokens + text_len + t5_len,
            "attention_modules": kinds, "guidance": "classifier-free, transformer batch 2x",
        }
        return Built(parts=parts, infer=infer, info=info)
