"""Parti (autoregressive encoder-decoder over image tokens), built from T5 blocks.

Pipeline, as Parti runs it: a transformer text encoder over the prompts and the
empty prompts (classifier-free guidance) -> a transformer decoder with self-
and cross-attention emits the image tokens one at a time in raster order, each
a step of its own, attending to a growing self-attention KV cache and to the
cross-attention keys/values of the text, computed once at the first step and
reused -> a VQ image decoder turns the token grid into pixels. `paper` follows
Parti-20B as published (16 encoder layers, 64 decoder layers, d_model 4096,
MLP 16384, 64 heads; text up to 128 tokens, 16k SentencePiece vocabulary;
ViT-VQGAN with 8x downsampling and 8192 codes: 256 px = 32x32 = 1024 tokens).

Stand-ins: the encoder-decoder is transformers' T5ForConditionalGeneration
(pre-norm RMSNorm, relative position bias, plain GELU MLP as in Parti's two-
matrix MLP) with one vocabulary of text ids followed by the image codebook ids;
the logits of the image ids are the ones sampled (greedy, argmax). The
ViT-VQGAN decoder is a convolutional diffusers VQModel with the same 8x
downsampling and codebook. Random weights from configs, or real ones from a
directory with `model/` (transformers) and `vqvae/` (diffusers), safetensors.
Not here: reranking of several samples, the 256->1024 super-resolution stage.
"""

from __future__ import annotations

from typing import Any

import torch

from genprof.errors import GenprofError
from genprof.spec import RunSpec
from genprof.workloads.base import (Built, Phases, Workload, cache_kwarg, count_parameters, dynamic_cache,
                                    load_subfolders, make_parts, vq_model)
from genprof.workloads.registry import register

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(config=dict(d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, num_decoder_layers=2),
                 text_vocab=100, codebook=64, text_len=8, grid=4,
                 vq=dict(block_out_channels=(16, 32), layers_per_block=1, latent_channels=8, vq_embed_dim=8,
                         norm_num_groups=8)),
    "small": dict(config=dict(d_model=256, d_kv=64, num_heads=4, d_ff=1024, num_layers=4, num_decoder_layers=6),
                  text_vocab=8000, codebook=1024, text_len=64, grid=16,
                  vq=dict(block_out_channels=(32, 32, 64, 64), layers_per_block=1, latent_channels=32,
                          vq_embed_dim=32, norm_num_groups=16)),
    "paper": dict(  # Parti-20B (Yu et al. 2022, Table 1): 16 + 64 layers, 4096 model, 16384 MLP, 64 heads
        config=dict(d_model=4096, d_kv=64, num_heads=64, d_ff=16384, num_layers=16, num_decoder_layers=64),
        text_vocab=16000, codebook=8192, text_len=128, grid=32,
        vq=dict(block_out_channels=(128, 256, 256, 512), layers_per_block=2, latent_channels=32,
                vq_embed_dim=32, norm_num_groups=32)),
}
GUIDANCE_SCALE = 3.0


def build_model(p: dict[str, Any]) -> torch.nn.Module:
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=p["text_vocab"] + p["codebook"], feed_forward_proj="gelu", dropout_rate=0.0,
                      is_encoder_decoder=True, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
                      tie_word_embeddings=False, **p["config"])
    config._attn_implementation = "sdpa"
    return T5ForConditionalGeneration(config)


def build_vq(p: dict[str, Any]) -> torch.nn.Module:
    return vq_model(p["vq"], p["grid"], num_vq_embeddings=p["codebook"])


