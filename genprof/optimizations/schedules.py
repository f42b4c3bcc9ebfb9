"""LLM prefill schedules over a transformers Llama model, as toggles on the `llm` workload.

Each toggle replaces the workload's inference (one batch of equal prompts)
with a scheduled one over ragged prompts from genprof.workloads.prompts
(option `prompts=chat|mmlu|longdoc|PATH`, `n=` prompts, default the run's
--batch; `seed=`). Greedy decoding of the run's --tokens tokens per prompt.
Phases `prefill` and `decode`, every engine step (forward) a step.

- `padded`: the baseline. Every prompt RIGHT-padded to the longest, one forward
  with the 2-D attention mask (0 on padding) and the KV cache padded with it;
  batched decode with the mask extended by one 1 per step and per-row position
  ids (prompt length + step), so padding never enters any real token.
- `prepack[:bin=N]`: best-fit-decreasing packing of the prompts into rows of at
  most N tokens (default: the longest prompt); per row a 4-D float additive
  block-diagonal causal mask (0 / dtype's most negative; a boolean mask is added
  onto the scores by the eager path and gives wrong logits) and position ids
  restarting at 0 per prompt; all rows in one forward. The packed KV cache is
  then split into one DynamicCache per prompt holding exactly its keys/values,
  and decoding runs on those (segment engine, below).
- `chunked-prefill:chunk=C`: each prompt prefilled alone in chunks of C tokens
  (the last one shorter); chunk i attends causally within itself and fully to
  the cache of the chunks before it (explicit 4-D float mask).
- `fixed-chunk:chunk=C`: the same, but every chunk exactly C tokens, the last
  padded (token 0) and masked: padded keys come after every real query, so the
  causal mask hides them, and they never enter the cache. One static query
  shape; info reports the padded tokens (the fixed shape's cost).
- `sarathi:chunk=C,batch=B[,mode=hybrid|decode-only][,out=T]`: a stream of
  requests (prompt lengths from `prompts`, T output tokens each, default
  --tokens), at most B in flight. hybrid (decode-maximal batching): each engine
  step carries at most one prefill chunk plus one token of every running
  decode, all the step's tokens flattened into one row, so each Linear layer is
  one matrix product over all of them; attention is per sequence over its own
  cache. decode-only: the conventional baseline, a waiting prompt is prefilled
  whole in a step of its own, and decodes run in decode-only steps.

The segment engine: one forward over a flattened row of segments, each the new
tokens of one sequence with its own DynamicCache. A cache object handed to the
model appends each segment's keys/values to that sequence's cache; a
registered attention function (`genprof_segments`, set on the config only
while a schedule runs) attends each segment to its own cache with the model's
own attention implementation (sdpa or eager) and a 4-D float causal mask.

Metrics (the last inference's, in `built.info["schedule"]`, hence run.json
"info"): real vs computed prefill tokens (padding waste), rows, prefill time,
time to first token per request, time between tokens (median, p99), decode
tokens/s, end-to-end tokens/s, peak memory (RSS growth on a CPU, allocator
peak on a GPU), KV cache bytes.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import numpy as np
import torch

from genprof.errors import GenprofError
from genprof.optimizations.base import Optimization, register
from genprof.workloads import prompts as prompt_gen
from genprof.workloads.llm import _cache_kwarg, new_cache

SEGMENT_ATTN = "genprof_segments"
SCHEDULE_NAMES = ("padded", "prepack", "chunked-prefill", "fixed-chunk", "sarathi")


# ----------------------------------------------------------------------------------------- packing

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


def neg_inf(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).min


def block_causal_mask(seg_lens: list[int], total: int, dtype: torch.dtype,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """(total, total) additive mask: 0 where a token may attend (same segment, not later), else most negative.

    Positions past sum(seg_lens) (row padding) form one more segment of their own, so no
    query row is fully masked.
    """
    ids = torch.empty(total, dtype=torch.long)
    start = 0
    for s, n in enumerate(seg_lens):
        ids[start:start + n] = s
        start += n
    ids[start:] = len(seg_lens)
    same = ids[:, None] == ids[None, :]
    causal = torch.ones(total, total, dtype=torch.bool).tril_()
    mask = torch.zeros(total, total, dtype=dtype)
    mask.masked_fill_(~(same & causal), neg_inf(dtype))
    return mask.to(device)


def offset_causal_mask(n: int, past: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 1, n, past + n) additive mask: query i sees every past key and new keys 0..i."""
    q = torch.arange(n)[:, None] + past
    k = torch.arange(past + n)[None, :]
    mask = torch.zeros(n, past + n, dtype=dtype).masked_fill_(k > q, neg_inf(dtype))
    return mask[None, None].to(device)


