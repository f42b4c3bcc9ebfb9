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
Not here: how it is measured.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genprof.errors import GenprofError
from genprof.spec import RunSpec
from genprof.workloads.base import Built, Phases, Workload, count_parameters, make_parts
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


def token_grid(video: dict[str, int]) -> tuple[int, int, int]:
    """(time steps, height, width) of the video tokens for a video preset."""
    frames, tp, p, res = video["frames"], video["temporal_patch"], video["patch"], video["resolution"]
    if (frames - 1) % tp or res % p:
        raise GenprofError(f"{frames} frames at {res}px do not split into a first frame plus "
                           f"{tp}-frame tubelets of {p}x{p} patches")
    return 1 + (frames - 1) // tp, res // p, res // p


# ---------------------------------------------------------------------------------------------
# Attention: one module per kind; Q/K/V/out are nn.Linear, the core is one fused SDPA call on
# (batch, heads, seq, head_dim). The callers lay out `x` as (batch', seq, dim).

class MultiHeadAttention(nn.Module):
    kind = "self"
    causal = False

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None = None):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.genprof_attention_kind = self.kind

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        n, lq, _ = x.shape
        ctx = x if context is None else context
        h, d = self.heads, self.head_dim
        q = self.to_q(x).view(n, lq, h, d).transpose(1, 2)
        k = self.to_k(ctx).view(n, ctx.shape[1], h, d).transpose(1, 2)
        v = self.to_v(ctx).view(n, ctx.shape[1], h, d).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.to_out(out.transpose(1, 2).reshape(n, lq, h * d))


class SpatialAttention(MultiHeadAttention):
    """Over the patches of one time step: batch = batch x time steps, seq = height x width."""

    kind = "spatial-self"


class TemporalAttention(MultiHeadAttention):
    """Across time steps at one spatial position, causal: batch = batch x h x w, seq = time steps."""

    kind = "temporal-self"
    causal = True


class BidirectionalAttention(MultiHeadAttention):
    """MaskGIT self-attention over every video token at once (no mask)."""

    kind = "self"


