"""Make-A-Video (video diffusion with a space-time UNet), built as ModelScope text-to-video.

Pipeline, as diffusers' TextToVideoSDPipeline runs it: CLIP text encoder over
the prompts and the empty prompts (classifier-free guidance) -> N denoising
steps of the UNet3DConditionModel on the doubled latent video batch, each a
step of its own, with a DDIM scheduler -> AutoencoderKL decode of every frame
(all frames as one batch). The UNet3D interleaves, at every level, spatial
ResNet blocks with temporal convolutions (TemporalConvLayer), and spatial
transformers (self-attention over height x width, cross-attention to the
text) with temporal transformers (self-attention over the frames at every
pixel: sequence = frames, batch = height x width). Every diffusers Attention
is tagged `genprof_attention_kind` (`spatial-self`, `spatial-cross`,
`temporal-self`, `temporal-cross`) for the op table. `paper` is ModelScope
text-to-video-ms-1.7b: UNet 320/640/1280/1280, 16 frames of 256x256 px
(32x32 latent), cross-attention 1024 (OpenCLIP ViT-H text encoder), SD's VAE,
50 steps. Random weights from configs, or real ones from a diffusers-layout
directory (`unet/`, `text_encoder/`, `vae/`, safetensors). Not here: how it
is measured.
"""

from __future__ import annotations

from typing import Any

import torch

from genprof.spec import RunSpec
from genprof.workloads.base import (Built, Phases, Workload, autoencoder_kl, clip_text_config, count_parameters,
                                    load_scheduler, load_subfolders, make_parts, torch_dtype)
from genprof.workloads.params import CLIP_TEXT, SCHEDULER_STEPS
from genprof.workloads.registry import register

MS_BLOCKS = dict(down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
                 up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3)

PRESETS: dict[str, dict[str, Any]] = {
    # UNet3DConditionModel's `attention_head_dim` (diffusers' naming, kept for ModelScope's checkpoints) ends
    # up as the head dimension of the spatial and temporal transformers: 64 = heads of 64, channels/64 heads
    # per level (5, 10, 20, 20 at paper size); `transformer_in` has 8 heads of that dimension.
    "tiny": dict(
        unet=dict(block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=4, norm_num_groups=8,
                  down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                  up_block_types=("UpBlock3D", "CrossAttnUpBlock3D")),
        text=dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4),
        vae=dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8),
        latent=8, frames=4, steps=2, text_len=16),
    "small": dict(
        unet=dict(block_out_channels=(32, 64, 128, 128), layers_per_block=2, attention_head_dim=16,
                  norm_num_groups=16, **MS_BLOCKS),
        text=dict(vocab_size=8192, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                  num_attention_heads=4),
        vae=dict(block_out_channels=(16, 32, 64, 64), layers_per_block=2, norm_num_groups=16),
        latent=16, frames=8, steps=10, text_len=77),
    "paper": dict(  # damo-vilab/text-to-video-ms-1.7b
        unet=dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, attention_head_dim=64,
                  norm_num_groups=32, **MS_BLOCKS),
        text=dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                  num_attention_heads=16, hidden_act="gelu", projection_dim=512, bos_token_id=49406,
                  eos_token_id=49407),
        vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32),
        latent=32, frames=16, steps=50, text_len=77),
}
GUIDANCE_SCALE = 9.0  # TextToVideoSDPipeline default
VAE_SCALING = 0.18215


def build_parts(p: dict[str, Any]) -> dict[str, torch.nn.Module]:
    """Text encoder, UNet3D and VAE from the preset's configs, random weights."""
    from diffusers import UNet3DConditionModel
    from transformers import CLIPTextModel

    text = CLIPTextModel(clip_text_config(p["text"]))
    unet = UNet3DConditionModel(sample_size=p["latent"], in_channels=4, out_channels=4,
                                cross_attention_dim=p["text"]["hidden_size"], **p["unet"])
    vae = autoencoder_kl(p["vae"], p["latent"])
    return {"text_encoder": text, "unet": unet, "vae": vae}


