"""`--opt chunked-prefill:chunk=C`: each prompt prefilled alone in chunks of C tokens.

Chunk i of a prompt attends causally within itself and fully to the cache of
the chunks before it (the engine's offset causal mask); the last chunk is
shorter. The first token comes from the last chunk; decoding then runs every
request against its own cache (genprof.engine.requests.decode_running).
`fixed-chunk` (genprof.optimizations.fixed_chunk) is the fixed-shape variant.
Not here: the shared options and metrics (genprof.optimizations.ragged).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from genprof.engine import requests as R
from genprof.optimizations.base import register
from genprof.optimizations.ragged import RaggedSchedule, RaggedToggle
from genprof.phases import Phases


def prefill_in_chunks(engine: Any, reqs: list[R.Request], phases: Phases, rec: R.Recorder, chunk: int,
                      fixed: bool) -> int:
    """Prefill every request alone in chunks (fixed: every chunk exactly `chunk` tokens, the last padded with
    token 0; the padding comes after every real query, so causality hides it, and it never enters the
    cache). Returns the padded tokens."""
    dev = engine.device
    step = pad_tokens = 0
    with phases.phase("prefill"):
        for r in reqs:
            r.cache = engine.new_cache()
            for start in range(0, r.length, chunk):
                real = min(chunk, r.length - start)
                n = chunk if fixed else real
                toks = r.prompt[start:start + real]
                if n > real:
                    toks = torch.cat([toks, torch.zeros(n - real, dtype=toks.dtype, device=dev)])
                with phases.step(step):
                    t = time.perf_counter()
                    logits = engine.forward(R.flat_step(engine, [(r, toks, start)], "prefill", store=real,
                                                        last=real - 1))
                    now = rec.now()
                    rec.prefill_s += time.perf_counter() - t
                step += 1
                rec.steps += 1
                rec.rows += 1
                rec.real_prefill += real
                rec.computed_prefill += n
                pad_tokens += n - real
            r.first_logits, r.tokens, r.times = logits[0], [int(logits[0].argmax())], [now]
    rec.kv_bytes = sum(r.cache.nbytes() for r in reqs)
    return pad_tokens


class ChunkedSchedule(RaggedSchedule):
    name = "chunked-prefill"

    def schedule(self, engine: Any, reqs: list[R.Request], phases: Phases, rec: R.Recorder) -> dict[str, Any]:
        fixed = bool(self.params.get("fixed"))
        pad = prefill_in_chunks(engine, reqs, phases, rec, self.params["chunk"], fixed)
        R.decode_running(engine, reqs, phases, rec, first_step=rec.steps)
        return {"chunk": self.params["chunk"], "fixed_shape": fixed, "padded_tokens": pad,
                "padding_cost": pad / rec.real_prefill if rec.real_prefill else 0.0}


@register
class ChunkedPrefill(RaggedToggle):
    name = "chunked-prefill"
    options = {**RaggedToggle.base_options, "chunk": None}
    schedule_class = ChunkedSchedule

    def params(self) -> dict[str, Any]:
        return {"chunk": self._int("chunk", 512), "fixed": False}