class CrossAttention(MultiHeadAttention):
    """Video tokens attend to the text embeddings."""

    kind = "cross"


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-norm block: attention (of `attn_cls`), optional text cross-attention, MLP."""

    def __init__(self, dim: int, heads: int, head_dim: int, mlp: int, attn_cls: type[MultiHeadAttention],
                 context_dim: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn_cls(dim, heads, head_dim)
        if context_dim is not None:
            self.norm2 = nn.LayerNorm(dim)
            self.cross_attn = CrossAttention(dim, heads, head_dim, context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        if context is not None:
            x = x + self.cross_attn(self.norm2(x), context)
        return x + self.mlp(self.norm3(x))


def _param(*shape: int) -> nn.Parameter:
    p = nn.Parameter(torch.empty(*shape))
    nn.init.normal_(p, std=0.02)
    return p


# ---------------------------------------------------------------------------------------------
# C-ViViT

def _spatial(x: torch.Tensor, layers: nn.ModuleList) -> torch.Tensor:
    """x: (B, T, S, D); each layer attends over the S patches of one time step."""
    b, t, s, d = x.shape
    y = x.reshape(b * t, s, d)
    for layer in layers:
        y = layer(y)
    return y.view(b, t, s, d)


def _temporal(x: torch.Tensor, layers: nn.ModuleList) -> torch.Tensor:
    """x: (B, T, S, D); each layer attends causally over the T steps at one spatial position."""
    b, t, s, d = x.shape
    y = x.permute(0, 2, 1, 3).reshape(b * s, t, d)
    for layer in layers:
        y = layer(y)
    return y.view(b, s, t, d).permute(0, 2, 1, 3)


class CViViTEncoder(nn.Module):
    """Video (B, C, F, H, W) -> continuous codes (B, T, h*w, code_dim); spatial then causal temporal layers."""

    def __init__(self, video: dict[str, int], c: dict[str, int]):
        super().__init__()
        t, h, w = token_grid(video)
        p, tp, ch, dim = video["patch"], video["temporal_patch"], video["channels"], c["dim"]
        self.p, self.tp = p, tp
        self.first_patch = nn.Linear(p * p * ch, dim)
        self.patch = nn.Linear(tp * p * p * ch, dim)
        self.spatial_pos = _param(h * w, dim)
        self.temporal_pos = _param(t, dim)
        self.spatial = nn.ModuleList(TransformerBlock(dim, c["heads"], c["head_dim"], c["mlp"], SpatialAttention)
                                     for _ in range(c["spatial_depth"]))
        self.temporal = nn.ModuleList(TransformerBlock(dim, c["heads"], c["head_dim"], c["mlp"], TemporalAttention)
                                      for _ in range(c["temporal_depth"]))
        self.norm = nn.LayerNorm(dim)
        self.to_code = nn.Linear(dim, c["code_dim"])

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, ch, f, hh, ww = video.shape
        p, tp = self.p, self.tp
        h, w = hh // p, ww // p
        first = video[:, :, 0].reshape(b, ch, h, p, w, p).permute(0, 2, 4, 3, 5, 1).reshape(b, 1, h * w, p * p * ch)
        rest = video[:, :, 1:].reshape(b, ch, (f - 1) // tp, tp, h, p, w, p)
        rest = rest.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, (f - 1) // tp, h * w, tp * p * p * ch)
        x = torch.cat([self.first_patch(first), self.patch(rest)], dim=1)
        x = x + self.spatial_pos + self.temporal_pos[:, None]
        x = _temporal(_spatial(x, self.spatial), self.temporal)
        return self.to_code(self.norm(x))


class VectorQuantizer(nn.Module):
    """The codebook: nearest code (L2) for encoding, embedding lookup for decoding."""

    def __init__(self, codebook_size: int, code_dim: int):
        super().__init__()
        self.codebook = nn.Embedding(codebook_size, code_dim)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        e = self.codebook.weight
        dist = z.pow(2).sum(-1, keepdim=True) - 2 * z @ e.t() + e.pow(2).sum(-1)
        return dist.argmin(-1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.codebook(ids)


class CViViTDecoder(nn.Module):
    """Codes (B, T, h*w, code_dim) -> video (B, C, F, H, W): causal temporal then spatial layers, linear to pixels."""

    def __init__(self, video: dict[str, int], c: dict[str, int]):
        super().__init__()
        t, h, w = token_grid(video)
        p, tp, ch, dim = video["patch"], video["temporal_patch"], video["channels"], c["dim"]
        self.p, self.tp, self.ch, self.h, self.w = p, tp, ch, h, w
        self.from_code = nn.Linear(c["code_dim"], dim)
        self.spatial_pos = _param(h * w, dim)
        self.temporal_pos = _param(t, dim)
        self.temporal = nn.ModuleList(TransformerBlock(dim, c["heads"], c["head_dim"], c["mlp"], TemporalAttention)
                                      for _ in range(c["temporal_depth"]))
        self.spatial = nn.ModuleList(TransformerBlock(dim, c["heads"], c["head_dim"], c["mlp"], SpatialAttention)
                                     for _ in range(c["spatial_depth"]))
        self.norm = nn.LayerNorm(dim)
        self.to_first = nn.Linear(dim, p * p * ch)
        self.to_pixels = nn.Linear(dim, tp * p * p * ch)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        b, t = codes.shape[:2]
        p, tp, ch, h, w = self.p, self.tp, self.ch, self.h, self.w
        x = self.from_code(codes) + self.spatial_pos + self.temporal_pos[:, None]
        x = self.norm(_spatial(_temporal(x, self.temporal), self.spatial))
        first = self.to_first(x[:, :1]).reshape(b, h, w, p, p, ch).permute(0, 5, 1, 3, 2, 4)
        first = first.reshape(b, ch, 1, h * p, w * p)
        rest = self.to_pixels(x[:, 1:]).reshape(b, t - 1, h, w, tp, p, p, ch)
        rest = rest.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, ch, (t - 1) * tp, h * p, w * p)
        return torch.cat([first, rest], dim=2)


class CViViT(nn.Module):
    """The video tokenizer: encoder + codebook + decoder. Inference runs `decode` only."""

    def __init__(self, video: dict[str, int], c: dict[str, int]):
        super().__init__()
        self.grid = token_grid(video)
        self.encoder = CViViTEncoder(video, c)
        self.quantizer = VectorQuantizer(c["codebook_size"], c["code_dim"])
        self.decoder = CViViTDecoder(video, c)

    def tokenize(self, video: torch.Tensor) -> torch.Tensor:
        """Video (B, C, F, H, W) -> token ids (B, T, h, w)."""
        t, h, w = self.grid
        return self.quantizer.quantize(self.encoder(video)).view(video.shape[0], t, h, w)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T, h, w) or (B, T*h*w) -> video (B, C, F, H, W)."""
        t, h, w = self.grid
        return self.decoder(self.quantizer(ids.reshape(ids.shape[0], t, h * w)))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.decode(ids)


