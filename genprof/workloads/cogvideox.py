"""CogVideoX-5B (full 3D attention over text + video tokens, a 3D causal VAE), built from the published config.

Pipeline, as diffusers' CogVideoXPipeline runs it: the T5-v1.1-XXL encoder over
the prompts and the empty prompts (226 tokens; classifier-free guidance, scale
6), 3D rotary position tables for the latent grid, then N steps of the
CogVideoXTransformer3DModel on the doubled latent batch with CogVideoX's
DPM-style scheduler (v-prediction, fresh noise every step): 49 frames of
480x720 px are 13 latent frames of 60x90, patchified 2x2 into 13 x 30 x 45 =
17,550 video tokens; every block attends over the 226 text tokens and all video
tokens at once (expert adaptive LayerNorms per modality, one attention over
both: tagged `joint`, 17,776 tokens). Then the AutoencoderKLCogVideoX decoder
(3D causal convolutions, 4x in time and 8x in space) turns the 13 latent
frames into 49. `paper` is THUDM/CogVideoX-5b: 42 blocks of 48 heads x 64,
50 steps. Random weights from configs, or real ones from a diffusers-layout
directory (`text_encoder/`, `transformer/`, `vae/`, safetensors). Not here:
dynamic CFG, VAE tiling, CogVideoX 1.5's temporal patches, how it is measured.
"""

from __future__ import annotations

from typing import Any

import torch

from genprof.spec import RunSpec
from genprof.workloads import _dit
from genprof.workloads.base import (Built, Phases, Workload, count_parameters, load_scheduler, load_subfolders)
from genprof.workloads.registry import register

PRESETS: dict[str, dict[str, Any]] = {
    # VAE: `block_out_channels` levels give 2^(levels-1) spatial compression; time is compressed 4x (the first two
    # levels), so at least three levels.
    "tiny": dict(
        transformer=dict(num_attention_heads=2, attention_head_dim=16, num_layers=2, time_embed_dim=16),
        text=_dit.T5_TINY, vae=dict(block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8),
        latent_h=4, latent_w=6, frames=9, steps=2, text_len=16),
    "small": dict(
        transformer=dict(num_attention_heads=4, attention_head_dim=64, num_layers=6, time_embed_dim=64),
        text=_dit.T5_SMALL, vae=dict(block_out_channels=(4, 8, 8, 16), layers_per_block=1, norm_num_groups=4),
        latent_h=24, latent_w=32, frames=9, steps=5, text_len=32),
    "paper": dict(  # THUDM/CogVideoX-5b
        transformer=dict(num_attention_heads=48, attention_head_dim=64, num_layers=42, time_embed_dim=512),
        text=_dit.T5_XXL, vae=dict(block_out_channels=(128, 256, 256, 512), layers_per_block=3, norm_num_groups=32),
        latent_h=60, latent_w=90, frames=49, steps=50, text_len=226),
}
GUIDANCE_SCALE = 6.0  # CogVideoXPipeline default
VAE_SCALING = 0.7  # CogVideoX-5b's VAE config
TEMPORAL_COMPRESSION = 4


def build_parts(p: dict[str, Any]) -> dict[str, torch.nn.Module]:
    """T5 encoder, transformer and 3D VAE from the preset's configs, random weights."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel

    transformer = CogVideoXTransformer3DModel(
        in_channels=16, out_channels=16, text_embed_dim=p["text"]["d_model"], max_text_seq_length=p["text_len"],
        sample_height=p["latent_h"], sample_width=p["latent_w"], sample_frames=p["frames"], patch_size=2,
        temporal_compression_ratio=TEMPORAL_COMPRESSION, flip_sin_to_cos=True, freq_shift=0,
        activation_fn="gelu-approximate", timestep_activation_fn="silu", norm_elementwise_affine=True, norm_eps=1e-5,
        use_rotary_positional_embeddings=True, use_learned_positional_embeddings=False, **p["transformer"])
    n = len(p["vae"]["block_out_channels"])
    vae = AutoencoderKLCogVideoX(latent_channels=16, temporal_compression_ratio=TEMPORAL_COMPRESSION,
                                 down_block_types=("CogVideoXDownBlock3D",) * n, up_block_types=("CogVideoXUpBlock3D",) * n,
                                 sample_height=p["latent_h"] * 2 ** (n - 1), sample_width=p["latent_w"] * 2 ** (n - 1),
                                 scaling_factor=VAE_SCALING, **p["vae"])
    return {"text_encoder": _dit.t5_encoder(p["text"]), "transformer": transformer, "vae": vae}


def load_parts(path: str, dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    """Real weights from a diffusers-layout CogVideoX directory (save_pretrained, safetensors)."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
    from transformers import T5EncoderModel

    return load_subfolders(path, dtype, {"text_encoder": T5EncoderModel, "transformer": CogVideoXTransformer3DModel,
                                         "vae": AutoencoderKLCogVideoX})


