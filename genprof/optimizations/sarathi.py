"""`--opt sarathi:chunk=C,batch=B[,mode=hybrid|decode-only][,out=T]`: chunked prefill with decode-maximal batching.

A stream of requests (prompt lengths from `prompts`, T output tokens each,
default --tokens), at most B in flight. hybrid (SARATHI's decode-maximal
batching): each engine step carries at most one prefill chunk plus one token
of every running decode, all the step's tokens in one flat row, so each Linear
layer is one matrix product over all of them; attention is per sequence over
its own cache. decode-only: the conventional baseline, a waiting prompt is
prefilled whole in a step of its own, and decodes run in decode-only steps.
Metrics add the decodes' marginal cost: a hybrid step minus a full chunk
alone (median), never below 0.
Not here: the shared options and metrics (genprof.optimizations.ragged).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from genprof.engine import requests as R
from genprof.optimizations.base import register
from genprof.optimizations.ragged import RaggedSchedule, RaggedToggle
from genprof.phases import Phases


class SarathiSchedule(RaggedSchedule):
    name = "sarathi"

    def schedule(self, engine: Any, reqs: list[R.Request], phases: Phases, rec: R.Recorder) -> dict[str, Any]:
        chunk, batch, hybrid = self.params["chunk"], self.params["batch"], self.params["hybrid"]
        dev = engine.device
        queue, active = list(reqs), []
        step = hybrid_steps = 0
        hybrid_times: list[float] = []  # steps with a prefill chunk and decodes
        alone_times: list[float] = []  # steps with a full prefill chunk only
        while queue or active:
            prefilling = next((r for r in active if r.done_prefill < r.length), None)
            if prefilling is None and queue and len(active) < batch:
                prefilling = queue.pop(0)
                prefilling.cache = engine.new_cache()
                active.append(prefilling)
            decoding = [r for r in active if r.done_prefill >= r.length and not r.finished]
            if prefilling is not None and not hybrid:
                decoding = []  # conventional: the prompt gets a prefill-only step, whole
            items = []
            chunk_real = 0
            if prefilling is not None:
                a = prefilling.done_prefill
                chunk_real = min(chunk, prefilling.length - a) if hybrid else prefilling.length - a
                items.append((prefilling, prefilling.prompt[a:a + chunk_real], a))
            if decoding:
                toks = torch.tensor([r.tokens[-1] for r in decoding], device=dev)
                items += [(r, toks[i:i + 1], r.cache.length()) for i, r in enumerate(decoding)]
            phase = "prefill" if prefilling is not None else "decode"
            with phases.phase(phase):
                with phases.step(step):
                    t = time.perf_counter()
                    logits = engine.forward(R.flat_step(engine, items, phase))
                    now = rec.now()
                    dt = time.perf_counter() - t
            step += 1
            rec.steps += 1
            out = R.argmax_list(logits)
            k = 0
            if prefilling is not None:
                rec.real_prefill += chunk_real
                rec.computed_prefill += chunk_real
                rec.prefill_s += dt
                if decoding:
                    hybrid_steps += 1
                    rec.decode_steps_s += dt
                    hybrid_times.append(dt)
                elif chunk_real == chunk:
                    alone_times.append(dt)
                prefilling.done_prefill += chunk_real
                if prefilling.done_prefill >= prefilling.length:
                    prefilling.first_logits = logits[0]
                    prefilling.tokens, prefilling.times = [out[0]], [now]
                k = 1
            else:
                rec.decode_only(dt)
            rec.emit(zip(decoding, out[k:]), now)
            for r in [r for r in active if r.finished]:
                rec.kv_bytes = max(rec.kv_bytes, sum(a.cache.nbytes() for a in active))
                r.cache = None
                active.remove(r)
        rec.rows = rec.steps
        extra = {"chunk": chunk, "batch": batch, "mode": "hybrid" if hybrid else "decode-only",
                 "hybrid_steps": hybrid_steps}
        if hybrid_times and alone_times:
            alone = float(np.median(alone_times))
            marginal = sum(max(t - alone, 0.0) for t in hybrid_times) + rec.decode_only_s
            decode_tokens = sum(max(len(r.tokens) - 1, 0) for r in reqs)
            extra["chunk_alone_s"] = alone
            extra["decode_marginal_s"] = marginal
            extra["decode_tokens_per_s_marginal"] = decode_tokens / marginal if marginal > 0 else 0.0
        return extra


@register
class Sarathi(RaggedToggle):
    name = "sarathi"
    options = {**RaggedToggle.base_options, "chunk": None, "batch": None, "out": None,
               "mode": ("hybrid", "decode-only")}
    schedule_class = SarathiSchedule

    def params(self) -> dict[str, Any]:
        return {"chunk": self._int("chunk", 512), "batch": self._int("batch", 8),
                "hybrid": self.option("mode", default="hybrid") == "hybrid"}

    def out_len(self, info: dict[str, Any]) -> int:
        return self._int("out", info.get("decode_tokens", 8))

    def n_requests(self, info: dict[str, Any]) -> int:
        return self._int("n", max(info.get("batch", 1), 2 * self._int("batch", 8)))
