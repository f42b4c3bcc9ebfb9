"""The production latent-diffusion model of the study, built as SDXL: two CLIP text encoders, a deep UNet, a VAE.

Pipeline, as diffusers' StableDiffusionXLPipeline runs it: two CLIP text
encoders over the prompts (CLIP ViT-L, `CLIPTextModel`, and OpenCLIP bigG,
`CLIPTextModelWithProjection`); the penultimate hidden states of both,
concatenated (768 + 1280 = 2048), are the cross-attention context, and the
second encoder's pooled projection plus the size/crop conditioning ("time
ids") feed the time embedding (`addition_embed_type="text_time"`, 1280 + 6 x
256 = 2816). The empty prompts get zero embeddings (SDXL's
`force_zeros_for_empty_prompt`): the encoders run on the prompts only. Then N
denoising steps of the UNet2DConditionModel on the doubled latent batch
(classifier-free guidance) with an Euler scheduler, each a step of its own,
and AutoencoderKL decode. SDXL's UNet has three levels (320/640/1280) with
attention only at the two lower resolutions, 2 and 10 transformer layers per
block there. `paper` is SDXL base 1.0 at 1024 px (128x128 latent), 50 steps.
Random weights from configs, or real ones from a diffusers-layout directory
(`unet/`, `text_encoder/`, `text_encoder_2/`, `vae/`, safetensors). Not here:
the refiner, how it is measured.
"""

from __future__ import annotations

from typing import Any

import torch

from genprof.spec import RunSpec
from genprof.workloads.base import (Built, Phases, Workload, autoencoder_kl, clip_text_config, count_parameters,
                                    load_scheduler, load_subfolders, make_parts, torch_dtype)
from genprof.workloads.params import CLIP_TEXT, SCHEDULER_STEPS
from genprof.workloads.registry import register

SDXL_BLOCKS = dict(down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                   up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        unet=dict(block_out_channels=(32, 64), layers_per_block=1, transformer_layers_per_block=(1, 2),
                  attention_head_dim=(2, 4), norm_num_groups=8, addition_time_embed_dim=8,
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")),
        text=dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4),
        text_2=dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, projection_dim=32),
        vae=dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8),
        latent=8, steps=2, text_len=16),
    "small": dict(
        unet=dict(block_out_channels=(64, 128, 256), layers_per_block=2, transformer_layers_per_block=(1, 2, 10),
                  attention_head_dim=(1, 2, 4), norm_num_groups=32, addition_time_embed_dim=32, **SDXL_BLOCKS),
        text=dict(vocab_size=8192, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                  num_attention_heads=2),
        text_2=dict(vocab_size=8192, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                    num_attention_heads=4, projection_dim=256),
        vae=dict(block_out_channels=(32, 64, 128, 128), layers_per_block=2, norm_num_groups=32),
        latent=32, steps=10, text_len=77),
    "paper": dict(  # SDXL base 1.0
        unet=dict(block_out_channels=(320, 640, 1280), layers_per_block=2, transformer_layers_per_block=(1, 2, 10),
                  attention_head_dim=(5, 10, 20), norm_num_groups=32, addition_time_embed_dim=256, **SDXL_BLOCKS),
        text=dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407),
        text_2=dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                    num_attention_heads=20, hidden_act="gelu", projection_dim=1280, bos_token_id=49406,
                    eos_token_id=49407),
        vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32),
        latent=128, steps=50, text_len=77),
}
GUIDANCE_SCALE = 5.0  # StableDiffusionXLPipeline default
VAE_SCALING = 0.13025  # SDXL's VAE


def build_parts(p: dict[str, Any]) -> dict[str, torch.nn.Module]:
    """Both text encoders, the UNet and the VAE from the preset's configs, random weights.

    The UNet's cross-attention width is the two encoders' widths together, and
    its added-condition input is the pooled projection plus 6 time ids.
    """
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    text = CLIPTextModel(clip_text_config(p["text"]))
    text_2 = CLIPTextModelWithProjection(clip_text_config(p["text_2"]))
    u = p["unet"]
    unet = UNet2DConditionModel(
        sample_size=p["latent"], in_channels=4, out_channels=4, use_linear_projection=True,
        cross_attention_dim=p["text"]["hidden_size"] + p["text_2"]["hidden_size"],
        addition_embed_type="text_time",
        projection_class_embeddings_input_dim=p["text_2"]["projection_dim"] + 6 * u["addition_time_embed_dim"],
        **u)
    vae = autoencoder_kl(p["vae"], p["latent"], scaling_factor=VAE_SCALING)
    return {"text_encoder": text, "text_encoder_2": text_2, "unet": unet, "vae": vae}


