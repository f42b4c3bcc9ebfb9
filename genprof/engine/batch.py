"""The default batch schedule: one batch of equal-length prompts, prefilled together, then decoded together.

`Prompt` is what a workload feeds the engine: pieces concatenated in order
(token ids (batch, n) go through the embedding, embeddings (batch, n, hidden)
are used as they are, e.g. LLaVA's projected image features) and named
regions of the prompt (`image`: the columns of the image tokens). The prefill
(phase `prefill`) runs the whole prompt in one forward and gives the first
token; `decode` then feeds one token per step (each a step of its own), at
position prompt length + step, greedily (argmax) or teacher-forced.
Tokens stay on the device during decoding: nothing waits for the device
between steps.

With a policy that needs one group per sequence (ragged token counts, e.g.
LazyLLM), the same batch runs as flat steps: one row holding every sequence's
tokens, each with its own cache; linear layers still see every token at once.
Not here: schedules over ragged requests (genprof.optimizations).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from genprof.engine import step as S
from genprof.phases import Phases


@dataclass
class Prompt:
    pieces: list[torch.Tensor]
    tokens: int  # tokens decoded after the prefill's
    regions: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass
class Generation:
    """What one generation produced: tokens (batch, 1 + decoded), the logits of every position when collected
    (else the first only), the requests of a ragged schedule, and what the schedule reports."""

    tokens: torch.Tensor
    logits: list[torch.Tensor]
    requests: list[Any] = field(default_factory=list)
    caches: list[Any] = field(default_factory=list)


def embed_prompt(engine: Any, prompt: Prompt) -> torch.Tensor:
    parts = [engine.embed(p) if not p.is_floating_point() else p.to(engine.dtype) for p in prompt.pieces]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class BatchSchedule:
    name = "batch"

    def run(self, engine: Any, phases: Phases, force: torch.Tensor | None, collect: bool) -> Generation:
        prompt: Prompt = engine.prompt(phases)
        per_seq = any(p.per_sequence for p in engine.policies)
        dev = engine.device
        with phases.phase("prefill"):
            x = embed_prompt(engine, prompt)
            b, n = x.shape[:2]
            pos = torch.arange(n, device=dev)[None]
            caches = [engine.new_cache() for _ in range(b if per_seq else 1)]

            def make_step(x: torch.Tensor, pos: torch.Tensor, phase: str) -> S.Step:
                return S.per_row(x, caches, pos, phase) if per_seq else S.batched(x, caches[0], pos, phase)

            step = make_step(x, pos, "prefill")
            step.regions = dict(prompt.regions)
            logits = engine.forward(step)
            tok = logits.argmax(-1, keepdim=True)
        out, all_logits = [tok], [logits]
        with phases.phase("decode"):
            for i in range(prompt.tokens):
                with phases.step(i):
                    fed = tok if force is None else force[:, i:i + 1]
                    x = engine.embed(fed)
                    p = torch.full((1, 1), n + i, dtype=torch.long, device=dev)
                    logits = engine.forward(make_step(x, p, "decode"))
                    tok = logits.argmax(-1, keepdim=True)
                    out.append(tok)
                    if collect:
                        all_logits.append(logits)
        return Generation(torch.cat(out, dim=1), all_logits, caches=caches)