def split_cache(packed: Any, row: int, offset: int, length: int, model: torch.nn.Module) -> Any:
    """A DynamicCache holding exactly keys/values [offset, offset+length) of one row of a packed cache."""
    out = new_cache(model)
    for layer_idx, layer in enumerate(packed.layers):
        k = layer.keys[row:row + 1, :, offset:offset + length]
        v = layer.values[row:row + 1, :, offset:offset + length]
        out.update(k.contiguous(), v.contiguous(), layer_idx)
    return out


def cache_bytes(cache: Any) -> int:
    return sum(t.numel() * t.element_size() for layer in cache.layers
               for t in (layer.keys, layer.values) if t is not None)


# ----------------------------------------------------------------------------------------- segment engine

@dataclass
class Segment:
    """New tokens of one sequence in a flattened step: `n` tokens, the first `keep` real."""

    cache: Any
    n: int
    keep: int
    past: int = 0
    mask: torch.Tensor | None = None
    kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


class SegmentCache:
    """Handed to the model as its cache for one flattened step: routes each segment's K/V to its own cache."""

    is_compileable = False

    def __init__(self, segments: list[Segment]):
        self.segments = segments

    def get_seq_length(self, layer_idx: int = 0) -> int:  # only read when position ids are missing
        return 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        start = 0
        for seg in self.segments:
            k = key_states[:, :, start:start + seg.n]
            v = value_states[:, :, start:start + seg.n]
            kf, vf = seg.cache.update(k[:, :, :seg.keep], v[:, :, :seg.keep], layer_idx)
            if seg.keep < seg.n:  # padded tail: attended to by nothing real, never stored
                kf = torch.cat([kf, k[:, :, seg.keep:]], dim=2)
                vf = torch.cat([vf, v[:, :, seg.keep:]], dim=2)
            seg.kv[layer_idx] = (kf, vf)
            start += seg.n
        return key_states, value_states


_ACTIVE: list[tuple[SegmentCache | None, Callable, bool]] = []  # (step's cache, inner attention, sdpa?)


def _segment_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                       **kwargs: Any) -> tuple[torch.Tensor, None]:
    cache, inner, _ = _ACTIVE[-1]
    outs, start = [], 0
    for seg in cache.segments:
        kf, vf = seg.kv[module.layer_idx]
        o, _ = inner(module, query[:, :, start:start + seg.n], kf, vf, seg.mask, scaling=scaling, dropout=dropout)
        outs.append(o)
        start += seg.n
    return torch.cat(outs, dim=1), None


_REGISTERED: list[bool] = []


@contextlib.contextmanager
def segment_attention(model: torch.nn.Module) -> Iterator[None]:
    """While inside, the model's attention runs per segment (the config's implementation is restored after)."""
    from transformers import AttentionInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.llama.modeling_llama import eager_attention_forward

    if not _REGISTERED:
        AttentionInterface.register(SEGMENT_ATTN, _segment_attention)
        _REGISTERED.append(True)
    config = model.config
    original = config._attn_implementation
    if original == SEGMENT_ATTN:  # nested: already on
        yield
        return
    inner = ALL_ATTENTION_FUNCTIONS.get_interface(original, eager_attention_forward)
    config._attn_implementation = SEGMENT_ATTN
    _ACTIVE.append((None, inner, original == "sdpa"))
    try:
        yield
    finally:
        _ACTIVE.pop()
        config._attn_implementation = original