def make_scheduler(weights: str | None) -> Any:
    """CogVideoX-5b's scheduler: DPM-style with noise every step, v-prediction, zero-terminal-SNR betas, trailing."""
    from diffusers import CogVideoXDPMScheduler

    return load_scheduler(CogVideoXDPMScheduler, weights, clip_sample=False, prediction_type="v_prediction",
                          rescale_betas_zero_snr=True, set_alpha_to_one=True, snr_shift_scale=1.0,
                          timestep_spacing="trailing")


def rotary_tables(transformer: torch.nn.Module, frames: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The pipeline's 3D rotary cos/sin tables for a latent of `frames` x sample_height x sample_width."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

    c = transformer.config
    grid_h, grid_w = c.sample_height // c.patch_size, c.sample_width // c.patch_size
    crops = get_resize_crop_region_for_grid((grid_h, grid_w), grid_w, grid_h)
    return get_3d_rotary_pos_embed(embed_dim=c.attention_head_dim, crops_coords=crops, grid_size=(grid_h, grid_w),
                                   temporal_size=frames, device=device)


@register
class CogVideoX(Workload):
    name = "cogvideox"
    kind = "ttv"
    stand_in = ("CogVideoX-5B (diffusers CogVideoXTransformer3DModel: full 3D attention over 226 text + 17,550 video "
                "tokens; T5-XXL; AutoencoderKLCogVideoX 3D causal VAE; 49 frames 480x720)")
    phases = ("text_encoder", "denoise", "decode")
    presets = PRESETS

    def build(self, spec: RunSpec) -> Built:
        p, device, dtype, parts, scheduler = _dit.start(self, spec, build_parts, load_parts, make_scheduler)
        text, transformer, vae = parts["text_encoder"], parts["transformer"], parts["vae"]
        kinds = _dit.tag_attention(transformer, lambda name: "joint")
        steps = spec.steps or p["steps"]
        batch, text_len = spec.batch, p["text_len"]
        c = transformer.config
        latent_frames = (p["frames"] - 1) // TEMPORAL_COMPRESSION + 1
        shape = (batch, latent_frames, c.in_channels, c.sample_height, c.sample_width)  # frames before channels
        gen = torch.Generator().manual_seed(spec.seed)
        ids = _dit.prompt_ids(gen, text.config.vocab_size, 2 * batch, text_len, device)  # empty prompts first
        noise = torch.randn(shape, generator=gen).to(device, dtype)
        scaling = getattr(vae.config, "scaling_factor", VAE_SCALING)

        def infer(phases: Phases) -> torch.Tensor:
            g = _dit.seeded(device, spec.seed)  # the scheduler adds fresh noise every step
            with phases.phase("text_encoder"):
                emb = text(ids)[0]
            rotary = rotary_tables(transformer, latent_frames, device)
            scheduler.set_timesteps(steps)
            timesteps = scheduler.timesteps
            latents, old_x0 = noise * scheduler.init_noise_sigma, None
            with phases.phase("denoise"):
                for i, t in enumerate(timesteps):
                    with phases.step(i):
                        x = scheduler.scale_model_input(torch.cat([latents, latents]), t)
                        v = transformer(hidden_states=x, encoder_hidden_states=emb, timestep=t.expand(2 * batch).to(device),
                                        image_rotary_emb=rotary).sample
                        v_uncond, v_text = v.chunk(2)
                        v = v_uncond + GUIDANCE_SCALE * (v_text - v_uncond)
                        latents, old_x0 = scheduler.step(v, old_x0, t, timesteps[i - 1] if i > 0 else None, latents,
                                                         generator=g, return_dict=False)
            with phases.phase("decode"):
                return vae.decode(latents.permute(0, 2, 1, 3, 4) / scaling).sample

        tokens = latent_frames * (c.sample_height // c.patch_size) * (c.sample_width // c.patch_size)
        info = {
            "parameters": count_parameters(parts), "steps": steps, "batch": batch, "frames": p["frames"],
            "latent_shape": list(shape), "video_tokens": tokens, "text_tokens": text_len,
            "joint_tokens": tokens + text_len,
            "frame_px": [c.sample_height * 2 ** (len(vae.config.block_out_channels) - 1),
                         c.sample_width * 2 ** (len(vae.config.block_out_channels) - 1)],
            "attention_modules": kinds, "guidance": "classifier-free, transformer batch 2x",
        }
        return Built(parts=parts, infer=infer, info=info)
