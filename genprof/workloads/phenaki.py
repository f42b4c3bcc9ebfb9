"""Phenaki (transformer text-to-video): T5 text encoder, MaskGIT over video tokens, C-ViViT decoder.

No library has Phenaki, so it is written here from torch building blocks,
following Villegas et al. 2022 ("Phenaki: variable length video generation
from open domain textual descriptions"):

- a T5 encoder (transformers' T5EncoderModel from a config; Phenaki used a
  frozen T5X encoder) over the prompts and the empty prompts (classifier-free
  guidance doubles the transformer batch);
- a bidirectional masked-token transformer (MaskGIT) over all the video
  tokens at once, with cross-attention to the text embeddings; a fixed number
  of parallel decoding steps, each one forward on every token, argmax
  sampling, confidence-based re-masking on a cosine schedule. The masking and
  sampling are tensor ops only (max, sort, scatter, where): no data-dependent
  Python control flow, so the `meta` device traces it;
- C-ViViT, the video tokenizer: the first frame alone and the following frames
  in tubelets of `t` frames are cut into patches and linearly embedded (causal
  in time), then spatial transformer layers (attention over the patches of one
  time step) and causal temporal transformer layers (attention across time
  steps at one spatial position), and a vector-quantizer codebook. The decoder
  mirrors it (codes -> temporal -> spatial layers -> linear to pixels); only
  the decoder runs in inference. `CViViT.tokenize` is the encoder path.

Phases: `text_encoder`, `decode_tokens` (each parallel decoding step a step),
`video_decode`. Attention modules declare their kind for the op table:
`spatial-self`, `temporal-self` (causal), `self` (MaskGIT, bidirectional over
all video tokens), `cross` (text). Random weights seeded by the spec, or real
ones from a directory of safetensors files, one per part
(`text_encoder.safetensors`, `transformer.safetensors`, `cvivit.safetensors`,
each the part's state_dict; see `save_weights`), for the size's structure.
The model parts are in genprof.workloads.phenaki_model. Not here: how it is measured.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from genprof.errors import GenprofError
from genprof.spec import RunSpec
from genprof.workloads.base import Built, Phases, Workload, count_parameters, make_parts
from genprof.workloads.phenaki_model import CViViT, MaskGITTransformer, mask_schedule, maskgit_step, token_grid
from genprof.workloads.registry import register

PART_NAMES = ("text_encoder", "transformer", "cvivit")

# video: frames at `resolution` px; the first frame is patched alone (patch x patch), the rest in
# tubelets of `temporal_patch` frames: latent time steps = 1 + (frames - 1) / temporal_patch.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        video=dict(frames=5, resolution=32, channels=3, patch=8, temporal_patch=2),
        cvivit=dict(dim=32, heads=2, head_dim=16, mlp=64, spatial_depth=1, temporal_depth=1,
                    code_dim=8, codebook_size=64),
        transformer=dict(dim=32, depth=2, heads=2, head_dim=16, mlp=64),
        text=dict(vocab_size=1000, d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16),
        text_len=8, steps=3, guidance=4.0),
    "small": dict(
        video=dict(frames=11, resolution=64, channels=3, patch=8, temporal_patch=2),
        cvivit=dict(dim=128, heads=4, head_dim=32, mlp=512, spatial_depth=4, temporal_depth=4,
                    code_dim=32, codebook_size=1024),
        transformer=dict(dim=256, depth=4, heads=4, head_dim=64, mlp=1024),
        text=dict(vocab_size=8192, d_model=256, d_ff=1024, num_layers=4, num_heads=4, d_kv=64,
                  feed_forward_proj="gated-gelu"),
        text_len=32, steps=8, guidance=4.0),
    "paper": dict(  # Phenaki: 11 frames of 128x128 -> 6x16x16 = 1536 tokens; ~1.8B-parameter MaskGIT
        video=dict(frames=11, resolution=128, channels=3, patch=8, temporal_patch=2),
        cvivit=dict(dim=512, heads=8, head_dim=64, mlp=2048, spatial_depth=4, temporal_depth=4,
                    code_dim=32, codebook_size=8192),
        transformer=dict(dim=2048, depth=24, heads=32, head_dim=64, mlp=8192),
        text=dict(vocab_size=32128, d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64,
                  feed_forward_proj="gated-gelu"),  # T5 v1.1 XXL encoder
        text_len=64, steps=12, guidance=4.0),
}


# ---------------------------------------------------------------------------------------------
# Parts and weights

def build_parts(p: dict[str, Any]) -> dict[str, nn.Module]:
    """Text encoder, MaskGIT transformer and C-ViViT from the preset, random weights."""
    from transformers import T5Config, T5EncoderModel

    t, h, w = token_grid(p["video"])
    text = T5EncoderModel(T5Config(**p["text"]))
    transformer = MaskGITTransformer(p["cvivit"]["codebook_size"], t * h * w, p["text"]["d_model"], p["transformer"])
    cvivit = CViViT(p["video"], p["cvivit"])
    return {"text_encoder": text, "transformer": transformer, "cvivit": cvivit}


def save_weights(parts: dict[str, nn.Module], path: str | os.PathLike) -> None:
    """Write each part's state_dict as `<part>.safetensors` (tied tensors are written as copies)."""
    from safetensors.torch import save_file

    os.makedirs(path, exist_ok=True)
    for name in PART_NAMES:
        sd = {k: v.detach().to("cpu").contiguous().clone() for k, v in parts[name].state_dict().items()}
        save_file(sd, os.path.join(path, f"{name}.safetensors"))