def forward_segments(model: torch.nn.Module, tokens: list[torch.Tensor], segments: list[Segment],
                     positions: list[torch.Tensor], last: list[int]) -> torch.Tensor:
    """One forward of a flattened row of segments; logits (len(last), vocab) at flat indices `last`.

    Must run inside `segment_attention(model)`. Each segment's mask is set here from its
    cache's length before the step: an offset causal 4-D float mask, or none where none is
    needed (a single token; sdpa's own causal flag on an empty cache).
    """
    p = next(model.parameters())
    _, inner, is_sdpa = _ACTIVE[-1]
    for seg in segments:
        seg.past = seg.cache.get_seq_length()
        # no mask: one token sees its whole cache; sdpa on an empty cache applies is_causal itself
        plain = seg.n == 1 or (is_sdpa and seg.past == 0)
        seg.mask = None if plain else offset_causal_mask(seg.n, seg.past, p.dtype, p.device)
        seg.kv = {}
    ids = torch.cat(tokens)[None]
    pos = torch.cat(positions)[None]
    cache = SegmentCache(segments)
    _ACTIVE[-1] = (cache, inner, is_sdpa)
    kw = {_cache_kwarg(model): cache}
    hidden = model.model(input_ids=ids, position_ids=pos, use_cache=True, **kw).last_hidden_state
    for seg in segments:
        seg.kv = {}
    return model.lm_head(hidden[0, last])


# ----------------------------------------------------------------------------------------- schedules

@dataclass
class Request:
    prompt: torch.Tensor
    out_len: int
    cache: Any = None
    done_prefill: int = 0  # prompt tokens already in the cache
    tokens: list[int] = field(default_factory=list)  # generated tokens (first from the prefill)
    times: list[float] = field(default_factory=list)  # when each generated token was ready
    first_logits: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return int(self.prompt.shape[0])

    @property
    def finished(self) -> bool:
        return len(self.tokens) >= self.out_len


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

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - self.t0

    def summary(self, reqs: list[Request], extra: dict[str, Any]) -> dict[str, Any]:
        total = self.now()
        ttft = [r.times[0] for r in reqs if r.times]
        tbt = np.concatenate([np.diff(r.times) for r in reqs if len(r.times) > 1] or [np.zeros(0)])
        decode_tokens = sum(max(len(r.tokens) - 1, 0) for r in reqs)
        prompt_tokens = sum(r.length for r in reqs)
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
            "end_to_end_tokens_per_s": (prompt_tokens + sum(len(r.tokens) for r in reqs)) / total,
            "total_s": total, "kv_cache_bytes": self.kv_bytes,
        }
        out.update(extra)
        return out


def _argmax(logits: torch.Tensor) -> list[int]:
    return logits.argmax(-1).tolist()


def _decode_step(model: torch.nn.Module, running: list[Request]) -> torch.Tensor:
    """One token for each running request (segment engine); returns their logits."""
    dev = running[0].prompt.device
    toks = [torch.tensor([r.tokens[-1]], device=dev) for r in running]
    pos = [torch.tensor([r.cache.get_seq_length()], device=dev) for r in running]
    segs = [Segment(r.cache, 1, 1) for r in running]
    return forward_segments(model, toks, segs, pos, list(range(len(running))))


def _decode_all(model: torch.nn.Module, reqs: list[Request], phases: Any, rec: Recorder, first_step: int) -> None:
    step = first_step
    with phases.phase("decode"):
        while True:
            running = [r for r in reqs if not r.finished]
            if not running:
                break
            with phases.step(step):
                t = time.perf_counter()
                logits = _decode_step(model, running)
                now = rec.now()
                for r, tok in zip(running, _argmax(logits)):
                    r.tokens.append(tok)
                    r.times.append(now)
                dt = time.perf_counter() - t
                rec.decode_only_s += dt
                rec.decode_steps_s += dt
            step += 1
            rec.steps += 1


