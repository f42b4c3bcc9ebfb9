"""Imagen (pixel-space cascaded diffusion), built as DeepFloyd IF: a T5 encoder and two pixel UNets.

Pipeline, as diffusers' IFPipeline + IFSuperResolutionPipeline run it: T5
encoder over the prompts and the empty prompts (classifier-free guidance) ->
stage I: N denoising steps of a 64x64 pixel UNet2DConditionModel with IF's
block types (ResnetDownsampleBlock2D, SimpleCrossAttn{Down,Up}Block2D, whose
attention attends over the text tokens and the image tokens together), a
projection of the T5 states (`encoder_hid_dim`) and attention pooling of them
into the time embedding (`addition_embed_type="text"`), learned variance (6
output channels), DDPM with dynamic thresholding -> stage II: the 64x64 image
upsampled to 256x256, noised to noise level 250, concatenated to the noise (6
input channels), M steps of the super-resolution UNet, conditioned on the noise
level through `class_embed_type="timestep"`. No VAE: both stages are in pixel
space. `paper` is IF-I-XL (4.3 B) + IF-II-L (1.2 B) + T5-v1.1-XXL, 100 + 50
steps (the diffusers defaults). Random weights from configs, or real ones from
a directory with `text_encoder/`, `unet/` (IF-I) and `sr_unet/` (IF-II's
`unet/`), save_pretrained layout, safetensors. `--steps` sets the steps of both
stages. Not here: the third stage (256->1024), the safety checker, how it is
measured.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from genprof.spec import RunSpec
from genprof.workloads.base import (Built, Phases, Workload, count_parameters, load_scheduler, load_subfolders,
                                    make_parts, torch_dtype)
from genprof.workloads.params import SCHEDULER_STEPS
from genprof.workloads.registry import register

# What every IF UNet shares (diffusers' convert_if.py and the IF-I / IF-II configs).
IF_UNET = dict(act_fn="gelu", resnet_time_scale_shift="scale_shift", mid_block_type="UNetMidBlock2DSimpleCrossAttn",
               cross_attention_norm="group_norm", addition_embed_type="text", encoder_hid_dim_type="text_proj",
               out_channels=6, upcast_attention=False, use_linear_projection=False)
# What the super-resolution UNets add (IF-II: noise level as a class embedding, scaled residuals).
IF_SR = dict(class_embed_type="timestep", time_embedding_act_fn="gelu", resnet_skip_time_act=True,
             resnet_out_scale_factor=1 / 0.7071, mid_block_scale_factor=1 / 0.7071, in_channels=6)


def _stage1_blocks(levels: int) -> dict[str, tuple[str, ...]]:
    """IF-I: no attention at full resolution, hybrid self+cross attention at every lower level."""
    down = ("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * (levels - 1)
    up = ("SimpleCrossAttnUpBlock2D",) * (levels - 1) + ("ResnetUpsampleBlock2D",)
    return {"down_block_types": down, "up_block_types": up}


def _stage2_blocks(levels: int, attn_levels: int) -> dict[str, tuple[str, ...]]:
    """IF-II: attention only at the lowest `attn_levels` resolutions."""
    down = ("ResnetDownsampleBlock2D",) * (levels - attn_levels) + ("SimpleCrossAttnDownBlock2D",) * attn_levels
    up = ("SimpleCrossAttnUpBlock2D",) * attn_levels + ("ResnetUpsampleBlock2D",) * (levels - attn_levels)
    return {"down_block_types": down, "up_block_types": up}


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        text=dict(vocab_size=1000, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                  feed_forward_proj="gated-gelu"),
        unet=dict(block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=8, norm_num_groups=8,
                  cross_attention_dim=64, addition_embed_type_num_heads=4, **_stage1_blocks(2)),
        sr_unet=dict(block_out_channels=(16, 32, 64), layers_per_block=(1, 1, 1), attention_head_dim=8,
                     norm_num_groups=8, cross_attention_dim=64, addition_embed_type_num_heads=4,
                     time_embedding_dim=64, **_stage2_blocks(3, 1)),
        image=8, sr_image=32, steps=2, sr_steps=2, text_len=16),
    "small": dict(
        text=dict(vocab_size=8192, d_model=256, d_kv=32, d_ff=640, num_layers=4, num_heads=8,
                  feed_forward_proj="gated-gelu"),
        unet=dict(block_out_channels=(64, 128, 192, 256), layers_per_block=2, attention_head_dim=32,
                  norm_num_groups=32, cross_attention_dim=256, addition_embed_type_num_heads=8,
                  **_stage1_blocks(4)),
        sr_unet=dict(block_out_channels=(32, 64, 128, 192, 256), layers_per_block=(1, 1, 2, 2, 2),
                     attention_head_dim=32, norm_num_groups=32, cross_attention_dim=256,
                     addition_embed_type_num_heads=8, time_embedding_dim=256, **_stage2_blocks(5, 2)),
        image=32, sr_image=128, steps=10, sr_steps=5, text_len=77),
    "paper": dict(  # IF-I-XL-v1.0 + IF-II-L-v1.0, T5-v1.1-XXL encoder
        text=dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                  feed_forward_proj="gated-gelu"),
        unet=dict(block_out_channels=(704, 1408, 2112, 2816), layers_per_block=3, attention_head_dim=64,
                  norm_num_groups=32, cross_attention_dim=2816, addition_embed_type_num_heads=64,
                  **_stage1_blocks(4)),
        sr_unet=dict(block_out_channels=(160, 320, 640, 960, 1280), layers_per_block=(2, 2, 3, 5, 5),
                     attention_head_dim=64, norm_num_groups=32, cross_attention_dim=1280,
                     addition_embed_type_num_heads=64, time_embedding_dim=1280, **_stage2_blocks(5, 2)),
        image=64, sr_image=256, steps=100, sr_steps=50, text_len=77),
}
GUIDANCE_SCALE = 7.0  # IFPipeline default
SR_GUIDANCE_SCALE = 4.0  # IFSuperResolutionPipeline default
SR_NOISE_LEVEL = 250  # IFSuperResolutionPipeline default


def build_parts(p: dict[str, Any]) -> dict[str, torch.nn.Module]:
    """T5 encoder, stage-I UNet and super-resolution UNet from the preset's configs, random weights."""
    from diffusers import UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    text = T5EncoderModel(T5Config(**p["text"]))
    width = p["text"]["d_model"]
    unet = UNet2DConditionModel(sample_size=p["image"], in_channels=3, encoder_hid_dim=width,
                                **IF_UNET, **p["unet"])
    sr_unet = UNet2DConditionModel(sample_size=p["sr_image"], encoder_hid_dim=width,
                                   **IF_UNET, **IF_SR, **p["sr_unet"])
    return {"text_encoder": text, "unet": unet, "sr_unet": sr_unet}


