"""PixArt-alpha (a diffusion transformer with cross-attention to T5 text), built from the published config.

Pipeline, as diffusers' PixArtAlphaPipeline runs it: the T5-v1.1-XXL encoder
over the prompts and the empty prompts (120 tokens, with their attention
mask), then N denoising steps of the PixArtTransformer2DModel (DiT-XL/2: 28
blocks of self-attention over the 2x2 latent patches, cross-attention to the
text, an MLP, all modulated by one shared adaLN-single of the timestep) on the
doubled latent batch (classifier-free guidance), a DPM-Solver++ scheduler; the
transformer predicts its variance too (8 output channels, the first 4 kept),
and at 1024 px it also takes the resolution and aspect ratio as conditions;
then the SD VAE decodes. `paper` is PixArt-XL-2-1024-MS: 1024 px = 128x128
latent = 4096 image tokens, 20 steps, guidance 4.5. Random weights from
configs, or real ones from a diffusers-layout directory (`text_encoder/`,
`transformer/`, `vae/`, safetensors). Not here: how it is measured.
"""

from __future__ import annotations

from typing import Any

import torch

from genprof.spec import RunSpec
from genprof.workloads import _dit
from genprof.workloads.base import (Built, Phases, Workload, autoencoder_kl, count_parameters, load_scheduler,
                                    load_subfolders)
from genprof.workloads.registry import register

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        transformer=dict(num_attention_heads=2, attention_head_dim=8, num_layers=2),
        text=_dit.T5_TINY, vae=dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8),
        latent=8, steps=2, text_len=16),
    "small": dict(
        transformer=dict(num_attention_heads=4, attention_head_dim=64, num_layers=8),
        text=_dit.T5_SMALL, vae=dict(block_out_channels=(8, 16, 32, 32), layers_per_block=2, norm_num_groups=8),
        latent=64, steps=5, text_len=64),
    "paper": dict(  # PixArt-alpha/PixArt-XL-2-1024-MS
        transformer=dict(num_attention_heads=16, attention_head_dim=72, num_layers=28),
        text=_dit.T5_XXL, vae=_dit.SD_VAE, latent=128, steps=20, text_len=120),
}
GUIDANCE_SCALE = 4.5  # PixArtAlphaPipeline default
VAE_SCALING = 0.18215  # the SD VAE (sd-vae-ft-ema)


def build_parts(p: dict[str, Any]) -> dict[str, torch.nn.Module]:
    """T5 encoder, transformer and VAE from the preset's configs, random weights."""
    from diffusers import PixArtTransformer2DModel

    t = p["transformer"]
    transformer = PixArtTransformer2DModel(
        in_channels=4, out_channels=8, sample_size=p["latent"], patch_size=2, attention_bias=True,
        cross_attention_dim=t["num_attention_heads"] * t["attention_head_dim"], caption_channels=p["text"]["d_model"],
        activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6, **t)
    return {"text_encoder": _dit.t5_encoder(p["text"]), "transformer": transformer,
            "vae": autoencoder_kl(p["vae"], p["latent"])}


def load_parts(path: str, dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    """Real weights from a diffusers-layout directory (save_pretrained, safetensors)."""
    from diffusers import AutoencoderKL, PixArtTransformer2DModel
    from transformers import T5EncoderModel

    return load_subfolders(path, dtype, {"text_encoder": T5EncoderModel, "transformer": PixArtTransformer2DModel,
                                         "vae": AutoencoderKL})


def make_scheduler(weights: str | None) -> Any:
    """PixArt-alpha's DPM-Solver++ (2nd order; its `scheduler/` config when real weights come with one)."""
    from diffusers import DPMSolverMultistepScheduler

    return load_scheduler(DPMSolverMultistepScheduler, weights)


@register
class PixArt(Workload):
    name = "pixart"
    kind = "diffusion-tti"
    stand_in = ("PixArt-alpha XL-2-1024-MS (diffusers PixArtTransformer2DModel: DiT with cross-attention, "
                "T5-XXL text encoder, SD VAE; 1024 px)")
    phases = ("text_encoder", "denoise", "decode")
    presets = PRESETS

    def build(self, spec: RunSpec) -> Built:
        p, device, dtype, parts, scheduler = _dit.start(self, spec, build_parts, load_parts, make_scheduler)
        text, transformer, vae = parts["text_encoder"], parts["transformer"], parts["vae"]
        kinds = _dit.tag_attention(transformer, lambda name: "cross" if name.endswith("attn2") else "self")
        steps = spec.steps or p["steps"]
        batch, text_len = spec.batch, p["text_len"]
        latent, channels = transformer.config.sample_size, transformer.config.in_channels
        px = latent * 2 ** (len(vae.config.block_out_channels) - 1)
        gen = torch.Generator().manual_seed(spec.seed)
        ids = _dit.prompt_ids(gen, text.config.vocab_size, 2 * batch, text_len, device)  # empty prompts first
        mask = torch.ones((2 * batch, text_len), dtype=torch.long).to(device)
        noise = torch.randn((batch, channels, latent, latent), generator=gen).to(device, dtype)
        added = {"resolution": None, "aspect_ratio": None}
        if transformer.use_additional_conditions:  # the 1024-px model: resolution and aspect ratio
            added = {"resolution": torch.tensor([[px, px]] * 2 * batch, dtype=dtype).to(device),
                     "aspect_ratio": torch.tensor([[1.0]] * 2 * batch, dtype=dtype).to(device)}
        scaling = getattr(vae.config, "scaling_factor", VAE_SCALING)

        def infer(phases: Phases) -> torch.Tensor:
            with phases.phase("text_encoder"):
                emb = text(ids)[0]  # an all-ones mask is what transformers skips: the same ops
            scheduler.set_timesteps(steps)
            latents = noise * scheduler.init_noise_sigma
            with phases.phase("denoise"):
                for i, t in enumerate(scheduler.timesteps):
                    with phases.step(i):
                        x = scheduler.scale_model_input(torch.cat([latents, latents]), t)
                        out = transformer(x, encoder_hidden_states=emb, encoder_attention_mask=mask,
                                          timestep=t.expand(2 * batch).to(device), added_cond_kwargs=added).sample
                        eps = out.chunk(2, dim=1)[0]  # learned variance: the noise half
                        eps_uncond, eps_text = eps.chunk(2)
                        eps = eps_uncond + GUIDANCE_SCALE * (eps_text - eps_uncond)
                        latents = scheduler.step(eps, t, latents).prev_sample
            with phases.phase("decode"):
                return vae.decode(latents / scaling).sample

        tokens = (latent // transformer.config.patch_size) ** 2
        info = {
            "parameters": count_parameters(parts), "steps": steps, "batch": batch,
            "latent_shape": [batch, channels, latent, latent], "image_px": px, "image_tokens": tokens,
            "text_len": text_len, "attention_modules": kinds, "guidance": "classifier-free, transformer batch 2x",
        }
        return Built(parts=parts, infer=infer, info=info)