# ---------------------------------------------------------------------------------------------
# MaskGIT

class MaskGITTransformer(nn.Module):
    """Bidirectional transformer over all video tokens, cross-attending to text; logits over the codebook."""

    def __init__(self, codebook_size: int, num_tokens: int, text_dim: int, t: dict[str, int]):
        super().__init__()
        dim = t["dim"]
        self.mask_id = codebook_size  # the extra embedding row is [MASK]
        self.token_emb = nn.Embedding(codebook_size + 1, dim)
        self.pos_emb = _param(num_tokens, dim)
        self.blocks = nn.ModuleList(TransformerBlock(dim, t["heads"], t["head_dim"], t["mlp"], BidirectionalAttention,
                                                     context_dim=text_dim) for _ in range(t["depth"]))
        self.norm = nn.LayerNorm(dim)
        self.to_logits = nn.Linear(dim, codebook_size)

    def forward(self, ids: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        x = self.token_emb(ids) + self.pos_emb
        for block in self.blocks:
            x = block(x, text)
        return self.to_logits(self.norm(x))


def mask_schedule(steps: int, num_tokens: int) -> list[int]:
    """Tokens left masked after each step: cosine schedule, at least one token revealed a step, 0 at the end."""
    left, out = num_tokens, []
    for i in range(steps):
        n = int(math.floor(num_tokens * math.cos(math.pi / 2 * (i + 1) / steps)))
        left = max(0, min(left - 1, n)) if i < steps - 1 else 0
        out.append(left)
    return out


def maskgit_step(transformer: MaskGITTransformer, ids: torch.Tensor, masked: torch.Tensor, emb: torch.Tensor,
                 guidance: float, n_mask: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One parallel decoding step: predict every token (classifier-free guidance), keep the most
    confident, re-mask the `n_mask` least confident of the still-masked ones. Tensor ops only."""
    logits = transformer(torch.cat([ids, ids]), emb)
    cond, uncond = logits.chunk(2)
    logits = uncond + guidance * (cond - uncond)
    conf, pred = logits.softmax(-1).max(-1)  # argmax sampling, its probability as the confidence
    ids = torch.where(masked, pred, ids)
    if n_mask == 0:  # a Python int from the schedule, not from data
        return ids, torch.zeros_like(masked)
    conf = torch.where(masked, conf, torch.full_like(conf, float("inf")))  # decided tokens stay
    order = conf.argsort(dim=-1)
    masked = torch.zeros_like(masked).scatter(1, order[:, :n_mask], True)
    return torch.where(masked, torch.full_like(ids, transformer.mask_id), ids), masked


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
