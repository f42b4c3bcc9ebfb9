"""A synthetic visual retrieval task for the `llava` workload: find the value of a key in an image.

An image is a grid of `patch` x `patch` pixel patches (one patch = one image
token of the vision tower). A few patches are *pairs*: channel 0 holds the
pixel code of a key (one lit pixel), channel 1 the code of its value, channel
2 is +1 (the marker). Every other patch is background: faint uniform noise in
channels 0 and 1, channel 2 at -1. The prompt, in LLaVA's order (text, image, text), is

    <bos> <user> [image tokens] <q> KEY     ->  answer: VALUE, then <eos>

and the answer is the value token of the pair whose key is KEY (one of the
pairs in the image; the others are distractors). Codes are fixed (seeded);
samples are deterministic given a seed. The tiny LLaVA trained on it
by `scripts/train_visual_retrieval.py` ships in `genprof/assets/retrieval-llava`.
Not here: the model or the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# Vocabulary of the task (the trained model's text vocabulary).
PAD, BOS, EOS, USER, QUERY = 0, 1, 2, 3, 4
N_KEYS = N_VALUES = 8
KEY0 = 8
VALUE0 = KEY0 + N_KEYS
VOCAB = 64
IMAGE_TOKEN = VOCAB - 1

IMAGE_SIZE = 16
PATCH = 4
GRID = IMAGE_SIZE // PATCH  # 4 x 4 = 16 image tokens
PAIRS = 3
CODE_SEED = 1234
EVAL_SEED = 10_000_000  # held-out samples use seeds from here; training uses 0, 1, 2, ...
NOISE = 0.3  # amplitude of the background noise

PREFIX = (BOS, USER)  # text before the image
ASSET = Path(__file__).resolve().parent.parent / "assets" / "retrieval-llava"


def _codes() -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel codes: key k lights pixel k of channel 0, value v pixel v of channel 1 (in a seeded order)."""
    g = torch.Generator().manual_seed(CODE_SEED)
    n = PATCH * PATCH
    keys = torch.eye(n)[torch.randperm(n, generator=g)[:N_KEYS]]
    values = torch.eye(n)[torch.randperm(n, generator=g)[:N_VALUES]]
    return keys, values


@dataclass
class Batch:
    pixel_values: torch.Tensor  # (n, 3, IMAGE_SIZE, IMAGE_SIZE)
    prefix: torch.Tensor  # (n, len(PREFIX)) text before the image
    suffix: torch.Tensor  # (n, 2): <q> KEY
    answers: torch.Tensor  # (n,) the value token

    def input_ids(self, image_tokens: int = GRID * GRID) -> torch.Tensor:
        """The whole prompt with one image placeholder per image token (the transformers LLaVA layout)."""
        img = torch.full((self.prefix.shape[0], image_tokens), IMAGE_TOKEN, dtype=torch.long)
        return torch.cat([self.prefix, img, self.suffix], dim=1)


def make_batch(n: int, seed: int) -> Batch:
    """`n` samples, deterministic in `seed`."""
    g = torch.Generator().manual_seed(seed)
    key_codes, value_codes = _codes()
    cells = GRID * GRID
    # background: faint noise in channels 0-1, marker -1 in channel 2
    patches = (torch.rand(n, cells, 3, PATCH * PATCH, generator=g) * 2 - 1) * NOISE
    patches[:, :, 2] = -1.0
    keys = torch.argsort(torch.rand(n, N_KEYS, generator=g), dim=1)[:, :PAIRS]  # distinct keys per image
    values = torch.randint(0, N_VALUES, (n, PAIRS), generator=g)
    where = torch.argsort(torch.rand(n, cells, generator=g), dim=1)[:, :PAIRS]  # distinct cells
    rows = torch.arange(n)[:, None].expand(n, PAIRS)
    patches[rows, where, 0] = key_codes[keys]
    patches[rows, where, 1] = value_codes[values]
    patches[rows, where, 2] = 1.0
    asked = torch.randint(0, PAIRS, (n,), generator=g)
    answers = VALUE0 + values[torch.arange(n), asked]
    # (n, cells, 3, P*P) -> (n, 3, H, W), cell (r, c) at rows r*P.., columns c*P..
    img = patches.view(n, GRID, GRID, 3, PATCH, PATCH).permute(0, 3, 1, 4, 2, 5)
    pixel_values = img.reshape(n, 3, IMAGE_SIZE, IMAGE_SIZE).contiguous()
    prefix = torch.tensor(PREFIX, dtype=torch.long).expand(n, -1).clone()
    suffix = torch.stack([torch.full((n,), QUERY), KEY0 + keys[torch.arange(n), asked]], dim=1)
    return Batch(pixel_values, prefix, suffix, answers)


def model_config() -> Any:
    """The LlavaConfig of the trained model: tiny CLIP (16 px, 4 px patches) + MLP projector + tiny Llama."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=64)
    text = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                       bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN,
                         projector_hidden_act="gelu", vision_feature_layer=-2,
                         vision_feature_select_strategy="default", image_seq_length=GRID * GRID)
    config._attn_implementation = "sdpa"
    return config