def load_parts(path: str, dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    """Real weights from a diffusers-layout SDXL directory (save_pretrained, safetensors)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    return load_subfolders(path, dtype, {"text_encoder": CLIPTextModel, "text_encoder_2": CLIPTextModelWithProjection,
                                         "unet": UNet2DConditionModel, "vae": AutoencoderKL})


def make_scheduler(weights: str | None) -> Any:
    """SDXL's Euler scheduler (its `scheduler/` config when real weights come with one)."""
    from diffusers import EulerDiscreteScheduler

    return load_scheduler(EulerDiscreteScheduler, weights, beta_start=0.00085, beta_end=0.012,
                          beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading")


@register
class ProdImage(Workload):
    name = "prod-image"
    kind = "diffusion-tti"
    stand_in = ("SDXL architecture (diffusers UNet2DConditionModel 320/640/1280 with 1/2/10 transformer layers, "
                "two CLIP text encoders, AutoencoderKL; 1024 px)")
    phases = ("text_encoder", "denoise", "decode")
    presets = PRESETS
    bounds = {"steps": SCHEDULER_STEPS, "text_len": CLIP_TEXT}

    def build(self, spec: RunSpec) -> Built:
        p = self.config(spec)
        device, dtype = torch.device(spec.device), torch_dtype(spec.dtype)
        parts = make_parts(spec, lambda: build_parts(p), load_parts)
        with torch.device("cpu"):  # the scheduler's tables stay on the host, as in the pipeline (also on meta)
            scheduler = make_scheduler(spec.weights)
        text, text_2, unet, vae = parts["text_encoder"], parts["text_encoder_2"], parts["unet"], parts["vae"]
        steps = spec.steps or p["steps"]
        batch, text_len = spec.batch, p["text_len"]
        latent = unet.config.sample_size
        px = latent * 2 ** (len(vae.config.block_out_channels) - 1)
        gen = torch.Generator().manual_seed(spec.seed)
        # Prompt token ids for each tokenizer (random ids: no tokenizer is needed to profile).
        ids = torch.randint(0, text.config.vocab_size, (batch, text_len), generator=gen).to(device)
        ids_2 = torch.randint(0, text_2.config.vocab_size, (batch, text_len), generator=gen).to(device)
        noise = torch.randn((batch, unet.config.in_channels, latent, latent), generator=gen).to(device, dtype)
        # original size, crop top-left, target size: for the empty and the real prompts alike
        time_ids = torch.tensor([[px, px, 0, 0, px, px]] * (2 * batch), dtype=torch.float32).to(device, dtype)
        scaling = getattr(vae.config, "scaling_factor", VAE_SCALING)

        def infer(phases: Phases) -> torch.Tensor:
            with phases.phase("text_encoder"):
                hidden = text(ids, output_hidden_states=True).hidden_states[-2]
                out_2 = text_2(ids_2, output_hidden_states=True)
                emb = torch.cat([hidden, out_2.hidden_states[-2]], dim=-1)
                emb = torch.cat([torch.zeros_like(emb), emb])  # empty prompt: zeros, first
                pooled = torch.cat([torch.zeros_like(out_2.text_embeds), out_2.text_embeds])
            added = {"text_embeds": pooled, "time_ids": time_ids}
            scheduler.set_timesteps(steps)
            latents = noise * scheduler.init_noise_sigma
            with phases.phase("denoise"):
                for i, t in enumerate(scheduler.timesteps):
                    with phases.step(i):
                        x = scheduler.scale_model_input(torch.cat([latents, latents]), t)
                        eps = unet(x, t, encoder_hidden_states=emb, added_cond_kwargs=added).sample
                        eps_uncond, eps_text = eps.chunk(2)
                        eps = eps_uncond + GUIDANCE_SCALE * (eps_text - eps_uncond)
                        latents = scheduler.step(eps, t, latents).prev_sample
            with phases.phase("decode"):
                return vae.decode(latents / scaling).sample

        info = {
            "parameters": count_parameters(parts), "steps": steps, "batch": batch,
            "latent_shape": [batch, unet.config.in_channels, latent, latent], "image_px": px,
            "text_len": text_len, "context_width": unet.config.cross_attention_dim,
            "added_cond_width": unet.config.projection_class_embeddings_input_dim,
            "guidance": "classifier-free, UNet batch 2x; empty prompt = zero embeddings",
        }
        return Built(parts=parts, infer=infer, info=info)
