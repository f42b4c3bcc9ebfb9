"""`--opt prepack[:bin=N]`: prepacking, several prompts in one row of the prefill batch.

Best-fit-decreasing packing of the prompts into rows of at most N tokens
(default: the longest prompt). Each row holds its prompts back to back, with
positions restarting at 0 per prompt; the row's cache marks which prompt each
entry belongs to (KVCache.seg), so a query sees its own prompt only, causally
(a block-diagonal causal mask, additive float: a boolean mask added onto the
scores by the eager path gives wrong logits). The rest of a row is padding,
one more prompt of its own so no query row is fully masked. All rows run in
one forward; the packed cache is then split into one cache per prompt holding
exactly its keys/values, and decoding runs on those (genprof.engine.requests.
decode_running).
Not here: the shared options and metrics (genprof.optimizations.ragged).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from genprof.engine import requests as R
from genprof.engine import step as S
from genprof.engine.decoder import additive_mask, visible
from genprof.errors import GenprofError
from genprof.optimizations.base import register
from genprof.optimizations.ragged import RaggedSchedule, RaggedToggle
from genprof.phases import Phases


def best_fit_decreasing(lens: list[int], bin_size: int) -> list[list[int]]:
    """Indices of `lens` packed into rows of at most `bin_size` tokens, best-fit decreasing.

    Items are taken longest first (ties by index); each goes into the fullest row where it
    still fits (the row with the least room left), or opens a new row.
    """
    if any(n > bin_size for n in lens):
        raise GenprofError(f"prepack: a prompt of {max(lens)} tokens does not fit a bin of {bin_size}; "
                           f"use bin >= the longest prompt")
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lens)), key=lambda i: (-lens[i], i)):
        best = -1
        for r, left in enumerate(room):
            if lens[i] <= left and (best < 0 or left < room[best]):
                best = r
        if best < 0:
            rows.append([i])
            room.append(bin_size - lens[i])
        else:
            rows[best].append(i)
            room[best] -= lens[i]
    return rows


def block_causal_mask(seg_lens: list[int], total: int, dtype: torch.dtype,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """(total, total) additive mask of one packed row: 0 where a token may attend (same prompt, not later),
    else the dtype's most negative; positions past sum(seg_lens) (row padding) are a prompt of their own.
    The mask the engine builds from a packed cache (KVCache.seg), written out for tests and readers."""
    seg = torch.full((total,), len(seg_lens), dtype=torch.long)
    seg[:sum(seg_lens)] = torch.repeat_interleave(torch.arange(len(seg_lens)), torch.tensor(seg_lens))
    return additive_mask(visible(total, 0, seg=seg[None]), dtype)[0, 0].to(device)


class PrepackSchedule(RaggedSchedule):
    name = "prepack"

    def schedule(self, engine: Any, reqs: list[R.Request], phases: Phases, rec: R.Recorder) -> dict[str, Any]:
        dev = engine.device
        lens = [r.length for r in reqs]
        bin_size = self.params.get("bin") or max(lens)
        rows = best_fit_decreasing(lens, bin_size)
        width = max(sum(lens[i] for i in row) for row in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long, device=dev)
        pos = torch.zeros(len(rows), width, dtype=torch.long, device=dev)
        seg = torch.zeros(len(rows), width, dtype=torch.long, device=dev)
        where: list[tuple[int, int]] = [(0, 0)] * len(reqs)
        for r, row in enumerate(rows):
            off = 0
            for s, i in enumerate(row):
                n = lens[i]
                ids[r, off:off + n] = reqs[i].prompt
                pos[r, off:off + n] = torch.arange(n, device=dev)
                seg[r, off:off + n] = s
                where[i] = (r, off)
                off += n
            pos[r, off:] = torch.arange(width - off, device=dev)
            seg[r, off:] = len(row)
        packed = engine.new_cache()
        ri = torch.tensor([where[i][0] for i in range(len(reqs))], device=dev)
        ci = torch.tensor([where[i][1] + lens[i] - 1 for i in range(len(reqs))], device=dev)
        with phases.phase("prefill"):
            with phases.step(0):
                t = time.perf_counter()
                logits = engine.forward(S.batched(engine.embed(ids), packed, pos, "prefill", seg=seg,
                                                  select=(ri, ci)))
                for i, r in enumerate(reqs):
                    r.cache = packed.split(where[i][0], where[i][1], lens[i])
                del packed
                now = rec.now()
                rec.prefill_s += time.perf_counter() - t
        rec.steps, rec.rows = 1, len(rows)
        rec.real_prefill, rec.computed_prefill = sum(lens), len(rows) * width
        for r, lg, tok in zip(reqs, logits, R.argmax_list(logits)):
            r.first_logits, r.tokens, r.times = lg, [tok], [now]
        rec.kv_bytes = sum(r.cache.nbytes() for r in reqs)
        R.decode_running(engine, reqs, phases, rec, first_step=1)
        return {"bin": bin_size, "rows_before": len(reqs), "row_width": width}


@register
class Prepack(RaggedToggle):
    name = "prepack"
    options = {**RaggedToggle.base_options, "bin": None}
    schedule_class = PrepackSchedule

    def params(self) -> dict[str, Any]:
        return {"bin": self._int("bin", None)}

    def check(self, spec: Any, workload: Any) -> None:
        """A bin shorter than the longest prompt is refused before anything runs."""
        super().check(spec, workload)
        size = self._int("bin", None)
        if size is None or spec.weights:  # real weights: the model's positions (and so the lengths) are not known
            return
        from genprof.workloads.params import LLAMA_POSITIONS

        info = {"batch": spec.batch, "decode_tokens": spec.tokens or workload.config(spec)["tokens"]}
        preset = self.option("prompts", default="mmlu")
        longest = max(R.lengths(preset, self.n_requests(info), self._int("seed", 0, low=0),
                                LLAMA_POSITIONS - self.out_len(info)))
        if size < longest:
            raise GenprofError(f"prepack:bin={size} is smaller than the longest prompt ({longest} tokens of "
                               f"prompts={preset}); use bin >= {longest}, or leave bin out (the longest prompt)")