def load_weights(parts: dict[str, nn.Module], path: str) -> None:
    """Load `<part>.safetensors` into each part (same size preset); a missing or mismatched file is one line."""
    from safetensors.torch import load_file

    if not os.path.isdir(path):
        raise GenprofError(f"weights directory {path!r} does not exist")
    missing = [f"{n}.safetensors" for n in PART_NAMES if not os.path.isfile(os.path.join(path, f"{n}.safetensors"))]
    if missing:
        raise GenprofError(f"weights directory {path!r} lacks {', '.join(missing)}; expected one safetensors "
                           f"file per part ({', '.join(n + '.safetensors' for n in PART_NAMES)})")
    for name in PART_NAMES:
        sd = load_file(os.path.join(path, f"{name}.safetensors"), device="cpu")
        if name == "text_encoder":  # T5 ties the input embedding to `shared`: accept either key alone
            for a, b in (("shared.weight", "encoder.embed_tokens.weight"),
                         ("encoder.embed_tokens.weight", "shared.weight")):
                if a in sd and b not in sd:
                    sd[b] = sd[a]
        try:
            parts[name].load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise GenprofError(f"{name}.safetensors in {path!r} does not fit the {name} of this size: "
                               f"{str(e).splitlines()[0]}") from None


# ---------------------------------------------------------------------------------------------

@register
class Phenaki(Workload):
    name = "phenaki"
    kind = "ttv"
    stand_in = ("Phenaki architecture written in torch: T5 encoder (transformers) + C-ViViT causal video "
                "tokenizer (spatial + causal temporal attention, VQ codebook) + bidirectional MaskGIT "
                "transformer with text cross-attention")
    phases = ("text_encoder", "decode_tokens", "video_decode")
    presets = PRESETS
    counted_by = "steps"
    count_meaning = "parallel decoding steps (all video tokens at once)"

    def check(self, spec: RunSpec) -> None:
        super().check(spec)
        token_grid(self.config(spec)["video"])  # frames and resolution that split into tubelets and patches

    def build(self, spec: RunSpec) -> Built:
        p = self.config(spec)
        device = torch.device(spec.device)

        def load(path: str, dtype: torch.dtype) -> dict[str, nn.Module]:  # the seeded build, then the files
            parts = build_parts(p)
            load_weights(parts, path)
            return parts

        parts = make_parts(spec, lambda: build_parts(p), load)
        text, transformer, cvivit = parts["text_encoder"], parts["transformer"], parts["cvivit"]
        steps = spec.steps or p["steps"]
        batch, text_len, guidance = spec.batch, p["text_len"], p["guidance"]
        t, h, w = token_grid(p["video"])
        num_tokens = t * h * w
        schedule = mask_schedule(steps, num_tokens)

        gen = torch.Generator().manual_seed(spec.seed)
        # Prompt token ids (random: no tokenizer is needed to profile), then the empty prompts
        # (EOS then padding) for classifier-free guidance.
        prompt = torch.randint(2, p["text"]["vocab_size"], (batch, text_len), generator=gen, device="cpu")
        empty = torch.zeros((batch, text_len), dtype=torch.long, device="cpu")
        empty[:, 0] = 1
        ids_text = torch.cat([prompt, empty]).to(device)
        start_ids = torch.full((batch, num_tokens), transformer.mask_id, dtype=torch.long, device="cpu").to(device)
        start_masked = torch.ones((batch, num_tokens), dtype=torch.bool, device="cpu").to(device)

        def infer(phases: Phases) -> torch.Tensor:
            with phases.phase("text_encoder"):
                emb = text(input_ids=ids_text).last_hidden_state
            ids, masked = start_ids, start_masked
            with phases.phase("decode_tokens"):
                for i in range(steps):
                    with phases.step(i):
                        ids, masked = maskgit_step(transformer, ids, masked, emb, guidance, schedule[i])
            with phases.phase("video_decode"):
                return cvivit.decode(ids.view(batch, t, h, w))

        v = p["video"]
        info = {
            "parameters": count_parameters(parts),
            "parameters_cvivit_decoder": sum(q.numel() for m in (cvivit.decoder, cvivit.quantizer)
                                             for q in m.parameters()),
            "steps": steps, "batch": batch, "frames": v["frames"],
            "resolution": [v["resolution"], v["resolution"]],
            "patch": [v["temporal_patch"], v["patch"], v["patch"]],
            "token_grid": [t, h, w], "video_tokens": num_tokens,
            "codebook_size": p["cvivit"]["codebook_size"], "text_len": text_len,
            "output_shape": [batch, v["channels"], v["frames"], v["resolution"], v["resolution"]],
            "guidance": f"classifier-free, scale {guidance}, transformer batch 2x",
            "mask_schedule": schedule,
        }
        return Built(parts=parts, infer=infer, info=info)
