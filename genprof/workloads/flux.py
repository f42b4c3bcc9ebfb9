"""FLUX.1-dev (double- and single-stream MMDiT with a guidance embedding), built from the published config.

Pipeline, as diffusers' FluxPipeline runs it: CLIP ViT-L (its pooled output,
77 tokens) and T5-v1.1-XXL (512 tokens) over the prompts; no classifier-free
guidance: the guidance scale (3.5) is an input of the transformer, embedded
like the timestep. The 16-channel latent is packed into 2x2 patches (64
channels, 4096 tokens at 1024 px). N steps of the FluxTransformer2DModel with
a flow-matching Euler scheduler whose shift grows with the image token count
(`mu`): 19 double-stream blocks (separate weights for image and text tokens,
one attention over both) then 38 single-stream blocks (one sequence of text +
image tokens, attention and MLP side by side), every attention over 512 + 4096
tokens with 3D rotary positions, tagged `joint`. Then the 16-channel VAE
decodes the unpacked latent (latents / scaling + shift). `paper` is
FLUX.1-dev at 1024 px, 28 steps. Random weights from configs, or real ones
from a diffusers-layout directory (`text_encoder/`, `text_encoder_2/`,
`transformer/`, `vae/`, safetensors). Not here: true CFG with a negative
prompt, how it is measured.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from genprof.spec import RunSpec
from genprof.workloads import _dit
from genprof.workloads.base import (Built, Phases, Workload, clip_text_config, count_parameters, load_scheduler,
                                    load_subfolders)
from genprof.workloads.registry import register

PRESETS: dict[str, dict[str, Any]] = {
    # axes_dims_rope: the rotary dimensions of (text/index, row, column); they add up to attention_head_dim.
    "tiny": dict(
        transformer=dict(num_layers=1, num_single_layers=2, num_attention_heads=2, attention_head_dim=8,
                         axes_dims_rope=(2, 2, 4)),
        text=_dit.CLIP_TINY, text_2=_dit.T5_TINY,
        vae=dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8),
        latent=8, steps=2, text_len=16, t5_len=8),
    "small": dict(
        transformer=dict(num_layers=2, num_single_layers=4, num_attention_heads=4, attention_head_dim=64,
                         axes_dims_rope=(8, 28, 28)),
        text={**_dit.CLIP_TINY, "vocab_size": 8192, "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 4},
        text_2=_dit.T5_SMALL, vae=dict(block_out_channels=(8, 16, 32, 32), layers_per_block=2, norm_num_groups=8),
        latent=64, steps=5, text_len=32, t5_len=64),
    "paper": dict(  # black-forest-labs/FLUX.1-dev
        transformer=dict(num_layers=19, num_single_layers=38, num_attention_heads=24, attention_head_dim=128,
                         axes_dims_rope=(16, 56, 56)),
        text=_dit.CLIP_L, text_2=_dit.T5_XXL, vae=_dit.SD_VAE, latent=128, steps=28, text_len=77, t5_len=512),
}
GUIDANCE = 3.5  # FluxPipeline default, embedded (no classifier-free guidance batch)
VAE_SCALING, VAE_SHIFT = 0.3611, 0.1159  # Flux's VAE
# Flux's scheduler: the shift mu grows linearly from 0.5 at 256 image tokens to 1.15 at 4096.
SHIFT = dict(base_image_seq_len=256, max_image_seq_len=4096, base_shift=0.5, max_shift=1.15)


def build_parts(p: dict[str, Any]) -> dict[str, torch.nn.Module]:
    """CLIP and T5 encoders, the transformer and the VAE from the preset's configs, random weights."""
    from diffusers import FluxTransformer2DModel
    from transformers import CLIPTextModel

    transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, joint_attention_dim=p["text_2"]["d_model"],
                                         pooled_projection_dim=p["text"]["hidden_size"], guidance_embeds=True,
                                         **p["transformer"])
    return {"text_encoder": CLIPTextModel(clip_text_config(p["text"])), "text_encoder_2": _dit.t5_encoder(p["text_2"]),
            "transformer": transformer, "vae": _dit.kl16_vae(p["vae"], p["latent"], VAE_SCALING, VAE_SHIFT)}