def load_parts(path: str, dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    """Real weights from a directory: `text_encoder/`, `unet/` (IF-I), `sr_unet/` (IF-II), safetensors."""
    from diffusers import UNet2DConditionModel
    from transformers import T5EncoderModel

    return load_subfolders(path, dtype, {"text_encoder": T5EncoderModel, "unet": UNet2DConditionModel,
                                         "sr_unet": UNet2DConditionModel})


def schedulers(weights: str | None) -> tuple[Any, Any, Any]:
    """Stage-I and stage-II DDPM schedulers (learned variance, dynamic thresholding) and the SR noiser, as IF's."""
    from diffusers import DDPMScheduler

    def sched(sub: str, max_value: float) -> Any:
        return load_scheduler(DDPMScheduler, weights, sub, variance_type="learned_range",
                              beta_schedule="squaredcos_cap_v2", prediction_type="epsilon", thresholding=True,
                              dynamic_thresholding_ratio=0.95, sample_max_value=max_value)

    return sched("scheduler", 1.5), sched("sr_scheduler", 1.0), DDPMScheduler(beta_schedule="squaredcos_cap_v2")


def tag_attention(unet: torch.nn.Module) -> None:
    """IF's attention attends over the text tokens and the image tokens at once: say so.

    diffusers marks it `is_cross_attention` (its keys include projected text
    states), which would call it plain cross-attention; its queries are the
    image tokens and its keys/values are [text; image], so it is
    `self+cross` (`cross` where a block is configured cross-attention only).
    """
    from diffusers.models.attention_processor import Attention

    for module in unet.modules():
        if isinstance(module, Attention):
            hybrid = getattr(module, "add_k_proj", None) is not None and not module.only_cross_attention
            module.genprof_attention_kind = "self+cross" if hybrid else ("cross" if module.is_cross_attention
                                                                         else "self")


def guided(eps: torch.Tensor, channels: int, scale: float) -> torch.Tensor:
    """Classifier-free guidance on the noise half of a learned-variance output; the text half's variance kept."""
    eps_uncond, eps_text = eps.chunk(2)
    eps_uncond, _ = eps_uncond.split(channels, dim=1)
    eps_text, variance = eps_text.split(channels, dim=1)
    return torch.cat([eps_uncond + scale * (eps_text - eps_uncond), variance], dim=1)


@register
class Imagen(Workload):
    name = "imagen"
    kind = "diffusion-tti"
    stand_in = ("DeepFloyd IF architecture: T5 encoder + 64x64 pixel UNet2DConditionModel (IF blocks) "
                "+ 64->256 super-resolution UNet")
    phases = ("text_encoder", "denoise", "super_resolution")
    presets = PRESETS
    bounds = {"steps": SCHEDULER_STEPS, "sr_steps": SCHEDULER_STEPS}

    def build(self, spec: RunSpec) -> Built:
        p = self.config(spec)
        device, dtype = torch.device(spec.device), torch_dtype(spec.dtype)
        parts = make_parts(spec, lambda: build_parts(p), load_parts)
        with torch.device("cpu"):  # the schedulers' tables stay on the host, as in the pipeline (also on meta)
            scheduler, sr_scheduler, noiser = schedulers(spec.weights)
        tag_attention(parts["unet"])
        tag_attention(parts["sr_unet"])
        text, unet, sr_unet = parts["text_encoder"], parts["unet"], parts["sr_unet"]
        steps = spec.steps or p["steps"]
        sr_steps = spec.steps or p["sr_steps"]
        batch, text_len = spec.batch, p["text_len"]
        image, sr_image = unet.config.sample_size, sr_unet.config.sample_size
        channels = unet.config.in_channels  # 3: RGB pixels
        gen = torch.Generator().manual_seed(spec.seed)
        # Prompt and empty prompt token ids (random ids: no tokenizer is needed to profile).
        ids = torch.randint(0, text.config.vocab_size, (2 * batch, text_len), generator=gen).to(device)
        noise = torch.randn((batch, channels, image, image), generator=gen).to(device, dtype)
        sr_noise = torch.randn((batch, channels, sr_image, sr_image), generator=gen).to(device, dtype)
        aug_noise = torch.randn((batch, channels, sr_image, sr_image), generator=gen).to(device, dtype)
        noise_level = torch.full((batch,), SR_NOISE_LEVEL, dtype=torch.long).to(device)

        def infer(phases: Phases) -> torch.Tensor:
            # DDPM adds fresh noise every step: seeded per inference so that a run is reproducible
            g = None if device.type == "meta" else torch.Generator(device=device).manual_seed(spec.seed)
            with phases.phase("text_encoder"):
                emb = text(ids)[0]
            scheduler.set_timesteps(steps)
            x = noise * scheduler.init_noise_sigma
            with phases.phase("denoise"):
                for i, t in enumerate(scheduler.timesteps):
                    with phases.step(i):
                        inp = scheduler.scale_model_input(torch.cat([x, x]), t)
                        eps = unet(inp, t, encoder_hidden_states=emb).sample
                        x = scheduler.step(guided(eps, channels, GUIDANCE_SCALE), t, x, generator=g).prev_sample
            sr_scheduler.set_timesteps(sr_steps)
            with phases.phase("super_resolution"):
                # The stage-I image, upsampled and noised (noise augmentation), conditions every step.
                up = F.interpolate(x, (sr_image, sr_image), mode="bilinear", align_corners=True)
                up = noiser.add_noise(up, aug_noise, noise_level)
                cond = torch.cat([up, up])
                levels = torch.cat([noise_level, noise_level])
                y = sr_noise * sr_scheduler.init_noise_sigma
                for i, t in enumerate(sr_scheduler.timesteps):
                    with phases.step(i):
                        inp = sr_scheduler.scale_model_input(torch.cat([torch.cat([y, y]), cond], dim=1), t)
                        eps = sr_unet(inp, t, encoder_hidden_states=emb, class_labels=levels).sample
                        y = sr_scheduler.step(guided(eps, channels, SR_GUIDANCE_SCALE), t, y, generator=g).prev_sample
            return y

        info = {
            "parameters": count_parameters(parts), "steps": steps, "sr_steps": sr_steps, "batch": batch,
            "pixel_shape": [batch, channels, image, image], "image_px": image,
            "sr_pixel_shape": [batch, channels, sr_image, sr_image], "sr_image_px": sr_image,
            "sr_unet_in_channels": sr_unet.config.in_channels, "sr_noise_level": SR_NOISE_LEVEL,
            "text_len": text_len, "text_width": text.config.d_model,
            "guidance": "classifier-free, UNet batch 2x in both stages",
        }
        return Built(parts=parts, infer=infer, info=info)
