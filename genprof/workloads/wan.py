"""Wan2.1 text-to-video 14B (full 3D self-attention plus cross-attention to text), built from the published config.

Pipeline, as diffusers' WanPipeline runs it: the UMT5-XXL encoder over the
prompts and the negative prompts (512 tokens, zero-padded past each prompt's
end), then N steps of the WanTransformer3DModel with a flow-matching UniPC
scheduler; classifier-free guidance as two transformer calls per step (the
prompt, then the negative prompt), not one doubled batch. 81 frames of
720x1280 px are 21 latent frames of 90x160, patchified 1x2x2 into 21 x 45 x 80
= 75,600 video tokens; every block runs self-attention over all of them at
once (3D rotary positions; tagged `self`, there is no separate spatial or
temporal attention), cross-attention from them to the 512 text tokens
(`cross`), and an MLP, modulated by the timestep. Then the Wan VAE decoder
(3D causal, frame by frame with a feature cache) turns the 21 latent frames
into 81. `paper` is Wan-AI/Wan2.1-T2V-14B at 720p (its flow shift 5.0), 50
steps, guidance 5.0; `--set latent_h=60 --set latent_w=104` is its 480x832
setting. Random weights from configs, or real ones from a diffusers-layout
directory (`text_encoder/`, `transformer/`, `vae/`, safetensors). Not here:
Wan2.2's second expert, image conditioning, how it is measured.
"""

from __future__ import annotations

from typing import Any

import torch

from genprof.spec import RunSpec
from genprof.workloads import _dit
from genprof.workloads.base import (Built, Phases, Workload, count_parameters, load_scheduler, load_subfolders)
from genprof.workloads.registry import register

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        transformer=dict(num_attention_heads=2, attention_head_dim=8, ffn_dim=32, num_layers=2, freq_dim=16),
        text=_dit.T5_TINY, vae=dict(base_dim=8, dim_mult=[1, 2, 2, 2], num_res_blocks=1),
        latent_h=4, latent_w=6, frames=5, steps=2, text_len=16),
    "small": dict(
        transformer=dict(num_attention_heads=4, attention_head_dim=64, ffn_dim=1024, num_layers=6, freq_dim=64),
        text=_dit.T5_SMALL, vae=dict(base_dim=4, dim_mult=[1, 2, 4, 4], num_res_blocks=1),
        latent_h=24, latent_w=32, frames=9, steps=5, text_len=32),
    "paper": dict(  # Wan-AI/Wan2.1-T2V-14B-Diffusers, 720p
        transformer=dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40, freq_dim=256),
        text=_dit.UMT5_XXL, vae=dict(base_dim=96, dim_mult=[1, 2, 4, 4], num_res_blocks=2),
        latent_h=90, latent_w=160, frames=81, steps=50, text_len=512),
}
GUIDANCE_SCALE = 5.0  # WanPipeline default
FLOW_SHIFT = 5.0  # 720p (3.0 at 480p), as the Wan2.1 examples set the UniPC scheduler
TEMPORAL_COMPRESSION, SPATIAL_COMPRESSION = 4, 8  # the Wan VAE


def build_parts(p: dict[str, Any]) -> dict[str, torch.nn.Module]:
    """UMT5 encoder, transformer and Wan VAE from the preset's configs, random weights."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), in_channels=16, out_channels=16,
                                        text_dim=p["text"]["d_model"], cross_attn_norm=True,
                                        qk_norm="rms_norm_across_heads", eps=1e-6, **p["transformer"])
    vae = AutoencoderKLWan(z_dim=16, temperal_downsample=[False, True, True], **p["vae"])
    return {"text_encoder": _dit.t5_encoder(p["text"], umt5=True), "transformer": transformer, "vae": vae}


def load_parts(path: str, dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    """Real weights from a diffusers-layout Wan2.1 directory (save_pretrained, safetensors)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    return load_subfolders(path, dtype, {"text_encoder": UMT5EncoderModel, "transformer": WanTransformer3DModel,
                                         "vae": AutoencoderKLWan})


def make_scheduler(weights: str | None) -> Any:
    """Wan's flow-matching UniPC scheduler (flow shift 5.0 at 720p; its `scheduler/` config with real weights)."""
    from diffusers import UniPCMultistepScheduler

    return load_scheduler(UniPCMultistepScheduler, weights, prediction_type="flow_prediction", use_flow_sigmas=True,
                          flow_shift=FLOW_SHIFT)


@register
class Wan(Workload):
    name = "wan"
    kind = "ttv"
    stand_in = ("Wan2.1 T2V 14B (diffusers WanTransformer3DModel: full 3D self-attention over 75,600 video tokens "
                "+ cross-attention to 512 text tokens; UMT5-XXL; Wan VAE; 81 frames 720x1280)")
    phases = ("text_encoder", "denoise", "decode")
    presets = PRESETS

    def build(self, spec: RunSpec) -> Built:
        p, device, dtype, parts, scheduler = _dit.start(self, spec, build_parts, load_parts, make_scheduler)
        text, transformer, vae = parts["text_encoder"], parts["transformer"], parts["vae"]
        kinds = _dit.tag_attention(transformer, lambda name: "cross" if name.endswith("attn2") else "self")
        steps = spec.steps or p["steps"]
        batch, text_len = spec.batch, p["text_len"]
        latent_frames = (p["frames"] - 1) // TEMPORAL_COMPRESSION + 1
        shape = (batch, transformer.config.in_channels, latent_frames, p["latent_h"], p["latent_w"])
        gen = torch.Generator().manual_seed(spec.seed)
        ids = _dit.prompt_ids(gen, text.config.vocab_size, 2 * batch, text_len, device)  # prompts, then negatives
        noise = torch.randn(shape, generator=gen).to(device, dtype)
        z = vae.config.z_dim
        mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1).to(device, dtype)
        std = torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1).to(device, dtype)

        def infer(phases: Phases) -> torch.Tensor:
            with phases.phase("text_encoder"):
                # all tokens real: the zero-padding after each prompt's end changes nothing
                cond, uncond = text(ids).last_hidden_state.chunk(2)
            scheduler.set_timesteps(steps)
            latents = noise
            with phases.phase("denoise"):
                for i, t in enumerate(scheduler.timesteps):
                    with phases.step(i):
                        ts = t.expand(batch).to(device)
                        v = transformer(hidden_states=latents, timestep=ts, encoder_hidden_states=cond).sample
                        v_uncond = transformer(hidden_states=latents, timestep=ts, encoder_hidden_states=uncond).sample
                        v = v_uncond + GUIDANCE_SCALE * (v - v_uncond)
                        latents = scheduler.step(v, t, latents).prev_sample
            with phases.phase("decode"):
                return vae.decode(latents * std + mean).sample

        patch = transformer.config.patch_size
        tokens = latent_frames * (p["latent_h"] // patch[1]) * (p["latent_w"] // patch[2])
        info = {
            "parameters": count_parameters(parts), "steps": steps, "batch": batch, "frames": p["frames"],
            "latent_shape": list(shape), "video_tokens": tokens, "text_tokens": text_len,
            "frame_px": [p["latent_h"] * SPATIAL_COMPRESSION, p["latent_w"] * SPATIAL_COMPRESSION],
            "attention_modules": kinds, "guidance": "classifier-free, two transformer calls per step",
        }
        return Built(parts=parts, infer=infer, info=info)
