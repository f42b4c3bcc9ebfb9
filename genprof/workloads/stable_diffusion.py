"""Stable Diffusion (latent diffusion with a UNet): the reference diffusion profile.

Pipeline, as the study ran it: CLIP text encoder over the prompts and the
empty prompts (classifier-free guidance) -> N denoising steps of the
UNet2DConditionModel on the doubled latent batch, each a step of its own, with
a DDIM scheduler -> AutoencoderKL decode to pixels. `paper` is the SD 1.5
configuration (UNet 320/640/1280/1280, 2 layers per block, 8 heads, cross
attention 768; CLIP ViT-L text encoder; 512 px = 64x64 latent; 50 steps).
Random weights from configs, or real ones from a diffusers-layout directory
(`unet/`, `text_encoder/`, `vae/`, safetensors). Not here: how it is measured.
"""

from __future__ import annotations

from typing import Any

import torch

from genprof.spec import RunSpec
from genprof.workloads.base import (Built, Phases, Workload, autoencoder_kl, clip_text_config, count_parameters,
                                    load_scheduler, load_subfolders, make_parts, torch_dtype)
from genprof.workloads.params import CLIP_TEXT, SCHEDULER_STEPS
from genprof.workloads.registry import register

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        unet=dict(block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=4, norm_num_groups=8,
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32),
        text=dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4),
        vae=dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8),
        latent=8, steps=2, text_len=16),
    "small": dict(
        unet=dict(block_out_channels=(64, 128, 256, 256), layers_per_block=2, attention_head_dim=8,
                  norm_num_groups=32, cross_attention_dim=256,
                  down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                  up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
        text=dict(vocab_size=8192, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                  num_attention_heads=4),
        vae=dict(block_out_channels=(32, 64, 128, 128), layers_per_block=2, norm_num_groups=32),
        latent=32, steps=10, text_len=77),
    "paper": dict(  # Stable Diffusion 1.5
        unet=dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, attention_head_dim=8,
                  norm_num_groups=32, cross_attention_dim=768,
                  down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                  up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
        text=dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407),
        vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32),
        latent=64, steps=50, text_len=77),
}
GUIDANCE_SCALE = 7.5
VAE_SCALING = 0.18215


def build_parts(p: dict[str, Any]) -> dict[str, torch.nn.Module]:
    """Text encoder, UNet and VAE from the preset's configs, random weights."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    text = CLIPTextModel(clip_text_config(p["text"]))
    unet = UNet2DConditionModel(sample_size=p["latent"], in_channels=4, out_channels=4, **p["unet"])
    vae = autoencoder_kl(p["vae"], p["latent"])
    return {"text_encoder": text, "unet": unet, "vae": vae}


def load_parts(path: str, dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    """Real weights from a diffusers-layout directory (save_pretrained, safetensors)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    return load_subfolders(path, dtype, {"text_encoder": CLIPTextModel, "unet": UNet2DConditionModel,
                                         "vae": AutoencoderKL})


@register
class StableDiffusion(Workload):
    name = "stable-diffusion"
    kind = "diffusion-tti"
    stand_in = "Stable Diffusion 1.5 architecture (diffusers UNet2DConditionModel + CLIP + AutoencoderKL)"
    phases = ("text_encoder", "denoise", "decode")
    presets = PRESETS
    bounds = {"steps": SCHEDULER_STEPS, "text_len": CLIP_TEXT}

    def build(self, spec: RunSpec) -> Built:
        from diffusers import DDIMScheduler

        p = self.config(spec)
        device, dtype = torch.device(spec.device), torch_dtype(spec.dtype)
        parts = make_parts(spec, lambda: build_parts(p), load_parts)
        scheduler = load_scheduler(DDIMScheduler, spec.weights)
        text, unet, vae = parts["text_encoder"], parts["unet"], parts["vae"]
        steps = spec.steps or p["steps"]
        batch, text_len = spec.batch, p["text_len"]
        latent = unet.config.sample_size
        vocab = text.config.vocab_size
        gen = torch.Generator().manual_seed(spec.seed)
        # Prompt and empty prompt token ids (random ids: no tokenizer is needed to profile).
        ids = torch.randint(0, vocab, (2 * batch, text_len), generator=gen).to(device)
        noise = torch.randn((batch, unet.config.in_channels, latent, latent), generator=gen).to(device, dtype)
        scaling = getattr(vae.config, "scaling_factor", VAE_SCALING)

        def infer(phases: Phases) -> torch.Tensor:
            with phases.phase("text_encoder"):
                emb = text(ids)[0]
            scheduler.set_timesteps(steps)
            latents = noise * scheduler.init_noise_sigma
            with phases.phase("denoise"):
                for i, t in enumerate(scheduler.timesteps):
                    with phases.step(i):
                        x = scheduler.scale_model_input(torch.cat([latents, latents]), t)
                        eps = unet(x, t, encoder_hidden_states=emb).sample
                        eps_text, eps_uncond = eps.chunk(2)
                        eps = eps_uncond + GUIDANCE_SCALE * (eps_text - eps_uncond)
                        latents = scheduler.step(eps, t, latents).prev_sample
            with phases.phase("decode"):
                return vae.decode(latents / scaling).sample

        info = {
            "parameters": count_parameters(parts), "steps": steps, "batch": batch,
            "latent_shape": [batch, unet.config.in_channels, latent, latent],
            "image_px": latent * 2 ** (len(vae.config.block_out_channels) - 1),
            "text_len": text_len, "guidance": "classifier-free, UNet batch 2x",
        }
        return Built(parts=parts, infer=infer, info=info)