def run_padded(model: torch.nn.Module, reqs: list[Request], phases: Any, rec: Recorder) -> None:
    """Right-padded batch prefill with a 2-D mask, then batched decode on the padded cache."""
    dev = reqs[0].prompt.device
    lens = [r.length for r in reqs]
    n, longest = len(reqs), max(lens)
    ids = torch.zeros(n, longest, dtype=torch.long, device=dev)
    mask = torch.zeros(n, longest, dtype=torch.long, device=dev)
    for i, r in enumerate(reqs):
        ids[i, :r.length] = r.prompt
        mask[i, :r.length] = 1
    cache = new_cache(model)
    kw = {_cache_kwarg(model): cache}
    rows = torch.arange(n, device=dev)
    last = torch.tensor(lens, device=dev) - 1
    with phases.phase("prefill"):
        with phases.step(0):
            t = time.perf_counter()
            hidden = model.model(input_ids=ids, attention_mask=mask, use_cache=True, **kw).last_hidden_state
            logits = model.lm_head(hidden[rows, last])
            now = rec.now()
            rec.prefill_s += time.perf_counter() - t
    rec.steps, rec.rows = 1, n
    rec.real_prefill, rec.computed_prefill = sum(lens), n * longest
    for r, lg, tok in zip(reqs, logits, _argmax(logits)):
        r.first_logits, r.tokens, r.times = lg, [tok], [now]
    pos = torch.tensor(lens, device=dev)[:, None]
    step = 1
    with phases.phase("decode"):
        while not all(r.finished for r in reqs):
            with phases.step(step):
                t = time.perf_counter()
                tok = torch.tensor([r.tokens[-1] for r in reqs], device=dev)[:, None]
                mask = torch.cat([mask, torch.ones(n, 1, dtype=mask.dtype, device=dev)], dim=1)
                logits = model(tok, attention_mask=mask, position_ids=pos, use_cache=True, **kw).logits[:, -1]
                pos = pos + 1
                now = rec.now()
                for r, tk in zip(reqs, _argmax(logits)):
                    if not r.finished:  # a finished request's row still rides in the padded batch
                        r.tokens.append(tk)
                        r.times.append(now)
                dt = time.perf_counter() - t
                rec.decode_only_s += dt
                rec.decode_steps_s += dt
            step += 1
            rec.steps += 1
    rec.kv_bytes = cache_bytes(cache)


def run_prepack(model: torch.nn.Module, reqs: list[Request], phases: Any, rec: Recorder,
                bin_size: int | None = None) -> dict[str, Any]:
    """Packed prefill (block-diagonal float mask, restarting positions), split cache, segment decode."""
    p = next(model.parameters())
    dev, dtype = p.device, p.dtype
    lens = [r.length for r in reqs]
    bin_size = bin_size or max(lens)
    rows = best_fit_decreasing(lens, bin_size)
    width = max(sum(lens[i] for i in row) for row in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long, device=dev)
    pos = torch.zeros(len(rows), width, dtype=torch.long, device=dev)
    mask = torch.empty(len(rows), 1, width, width, dtype=dtype, device=dev)
    where: list[tuple[int, int]] = [(0, 0)] * len(reqs)
    for r, row in enumerate(rows):
        off = 0
        for i in row:
            n = lens[i]
            ids[r, off:off + n] = reqs[i].prompt
            pos[r, off:off + n] = torch.arange(n, device=dev)
            where[i] = (r, off)
            off += n
        pos[r, off:] = torch.arange(width - off, device=dev)
        mask[r, 0] = block_causal_mask([lens[i] for i in row], width, dtype, dev)
    packed = new_cache(model)
    kw = {_cache_kwarg(model): packed}
    ri = torch.tensor([where[i][0] for i in range(len(reqs))], device=dev)
    ci = torch.tensor([where[i][1] + lens[i] - 1 for i in range(len(reqs))], device=dev)
    with phases.phase("prefill"):
        with phases.step(0):
            t = time.perf_counter()
            hidden = model.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                                 **kw).last_hidden_state
            logits = model.lm_head(hidden[ri, ci])
            for i, r in enumerate(reqs):
                r.cache = split_cache(packed, where[i][0], where[i][1], lens[i], model)
            del packed, kw
            now = rec.now()
            rec.prefill_s += time.perf_counter() - t
    rec.steps, rec.rows = 1, len(rows)
    rec.real_prefill, rec.computed_prefill = sum(lens), len(rows) * width
    for r, lg, tok in zip(reqs, logits, _argmax(logits)):
        r.first_logits, r.tokens, r.times = lg, [tok], [now]
    rec.kv_bytes = sum(cache_bytes(r.cache) for r in reqs)
    with segment_attention(model):
        _decode_all(model, reqs, phases, rec, first_step=1)
    return {"bin": bin_size, "rows_before": len(reqs), "row_width": width}