def load_parts(path: str, dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    from diffusers import VQModel
    from transformers import T5ForConditionalGeneration

    return load_subfolders(path, dtype, {"model": (T5ForConditionalGeneration, {"attn_implementation": "sdpa"}),
                                         "vqvae": VQModel})


def mark_cross_attention(model: torch.nn.Module) -> None:
    """T5 names its cross-attention `EncDecAttention`, which the taxonomy would call self: say so."""
    for block in model.decoder.block:
        block.layer[1].EncDecAttention.genprof_attention_kind = "cross"


def _parameter_detail(model: torch.nn.Module) -> dict[str, int]:
    def n(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    emb = n(model.shared)
    return {"encoder_layers": n(model.encoder) - emb, "decoder_layers": n(model.decoder) - emb,
            "embedding_tied_with_lm_head": emb}


@register
class Parti(Workload):
    name = "parti"
    kind = "transformer-tti"
    stand_in = ("Parti-20B shape as a T5 encoder-decoder (transformers T5ForConditionalGeneration, KV cache) "
                "+ diffusers VQModel as the ViT-VQGAN decoder")
    phases = ("text_encoder", "decode", "vq_decode")
    presets = PRESETS
    counted_by = "tokens"
    count_meaning = "image tokens decoded (one per step)"

    def max_count(self, p: dict[str, Any]) -> int:
        return p["grid"] ** 2

    def build(self, spec: RunSpec) -> Built:
        p = self.config(spec)
        device = torch.device(spec.device)
        parts = make_parts(spec, lambda: {"model": build_model(p), "vqvae": build_vq(p)}, load_parts)
        model, vq = parts["model"], parts["vqvae"]
        mark_cross_attention(model)
        codebook = vq.config.num_vq_embeddings
        text_vocab = model.config.vocab_size - codebook  # image ids follow the text ids
        if text_vocab < 2:
            raise GenprofError(f"parti: the model's vocabulary ({model.config.vocab_size}) must hold the text ids "
                               f"and the VQ codebook ({codebook})")
        factor = 2 ** (len(vq.config.block_out_channels) - 1)
        grid = vq.config.sample_size // factor
        n_grid = grid * grid
        tokens = min(spec.tokens or n_grid, n_grid)
        vq_dim = vq.config.vq_embed_dim or vq.config.latent_channels
        batch, text_len = spec.batch, p["text_len"]
        start_id = model.config.decoder_start_token_id or 0
        cache_kw = cache_kwarg(model)  # transformers 5.x: `cache=`, 4.x: `past_key_values=`

        gen = torch.Generator().manual_seed(spec.seed)
        # Prompt and empty prompt token ids (random text ids: no tokenizer is needed to profile).
        ids = torch.randint(2, text_vocab, (2 * batch, text_len), generator=gen).to(device)
        start = torch.full((2 * batch, 1), start_id, dtype=torch.long).to(device)
        # When fewer tokens than the grid are decoded (counting runs), the rest of the grid is code 0.
        pad = torch.zeros((batch, n_grid - tokens), dtype=torch.long).to(device)

        def infer(phases: Phases) -> torch.Tensor:
            from transformers import EncoderDecoderCache
            from transformers.modeling_outputs import BaseModelOutput

            # Self-attention cache that grows by one token a step, cross-attention cache filled once;
            # both sized by the decoder's layer count, not the encoder's.
            cache = EncoderDecoderCache(dynamic_cache(model.decoder), dynamic_cache(model.decoder))
            with phases.phase("text_encoder"):
                enc = BaseModelOutput(last_hidden_state=model.encoder(input_ids=ids).last_hidden_state)
            out, next_in = [], start
            with phases.phase("decode"):
                for i in range(tokens):
                    with phases.step(i):
                        logits = model(encoder_outputs=enc, decoder_input_ids=next_in, use_cache=True,
                                       **{cache_kw: cache}).logits[:, -1, text_vocab:]
                        cond, uncond = logits.chunk(2)  # ids: prompts first, then the empty prompts
                        code = (uncond + GUIDANCE_SCALE * (cond - uncond)).argmax(-1, keepdim=True)
                        out.append(code)
                        next_in = (code + text_vocab).repeat(2, 1)  # both streams continue with the same token
            codes = torch.cat(out + [pad], dim=1)
            with phases.phase("vq_decode"):
                image = vq.decode(codes, force_not_quantize=True, shape=(batch, grid, grid, vq_dim)).sample
                return image.clamp(-1, 1)

        info = {
            "parameters": count_parameters(parts), "parameters_detail": _parameter_detail(model),
            "decode_tokens": tokens, "image_tokens": n_grid, "token_grid": [grid, grid], "batch": batch,
            "text_len": text_len, "text_vocab": text_vocab, "codebook_size": codebook,
            "image_px": grid * factor, "vq_downsampling": factor,
            "guidance": "classifier-free, encoder and decoder batch 2x", "sampling": "greedy (argmax)",
            "attn_implementation": getattr(model.config, "_attn_implementation", ""),
        }
        return Built(parts=parts, infer=infer, info=info)

    @staticmethod
    def derived_metrics(phase_stats: dict[str, dict[str, float]], info: dict[str, Any]) -> dict[str, float]:
        """Time per image token and image tokens per second, from the decode median."""
        if "decode" not in phase_stats or not info.get("decode_tokens"):
            return {}
        per_token = phase_stats["decode"]["median_s"] / info["decode_tokens"]
        return {"time_per_image_token_s": per_token, "image_tokens_per_s": info["batch"] / per_token}