def load_parts(path: str, dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    """Real weights from a diffusers-layout FLUX.1 directory (save_pretrained, safetensors)."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5EncoderModel

    return load_subfolders(path, dtype, {"text_encoder": CLIPTextModel, "text_encoder_2": T5EncoderModel,
                                         "transformer": FluxTransformer2DModel, "vae": AutoencoderKL})


def make_scheduler(weights: str | None) -> Any:
    """Flux's flow-matching Euler scheduler with dynamic shifting (its `scheduler/` config with real weights)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return load_scheduler(FlowMatchEulerDiscreteScheduler, weights, shift=3.0, use_dynamic_shifting=True, **SHIFT)


def shift_mu(image_tokens: int, config: Any) -> float:
    """The pipeline's `calculate_shift`: mu on the line through (base_seq_len, base_shift), (max_seq_len, max_shift)."""
    lo, hi = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    a, b = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    return a + (b - a) * (image_tokens - lo) / (hi - lo)


def image_ids(grid: int) -> torch.Tensor:
    """Positions of the packed latent tokens for the rotary embedding: (0, row, column), row-major."""
    ids = torch.zeros(grid, grid, 3)
    ids[..., 1] += torch.arange(grid)[:, None]
    ids[..., 2] += torch.arange(grid)[None, :]
    return ids.reshape(grid * grid, 3)


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(b, c, h, w) -> (b, h/2 * w/2, 4c): 2x2 latent patches as tokens."""
    b, c, h, w = latents.shape
    return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), 4 * c)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, _, c4 = tokens.shape
    return tokens.view(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c4 // 4, h, w)


@register
class Flux(Workload):
    name = "flux"
    kind = "diffusion-tti"
    stand_in = ("FLUX.1-dev (diffusers FluxTransformer2DModel: 19 double- + 38 single-stream blocks, joint attention "
                "over 512 text + 4096 image tokens, guidance embedding; CLIP-L, T5-XXL; 16-channel VAE; 1024 px)")
    phases = ("text_encoder", "denoise", "decode")
    presets = PRESETS

    def build(self, spec: RunSpec) -> Built:
        p, device, dtype, parts, scheduler = _dit.start(self, spec, build_parts, load_parts, make_scheduler)
        clip, t5, transformer, vae = parts["text_encoder"], parts["text_encoder_2"], parts["transformer"], parts["vae"]
        kinds = _dit.tag_attention(transformer, lambda name: "joint")
        steps = spec.steps or p["steps"]
        batch, text_len, t5_len = spec.batch, p["text_len"], p["t5_len"]
        latent, channels = p["latent"], transformer.config.in_channels // 4
        grid = latent // 2
        gen = torch.Generator().manual_seed(spec.seed)
        ids = _dit.prompt_ids(gen, clip.config.vocab_size, batch, text_len, device)
        ids_t5 = _dit.prompt_ids(gen, t5.config.vocab_size, batch, t5_len, device)
        noise = pack(torch.randn((batch, channels, latent, latent), generator=gen)).to(device, dtype)
        img_ids, txt_ids = image_ids(grid).to(device, dtype), torch.zeros(t5_len, 3).to(device, dtype)
        guidance = torch.full((batch,), GUIDANCE, dtype=torch.float32).to(device)
        sigmas = np.linspace(1.0, 1 / steps, steps)
        mu = shift_mu(grid * grid, scheduler.config)

        def infer(phases: Phases) -> torch.Tensor:
            with phases.phase("text_encoder"):
                pooled = clip(ids).pooler_output
                context = t5(ids_t5)[0]
            scheduler.set_timesteps(sigmas=sigmas, mu=mu)
            latents = noise
            with phases.phase("denoise"):
                for i, t in enumerate(scheduler.timesteps):
                    with phases.step(i):
                        v = transformer(hidden_states=latents, timestep=(t.expand(batch) / 1000).to(device, dtype),
                                        guidance=guidance, pooled_projections=pooled, encoder_hidden_states=context,
                                        txt_ids=txt_ids, img_ids=img_ids).sample
                        latents = scheduler.step(v, t, latents).prev_sample
            with phases.phase("decode"):
                x = unpack(latents, latent, latent)
                return vae.decode(x / vae.config.scaling_factor + vae.config.shift_factor).sample

        info = {
            "parameters": count_parameters(parts), "steps": steps, "batch": batch,
            "latent_shape": [batch, channels, latent, latent], "image_px": latent * 2 ** (len(vae.config.block_out_channels) - 1),
            "image_tokens": grid * grid, "text_tokens": t5_len, "joint_tokens": grid * grid + t5_len,
            "attention_modules": kinds, "guidance": f"embedded (scale {GUIDANCE}), transformer batch 1x",
        }
        return Built(parts=parts, infer=infer, info=info)