def run_chunked(model: torch.nn.Module, reqs: list[Request], phases: Any, rec: Recorder, chunk: int,
                fixed: bool = False) -> dict[str, Any]:
    """Each prompt prefilled alone in chunks of `chunk` tokens (fixed: all exactly `chunk`, last padded)."""
    dev = reqs[0].prompt.device
    step = 0
    pad_tokens = 0
    with segment_attention(model):
        with phases.phase("prefill"):
            for r in reqs:
                r.cache = new_cache(model)
                for start in range(0, r.length, chunk):
                    real = min(chunk, r.length - start)
                    n = chunk if fixed else real
                    toks = r.prompt[start:start + real]
                    if n > real:
                        toks = torch.cat([toks, torch.zeros(n - real, dtype=toks.dtype, device=dev)])
                    with phases.step(step):
                        t = time.perf_counter()
                        logits = forward_segments(model, [toks], [Segment(r.cache, n, real)],
                                                  [torch.arange(start, start + n, device=dev)], [real - 1])
                        now = rec.now()
                        rec.prefill_s += time.perf_counter() - t
                    step += 1
                    rec.steps += 1
                    rec.rows += 1
                    rec.real_prefill += real
                    rec.computed_prefill += n
                    pad_tokens += n - real
                r.first_logits, r.tokens, r.times = logits[0], [int(logits[0].argmax())], [now]
        rec.kv_bytes = sum(cache_bytes(r.cache) for r in reqs)
        _decode_all(model, reqs, phases, rec, first_step=step)
    return {"chunk": chunk, "fixed_shape": fixed, "padded_tokens": pad_tokens,
            "padding_cost": pad_tokens / rec.real_prefill if rec.real_prefill else 0.0}


