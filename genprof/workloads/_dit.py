"""Pieces the diffusion-transformer workloads share (pixart, sd3, flux, cogvideox, wan).

T5 encoder configs (T5-v1.1-XXL is the text encoder of four of them; Wan uses
UMT5-XXL), the 16-channel AutoencoderKL of SD3 and Flux, random prompt ids,
and the attention tagging that labels each attention module `self`, `cross`
or `joint` (text and image/video tokens attended together). Not a workload
itself: the registry skips modules whose name starts with an underscore.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch

from genprof.workloads.base import make_parts, torch_dtype

if TYPE_CHECKING:
    from genprof.spec import RunSpec
    from genprof.workloads.base import Workload

# T5-v1.1-XXL encoder (google/t5-v1_1-xxl, the text_encoder of PixArt-alpha, SD3's text_encoder_3, Flux's
# text_encoder_2, CogVideoX): 4.76 B parameters.
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              feed_forward_proj="gated-gelu")
# UMT5-XXL encoder (google/umt5-xxl, Wan2.1's text_encoder): the same blocks, a 256k vocabulary, 5.68 B.
UMT5_XXL = {**T5_XXL, "vocab_size": 256384}
T5_TINY = dict(vocab_size=1000, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu")
T5_SMALL = dict(vocab_size=8192, d_model=256, d_kv=32, d_ff=640, num_layers=4, num_heads=8,
                feed_forward_proj="gated-gelu")
# CLIP text encoders: ViT-L/14 (SD3 text_encoder, Flux text_encoder) and OpenCLIP bigG/14 (SD3 text_encoder_2).
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              hidden_act="quick_gelu", projection_dim=768, bos_token_id=49406, eos_token_id=49407)
CLIP_G = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
              hidden_act="gelu", projection_dim=1280, bos_token_id=49406, eos_token_id=49407)
CLIP_TINY = dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 projection_dim=32)
# The VAE widths of Stable Diffusion, SD3 and Flux (128/256/512/512, 2 layers per block, 8x downsampling).
SD_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32)


def t5_encoder(cfg: dict[str, Any], umt5: bool = False) -> torch.nn.Module:
    """A T5 (or UMT5) encoder from a config dict, random weights."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    return UMT5EncoderModel(UMT5Config(**cfg)) if umt5 else T5EncoderModel(T5Config(**cfg))


def kl16_vae(vae: dict[str, Any], latent: int, scaling: float, shift: float) -> torch.nn.Module:
    """SD3's and Flux's AutoencoderKL: 16 latent channels, no quant convs, a scaling and a shift factor."""
    from diffusers import AutoencoderKL

    n = len(vae["block_out_channels"])
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, sample_size=latent * 2 ** (n - 1),
                         use_quant_conv=False, use_post_quant_conv=False, scaling_factor=scaling, shift_factor=shift,
                         **vae)


def prompt_ids(gen: torch.Generator, vocab: int, rows: int, length: int, device: torch.device) -> torch.Tensor:
    """Random token ids standing in for tokenized prompts (no tokenizer is needed to profile)."""
    return torch.randint(0, vocab, (rows, length), generator=gen).to(device)


def is_attention(module: torch.nn.Module) -> bool:
    """diffusers' attention modules: `Attention`, `FluxAttention`, `WanAttention`, ... (not their processors)."""
    return type(module).__name__.endswith("Attention") and hasattr(module, "processor")


def tag_attention(model: torch.nn.Module, kind_of: Callable[[str], str]) -> dict[str, int]:
    """Set `genprof_attention_kind` = kind_of(qualified name) on every attention module; return how many of each."""
    counts: dict[str, int] = {}
    for name, module in model.named_modules():
        if is_attention(module):
            kind = kind_of(name)
            module.genprof_attention_kind = kind
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def seeded(device: torch.device, seed: int) -> torch.Generator | None:
    """A generator for a stochastic scheduler's per-step noise, seeded per inference (None on meta)."""
    return None if device.type == "meta" else torch.Generator(device=device).manual_seed(seed)


def start(workload: Workload, spec: RunSpec, build_parts: Callable[[dict], dict[str, torch.nn.Module]],
          load_parts: Callable[..., dict[str, torch.nn.Module]], make_scheduler: Callable[[Any], Any],
          ) -> tuple[dict, torch.device, torch.dtype, dict[str, torch.nn.Module], Any]:
    """What every DiT workload's build begins with: its preset, device and dtype, its parts (built from the
    preset, or loaded from --weights), and its scheduler, whose tables stay on the host as in the pipelines
    (also when the run is on meta)."""
    p = workload.config(spec)
    parts = make_parts(spec, lambda: build_parts(p), load_parts)
    with torch.device("cpu"):
        scheduler = make_scheduler(spec.weights)
    return p, torch.device(spec.device), torch_dtype(spec.dtype), parts, scheduler
