"""Ragged requests, the decoding of a set of them, and the metrics of a scheduled inference.

A `Request` is one prompt (token ids) with its own cache, its generated
tokens, when each was ready, and its first-token logits. `Recorder` keeps the
timestamps and counters of one scheduled inference and summarises them:
real vs computed prefill tokens (padding waste), rows, engine steps, prefill
time, time to first token per request, time between tokens (median, p99),
decode tokens/s, end-to-end tokens/s, KV cache bytes. `decode_running` is the
segment decode every ragged schedule ends with: one flat step per token, one
segment per running request against its own cache.
Not here: the schedules (genprof.optimizations), peak memory (the run measures it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch

from genprof.engine import step as S
from genprof.engine.cache import KVCache
from genprof.engine.prompts import describe, lengths, prompt_tokens, read_lengths_file
from genprof.phases import Phases

__all__ = ["Request", "Recorder", "decode_running", "make_requests", "describe", "lengths", "read_lengths_file"]


@dataclass
class Request:
    prompt: torch.Tensor
    out_len: int
    cache: KVCache | None = None
    done_prefill: int = 0  # prompt tokens already in the cache
    tokens: list[int] = field(default_factory=list)  # generated tokens (the first from the prefill)
    times: list[float] = field(default_factory=list)  # when each generated token was ready
    first_logits: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return int(self.prompt.shape[0])

    @property
    def finished(self) -> bool:
        return len(self.tokens) >= self.out_len


def make_requests(lens: list[int], out_len: int, vocab_size: int, seed: int, device: torch.device) -> list[Request]:
    return [Request(t, out_len) for t in prompt_tokens(lens, vocab_size, seed, device)]


class Recorder:
    """Timestamps and counters of one scheduled inference, summarised into metrics."""

    def __init__(self, device: torch.device):
        self.device = device
        self.t0 = time.perf_counter()
        self.prefill_s = 0.0
        self.decode_only_s = 0.0  # steps without a prefill chunk
        self.decode_steps_s = 0.0  # steps carrying at least one decode token (hybrid steps whole)
        self.steps = 0
        self.real_prefill = 0
        self.computed_prefill = 0
        self.rows = 0
        self.kv_bytes = 0

    def emit(self, pairs: Iterable[tuple[Request, int]], now: float) -> None:
        """Each (request, token) of a step: the token and the time it was ready."""
        for r, tok in pairs:
            r.tokens.append(tok)
            r.times.append(now)

    def decode_only(self, dt: float) -> None:
        """A step of decodes alone took `dt`."""
        self.decode_only_s += dt
        self.decode_steps_s += dt

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - self.t0

    def summary(self, reqs: list[Request], extra: dict[str, Any]) -> dict[str, Any]:
        total = self.now()
        ttft = [r.times[0] for r in reqs if r.times]
        tbt = np.concatenate([np.diff(r.times) for r in reqs if len(r.times) > 1] or [np.zeros(0)])
        decode_tokens = sum(max(len(r.tokens) - 1, 0) for r in reqs)
        prompt_tokens_n = sum(r.length for r in reqs)
        decode_time = self.decode_steps_s
        out = {
            "requests": len(reqs), "prompt_lengths": [r.length for r in reqs],
            "real_prefill_tokens": self.real_prefill, "computed_prefill_tokens": self.computed_prefill,
            "padding_waste": 1 - self.real_prefill / self.computed_prefill if self.computed_prefill else 0.0,
            "rows": self.rows, "engine_steps": self.steps, "prefill_s": self.prefill_s,
            "ttft_s": ttft, "ttft_median_s": float(np.median(ttft)) if ttft else 0.0,
            "ttft_max_s": float(max(ttft)) if ttft else 0.0,
            "tbt_median_s": float(np.median(tbt)) if tbt.size else 0.0,
            "tbt_p99_s": float(np.percentile(tbt, 99)) if tbt.size else 0.0,
            "decode_tokens": decode_tokens,
            "decode_tokens_per_s": decode_tokens / decode_time if decode_time > 0 else 0.0,
            "decode_only_s": self.decode_only_s, "decode_steps_s": self.decode_steps_s,
            "end_to_end_tokens_per_s": (prompt_tokens_n + sum(len(r.tokens) for r in reqs)) / total,
            "total_s": total, "kv_cache_bytes": self.kv_bytes,
        }
        out.update(extra)
        return out


def argmax_list(logits: torch.Tensor) -> list[int]:
    return logits.argmax(-1).tolist()


def flat_step(engine: Any, items: list[tuple[Request, torch.Tensor, int]], phase: str,
              store: int | None = None, last: int | None = None) -> S.Step:
    """One flat step: for each (request, token ids, first position), a segment against the request's cache.
    The ids are embedded in one call; `store` / `last` apply to a single segment (a fixed-shape chunk)."""
    ids = items[0][1] if len(items) == 1 else torch.cat([t for _, t, _ in items])
    groups, col = [], 0
    for req, toks, start in items:
        n = int(toks.shape[0])
        pos = torch.arange(start, start + n, device=toks.device)[None]
        groups.append(S.Group(req.cache, col, col + n, pos, store=store, last=last))
        col += n
    return S.Step(engine.embed(ids[None]), groups, phase)


def decode_step(engine: Any, running: list[Request]) -> torch.Tensor:
    """One token for each running request (one flat step, a segment each); their logits."""
    dev = running[0].prompt.device
    toks = torch.tensor([r.tokens[-1] for r in running], device=dev)
    return engine.forward(flat_step(engine, [(r, toks[i:i + 1], r.cache.length()) for i, r in enumerate(running)],
                                    "decode"))


def decode_running(engine: Any, reqs: list[Request], phases: Phases, rec: Recorder, first_step: int) -> None:
    """Decode every unfinished request one token per step until all are done (phase `decode`)."""
    step = first_step
    with phases.phase("decode"):
        while True:
            running = [r for r in reqs if not r.finished]
            if not running:
                break
            with phases.step(step):
                t = time.perf_counter()
                logits = decode_step(engine, running)
                rec.emit(zip(running, argmax_list(logits)), rec.now())
                rec.decode_only(time.perf_counter() - t)
            step += 1
            rec.steps += 1