def run_sarathi(model: torch.nn.Module, reqs: list[Request], phases: Any, rec: Recorder, chunk: int,
                batch: int, hybrid: bool = True) -> dict[str, Any]:
    """A request stream, at most `batch` in flight; hybrid steps = one prefill chunk + every running decode."""
    dev = reqs[0].prompt.device
    queue = list(reqs)
    active: list[Request] = []
    step = 0
    hybrid_steps = 0
    hybrid_times: list[float] = []  # steps with a prefill chunk and decodes
    alone_times: list[float] = []  # steps with a full prefill chunk only
    with segment_attention(model):
        while queue or active:
            prefilling = next((r for r in active if r.done_prefill < r.length), None)
            if prefilling is None and queue and len(active) < batch:
                prefilling = queue.pop(0)
                prefilling.cache = new_cache(model)
                active.append(prefilling)
            decoding = [r for r in active if r.done_prefill >= r.length and not r.finished]
            if prefilling is not None and not hybrid:
                decoding = []  # conventional: the prompt gets a prefill-only step, whole
            toks, segs, pos = [], [], []
            chunk_real = 0
            if prefilling is not None:
                a = prefilling.done_prefill
                chunk_real = (min(chunk, prefilling.length - a) if hybrid else prefilling.length - a)
                toks.append(prefilling.prompt[a:a + chunk_real])
                segs.append(Segment(prefilling.cache, chunk_real, chunk_real))
                pos.append(torch.arange(a, a + chunk_real, device=dev))
            for r in decoding:
                toks.append(torch.tensor([r.tokens[-1]], device=dev))
                segs.append(Segment(r.cache, 1, 1))
                pos.append(torch.tensor([r.cache.get_seq_length()], device=dev))
            last, off = [], 0
            for s in segs:
                off += s.n
                last.append(off - 1)
            phase = "prefill" if prefilling is not None else "decode"
            with phases.phase(phase):
                with phases.step(step):
                    t = time.perf_counter()
                    logits = forward_segments(model, toks, segs, pos, last)
                    now = rec.now()
                    dt = time.perf_counter() - t
            step += 1
            rec.steps += 1
            out = _argmax(logits)
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
                rec.decode_only_s += dt
                rec.decode_steps_s += dt
            for r, tok in zip(decoding, out[k:]):
                r.tokens.append(tok)
                r.times.append(now)
            for r in [r for r in active if r.finished]:
                rec.kv_bytes = max(rec.kv_bytes, sum(cache_bytes(a.cache) for a in active))
                r.cache = None
                active.remove(r)
    rec.rows = rec.steps
    out = {"chunk": chunk, "batch": batch, "mode": "hybrid" if hybrid else "decode-only",
           "hybrid_steps": hybrid_steps}
    if hybrid_times and alone_times:
        # the decodes' marginal cost: a hybrid step minus a full chunk alone (median), never below 0
        alone = float(np.median(alone_times))
        marginal = sum(max(t - alone, 0.0) for t in hybrid_times) + rec.decode_only_s
        decode_tokens = sum(max(len(r.tokens) - 1, 0) for r in reqs)
        out["chunk_alone_s"] = alone
        out["decode_marginal_s"] = marginal
        out["decode_tokens_per_s_marginal"] = decode_tokens / marginal if marginal > 0 else 0.0
    return out


# ----------------------------------------------------------------------------------------- toggles

class _Schedule(Optimization):
    """Common options and the wrapping of the llm inference."""

    applies_to = ("llm",)
    base_options: dict[str, tuple[str, ...] | None] = {"prompts": None, "n": None, "seed": None}
    options: dict[str, tuple[str, ...] | None] = dict(base_options)

    @property
    def conflicts(self) -> tuple[str, ...]:  # type: ignore[override]  # one schedule per run
        return tuple(n for n in SCHEDULE_NAMES if n != self.name)

    def _int(self, key: str, default: int | None, low: int = 1) -> int | None:
        v = self.option(key)
        if v is None:
            return default
        try:
            n = int(v)
        except ValueError:
            raise GenprofError(f"{self.name}:{key} must be an integer, got {v!r}") from None
        if n < low:
            raise GenprofError(f"{self.name}:{key} must be >= {low}, got {n}")
        return n

    def check(self, spec: Any) -> None:
        super().check(spec)
        if spec.device == "meta":
            raise GenprofError(f"--opt {self.name} runs a real schedule; it cannot run on --device meta")
        for key in self.options:
            if key not in ("prompts", "mode"):
                self._int(key, None, low=0 if key == "seed" else 1)
        preset = self.option("prompts", default="mmlu")
        if preset not in prompt_gen.PRESETS:
            prompt_gen.read_lengths_file(preset)

    def schedule(self, model: torch.nn.Module, reqs: list[Request], phases: Any, rec: Recorder) -> dict[str, Any]:
        raise NotImplementedError

    def n_requests(self, info: dict[str, Any]) -> int:
        return self._int("n", info.get("batch", 1))

    def out_len(self, info: dict[str, Any]) -> int:
        return info.get("decode_tokens", 8) + 1  # the prefill's token plus --tokens decoded

    def apply(self, built: Any) -> Any:
        model = built.parts["model"]
        p = next(model.parameters())
        preset = self.option("prompts", default="mmlu")
        seed = self._int("seed", 0, low=0)
        info = dict(built.info)
        n = self.n_requests(info)
        out_len = self.out_len(info)
        max_len = model.config.max_position_embeddings - out_len
        lens = prompt_gen.lengths(preset, n, seed, max_len)
        prompts = prompt_gen.prompt_tokens(lens, model.config.vocab_size, seed, p.device)
        stats: dict[str, Any] = {}
        info.update({"schedule_name": self.name, "schedule": stats, "prompts": preset,
                     "prompt_distribution": prompt_gen.describe(preset) if preset in prompt_gen.PRESETS else "file",
                     "requests": n, "batch": n, "decode_tokens": out_len - 1, "prompt_tokens": sum(lens),
                     "prompt_len": max(lens)})

        def infer(phases: Any) -> torch.Tensor:
            from genprof.profiler.memory import MemoryMonitor

            reqs = [Request(t, out_len) for t in prompts]
            rec = Recorder(p.device)
            with MemoryMonitor(p.device, interval_s=0.005) as mem:
                extra = self.schedule(model, reqs, phases, rec)
            summary = rec.summary(reqs, extra or {})
            summary["peak_memory"] = mem.result()
            stats.clear()
            stats.update(summary)
            for r in reqs:  # free the KV caches now, not at the next inference
                r.cache = None
            infer.requests = reqs  # type: ignore[attr-defined]  # for tests: first logits, caches
            return torch.tensor([r.tokens for r in reqs], device=p.device)

        return replace(built, infer=infer, info=info)


