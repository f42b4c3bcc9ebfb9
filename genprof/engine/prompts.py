"""Prompt lengths for the LLM prefill schedules: presets shaped like common data sets, or a user file.

`lengths(preset_or_path, n, seed, max_len)` gives `n` prompt lengths (tokens),
each in [1, max_len], reproducible from `seed` (numpy's PCG64). The presets are
log-normal distributions (prompt lengths of real data sets are right-skewed:
most prompts short, a long tail), clipped to a range:

- `chat`: short chat turns (ShareGPT-like user messages). Log-normal with
  median 48 tokens and sigma 0.9 (mean about 72; 90% between about 11 and 210),
  clipped to [4, 1024].
- `mmlu`: MMLU-like multiple-choice questions with their choices, a few hundred
  tokens with moderate spread. Log-normal with median 256 tokens and sigma 0.45
  (mean about 282; 90% between about 122 and 536), clipped to [32, 1536].
  At batch 32 the longest is typically 2-2.5x the mean, which is the padding
  waste that prepacking removes.
- `longdoc`: long documents (summarisation / long-context QA). Log-normal with
  median 2048 tokens and sigma 0.5 (90% between about 900 and 4700), clipped to
  [256, 8192] and then to `max_len`.

A path instead of a preset name reads a text file with one integer per line
(blank lines and lines starting with `#` are skipped); the lengths are taken in
order, repeated cyclically when the file has fewer than `n`. Lengths above
`max_len` are clipped to it; a length below 1 is an error. Also here:
`prompt_tokens`, random token ids of given lengths.
Not here: the schedules that consume them (genprof.optimizations: padded, prepack, chunked_prefill, fixed_chunk, sarathi).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

from genprof.errors import GenprofError, unknown_choice

# name -> (median tokens, sigma of log length, min, max)
PRESETS: dict[str, tuple[float, float, int, int]] = {
    "chat": (48.0, 0.9, 4, 1024),
    "mmlu": (256.0, 0.45, 32, 1536),
    "longdoc": (2048.0, 0.5, 256, 8192),
}


def describe(preset: str) -> dict[str, Any]:
    """The parameters of a preset (for run.json)."""
    median, sigma, lo, hi = PRESETS[preset]
    return {"distribution": "lognormal", "median": median, "sigma": sigma,
            "mean": median * math.exp(sigma ** 2 / 2), "min": lo, "max": hi}


def read_lengths_file(path: str) -> list[int]:
    if not os.path.isfile(path):
        raise GenprofError(f"prompt lengths file {path!r} does not exist; give a preset "
                           f"({', '.join(PRESETS)}) or a file with one integer per line")
    out = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            try:
                v = int(s)
            except ValueError:
                raise GenprofError(f"{path}:{lineno}: expected one integer per line, got {s!r}") from None
            if v < 1:
                raise GenprofError(f"{path}:{lineno}: a prompt length must be >= 1, got {v}")
            out.append(v)
    if not out:
        raise GenprofError(f"prompt lengths file {path!r} holds no lengths")
    return out


def lengths(preset_or_path: str, n: int, seed: int = 0, max_len: int = 4096) -> list[int]:
    """`n` prompt lengths from a preset name or a file of lengths, each in [1, max_len]."""
    if n < 1:
        raise GenprofError(f"number of prompts must be >= 1, got {n}")
    if max_len < 1:
        raise GenprofError(f"max_len must be >= 1, got {max_len}")
    if preset_or_path in PRESETS:
        median, sigma, lo, hi = PRESETS[preset_or_path]
        rng = np.random.default_rng(seed)
        raw = rng.lognormal(mean=math.log(median), sigma=sigma, size=n)
        vals = np.clip(np.rint(raw), lo, hi).astype(int)
        return [int(min(v, max_len)) for v in vals]
    if os.sep in preset_or_path or os.path.exists(preset_or_path):
        file_vals = read_lengths_file(preset_or_path)
        return [min(file_vals[i % len(file_vals)], max_len) for i in range(n)]
    raise unknown_choice("prompt preset (or a path to a file of lengths)", preset_or_path, tuple(PRESETS))


def prompt_tokens(lens: list[int], vocab_size: int, seed: int = 0,
                  device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """Random token ids, one 1-D LongTensor per prompt length."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab_size, (n,), generator=gen).to(device) for n in lens]
