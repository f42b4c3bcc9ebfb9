"""`--opt padded`: the baseline batch for ragged prompts, right-padded to the longest.

Every prompt RIGHT-padded to the longest, one forward over the batch; the
padding's cache entries are marked not real (KVCache.valid), so no query ever
sees them; batched decode at per-row positions (prompt length + step) on the
padded cache. The padding is computed and stored: that waste is what
prepacking and chunking remove (`padding_waste` in the metrics).
Not here: the shared options and metrics (genprof.optimizations.ragged).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from genprof.engine import requests as R
from genprof.engine import step as S
from genprof.optimizations.base import register
from genprof.optimizations.ragged import RaggedSchedule, RaggedToggle
from genprof.phases import Phases


class PaddedSchedule(RaggedSchedule):
    name = "padded"

    def schedule(self, engine: Any, reqs: list[R.Request], phases: Phases, rec: R.Recorder) -> dict[str, Any]:
        dev = engine.device
        lens = [r.length for r in reqs]
        n, longest = len(reqs), max(lens)
        ids = torch.zeros(n, longest, dtype=torch.long, device=dev)
        valid = torch.zeros(n, longest, dtype=torch.bool, device=dev)
        for i, r in enumerate(reqs):
            ids[i, :r.length] = r.prompt
            valid[i, :r.length] = True
        cache = engine.new_cache()
        rows = torch.arange(n, device=dev)
        with phases.phase("prefill"):
            with phases.step(0):
                t = time.perf_counter()
                step = S.batched(engine.embed(ids), cache, torch.arange(longest, device=dev)[None], "prefill",
                                 valid=valid if min(lens) < longest else None,  # no padding: no mask at all
                                 select=(rows, torch.tensor(lens, device=dev) - 1))
                logits = engine.forward(step)
                now = rec.now()
                rec.prefill_s += time.perf_counter() - t
        rec.steps, rec.rows = 1, n
        rec.real_prefill, rec.computed_prefill = sum(lens), n * longest
        for r, lg, tok in zip(reqs, logits, R.argmax_list(logits)):
            r.first_logits, r.tokens, r.times = lg, [tok], [now]
        pos = torch.tensor(lens, device=dev)[:, None]
        step_i = 1
        with phases.phase("decode"):
            while not all(r.finished for r in reqs):
                with phases.step(step_i):
                    t = time.perf_counter()
                    tok = torch.tensor([r.tokens[-1] for r in reqs], device=dev)[:, None]
                    logits = engine.forward(S.batched(engine.embed(tok), cache, pos, "decode"))
                    pos = pos + 1
                    # a finished request's row still rides in the padded batch
                    rec.emit([(r, tk) for r, tk in zip(reqs, R.argmax_list(logits)) if not r.finished], rec.now())
                    rec.decode_only(time.perf_counter() - t)
                step_i += 1
                rec.steps += 1
        rec.kv_bytes = cache.nbytes()
        return {"padding": "right"}


@register
class Padded(RaggedToggle):
    name = "padded"
    options = dict(RaggedToggle.base_options)
    schedule_class = PaddedSchedule