@register
class Padded(_Schedule):
    name = "padded"
    options = dict(_Schedule.base_options)

    def schedule(self, model, reqs, phases, rec):
        run_padded(model, reqs, phases, rec)
        return {"padding": "right"}


@register
class Prepack(_Schedule):
    name = "prepack"
    options = {**_Schedule.base_options, "bin": None}

    def check(self, spec: Any) -> None:
        super().check(spec)
        size = self._int("bin", None)
        if size is None or spec.weights:  # real weights: the model's positions (and so the lengths) are not known yet
            return
        from genprof.workloads import get
        from genprof.workloads.params import LLAMA_POSITIONS

        info = {"batch": spec.batch, "decode_tokens": spec.tokens or get("llm").config(spec)["tokens"]}
        preset = self.option("prompts", default="mmlu")
        longest = max(prompt_gen.lengths(preset, self.n_requests(info), self._int("seed", 0, low=0),
                                         LLAMA_POSITIONS - self.out_len(info)))
        if size < longest:
            raise GenprofError(f"prepack:bin={size} is smaller than the longest prompt ({longest} tokens of "
                               f"prompts={preset}); use bin >= {longest}, or leave bin out (the longest prompt)")

    def schedule(self, model, reqs, phases, rec):
        return run_prepack(model, reqs, phases, rec, self._int("bin", None))


@register
class ChunkedPrefill(_Schedule):
    name = "chunked-prefill"
    options = {**_Schedule.base_options, "chunk": None}
    fixed = False

    def schedule(self, model, reqs, phases, rec):
        return run_chunked(model, reqs, phases, rec, self._int("chunk", 512), fixed=self.fixed)


@register
class FixedChunk(ChunkedPrefill):
    name = "fixed-chunk"
    fixed = True


@register
class Sarathi(_Schedule):
    name = "sarathi"
    options = {**_Schedule.base_options, "chunk": None, "batch": None, "out": None,
               "mode": ("hybrid", "decode-only")}

    def out_len(self, info):
        return self._int("out", info.get("decode_tokens", 8))

    def n_requests(self, info):
        return self._int("n", max(info.get("batch", 1), 2 * self._int("batch", 8)))

    def schedule(self, model, reqs, phases, rec):
        return run_sarathi(model, reqs, phases, rec, self._int("chunk", 512), self._int("batch", 8),
                           hybrid=self.option("mode", default="hybrid") == "hybrid")