def load_parts(path: str, dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    """Real weights from a diffusers-layout directory (save_pretrained, safetensors)."""
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextModel

    return load_subfolders(path, dtype, {"text_encoder": CLIPTextModel, "unet": UNet3DConditionModel,
                                         "vae": AutoencoderKL})


def make_scheduler(weights: str | None) -> Any:
    """ModelScope's DDIM scheduler (its `scheduler/` config when real weights come with one)."""
    from diffusers import DDIMScheduler

    return load_scheduler(DDIMScheduler, weights, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def tag_attention(unet: torch.nn.Module) -> dict[str, int]:
    """Set `genprof_attention_kind` on every diffusers Attention of the UNet; return how many of each.

    Temporal: inside a TransformerTemporalModel (the `temp_attentions` of every
    block, and `transformer_in`), attending over the frames. Spatial: the
    others, attending over height x width. Cross: the module attends to the
    text (`is_cross_attention`); a temporal block's second attention is a
    second self-attention (`double_self_attention`), not cross-attention,
    although it is named `attn2`.
    """
    from diffusers.models.attention_processor import Attention
    from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel

    temporal: set[int] = set()
    for module in unet.modules():
        if isinstance(module, TransformerTemporalModel):
            temporal.update(id(m) for m in module.modules())
    counts: dict[str, int] = {}
    for module in unet.modules():
        if isinstance(module, Attention):
            axis = "temporal" if id(module) in temporal else "spatial"
            kind = f"{axis}-{'cross' if module.is_cross_attention else 'self'}"
            module.genprof_attention_kind = kind
            counts[kind] = counts.get(kind, 0) + 1
    return counts


@register
class MakeAVideo(Workload):
    name = "make-a-video"
    kind = "ttv"
    stand_in = ("ModelScope text-to-video architecture (diffusers UNet3DConditionModel: spatial + temporal conv "
                "and attention; CLIP text encoder; AutoencoderKL per frame)")
    phases = ("text_encoder", "denoise", "decode")
    presets = PRESETS
    bounds = {"steps": SCHEDULER_STEPS, "text_len": CLIP_TEXT}

    def build(self, spec: RunSpec) -> Built:
        p = self.config(spec)
        device, dtype = torch.device(spec.device), torch_dtype(spec.dtype)
        parts = make_parts(spec, lambda: build_parts(p), load_parts)
        with torch.device("cpu"):  # the scheduler's tables stay on the host, as in the pipeline (also on meta)
            scheduler = make_scheduler(spec.weights)
        text, unet, vae = parts["text_encoder"], parts["unet"], parts["vae"]
        kinds = tag_attention(unet)
        steps = spec.steps or p["steps"]
        batch, frames, text_len = spec.batch, p["frames"], p["text_len"]
        latent = unet.config.sample_size
        channels = unet.config.in_channels
        gen = torch.Generator().manual_seed(spec.seed)
        # Prompt and empty prompt token ids (random ids: no tokenizer is needed to profile).
        ids = torch.randint(0, text.config.vocab_size, (2 * batch, text_len), generator=gen).to(device)
        noise = torch.randn((batch, channels, frames, latent, latent), generator=gen).to(device, dtype)
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
                        # the scheduler steps every frame as an image: (b, c, f, h, w) -> (b*f, c, h, w)
                        flat = latents.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, latent, latent)
                        eps = eps.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, latent, latent)
                        flat = scheduler.step(eps, t, flat).prev_sample
                        latents = flat.reshape(batch, frames, channels, latent, latent).permute(0, 2, 1, 3, 4)
            with phases.phase("decode"):
                frames_in = (latents / scaling).permute(0, 2, 1, 3, 4).reshape(batch * frames, channels,
                                                                               latent, latent)
                video = vae.decode(frames_in).sample
                return video.reshape(batch, frames, *video.shape[1:]).permute(0, 2, 1, 3, 4)

        info = {
            "parameters": count_parameters(parts), "steps": steps, "batch": batch, "frames": frames,
            "latent_shape": [batch, channels, frames, latent, latent],
            "frame_px": latent * 2 ** (len(vae.config.block_out_channels) - 1),
            "text_len": text_len, "attention_modules": kinds,
            "guidance": "classifier-free, UNet batch 2x",
        }
        return Built(parts=parts, infer=infer, info=info)
