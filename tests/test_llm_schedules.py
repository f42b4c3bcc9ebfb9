"""LLM prefill schedules (padded, prepack, chunked-prefill, fixed-chunk, sarathi) on the tiny Llama.

Exactness: float32 on the CPU, next-token logits of every prompt equal those of
running it alone within atol 1e-4 / rtol 1e-4 (batching and masking change
the summation order of the fused kernels, by about 1e-6 here); greedy
continuations of 16 tokens identical. Ragged lengths include a 1-token prompt
and prompts longer than the chunk (16).
"""

from __future__ import annotations

import json
import random

import pytest
import torch

import genprof
from genprof.errors import GenprofError
from genprof.engine import DecoderEngine
from genprof.engine.decoder import visible
from genprof.engine import prompts as P
from genprof.engine import requests as R
from genprof.optimizations import base as O
from genprof.optimizations.chunked_prefill import ChunkedSchedule
from genprof.optimizations.padded import PaddedSchedule
from genprof.optimizations.prepack import PrepackSchedule, best_fit_decreasing, block_causal_mask
from genprof.phases import NullPhases
from genprof.spec import OptSpec
from genprof.workloads.base import Built, cache_kwarg, dynamic_cache
from genprof.workloads.llm import PRESETS, build_model

ATOL = RTOL = 1e-4
LENS = [1, 5, 37, 20, 3, 50, 16]
CHUNK = 16
CONTINUATION = 16  # generated tokens per prompt, the prefill's first token included
SCHEDULES = ["padded", "prepack", f"chunked-prefill:chunk={CHUNK}", f"fixed-chunk:chunk={CHUNK}",
             f"sarathi:chunk={CHUNK},batch=3,out={CONTINUATION}", f"sarathi:chunk={CHUNK},batch=3,out={CONTINUATION},mode=decode-only"]


@pytest.fixture(scope="module")
def lens_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "lens.txt"
    path.write_text("# ragged\n" + "\n".join(map(str, LENS)) + "\n")
    return str(path)


_MODELS: dict[str, torch.nn.Module] = {}


def tiny_model(attn: str) -> torch.nn.Module:
    if attn not in _MODELS:
        torch.manual_seed(0)
        _MODELS[attn] = build_model(PRESETS["tiny"], attn).eval()
    return _MODELS[attn]


def alone(model: torch.nn.Module, prompt: torch.Tensor, n: int) -> tuple[torch.Tensor, list[int]]:
    """Next-token logits and the greedy continuation of one prompt run by itself."""
    cache = dynamic_cache(model)
    kw = {cache_kwarg(model): cache}
    with torch.inference_mode():
        logits = model(prompt[None], use_cache=True, **kw).logits[0, -1]
        first, toks = logits, [int(logits.argmax())]
        while len(toks) < n:
            logits = model(torch.tensor([[toks[-1]]]), use_cache=True, **kw).logits[0, -1]
            toks.append(int(logits.argmax()))
    return first, toks


def _references(model, prompts):
    key = (id(model), tuple(len(p) for p in prompts))
    if key not in _REFS:
        _REFS[key] = [alone(model, p, CONTINUATION) for p in prompts]
    return _REFS[key]


_REFS: dict = {}


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_matches_each_prompt_alone(schedule, attn, lens_file):
    """Through the optimization itself: next-token logits and 16 greedy tokens per prompt."""
    model = tiny_model(attn)
    built = Built(parts={"model": model}, engine=DecoderEngine(model),
                  info={"batch": len(LENS), "decode_tokens": CONTINUATION - 1})
    opt_spec = OptSpec.parse(schedule)
    opt_spec = OptSpec(opt_spec.name, opt_spec.options + (("prompts", lens_file), ("n", str(len(LENS)))))
    scheduled = O.get(opt_spec.name)(opt_spec).apply(built)
    with torch.inference_mode():
        gen = scheduled.engine.run(NullPhases())
    out, reqs = gen.tokens, gen.requests
    assert [r.length for r in reqs] == LENS
    assert out.shape == (len(LENS), CONTINUATION)
    assert model.config._attn_implementation == attn  # the model is never reconfigured
    for r, (ref_logits, ref_toks) in zip(reqs, _references(model, [r.prompt for r in reqs])):
        torch.testing.assert_close(r.first_logits, ref_logits, atol=ATOL, rtol=RTOL,
                                   msg=lambda m: f"{schedule} {attn} prompt of {r.length}: {m}")
        assert r.tokens == ref_toks, f"{schedule} {attn} prompt of {r.length}"
    stats = scheduled.info["schedule"]
    assert stats["real_prefill_tokens"] == sum(LENS)
    assert len(stats["ttft_s"]) == len(LENS) and stats["tbt_median_s"] > 0


def _schedule(cls, **params):
    return cls([], 1, 0, {}, **params)


def test_prepacked_cache_is_split_into_exact_per_prompt_caches():
    model = tiny_model("sdpa")
    prompts = P.prompt_tokens(LENS, model.config.vocab_size, seed=1)
    reqs = [R.Request(p, 1) for p in prompts]
    with torch.inference_mode():
        _schedule(PrepackSchedule).schedule(DecoderEngine(model), reqs, NullPhases(), R.Recorder(torch.device("cpu")))
        for r in reqs:
            ref = dynamic_cache(model)
            model(r.prompt[None], use_cache=True, **{cache_kwarg(model): ref})
            assert r.cache.length() == r.length
            for layer, b in enumerate(ref.layers):
                keys, values = r.cache.keys[layer], r.cache.values[layer]
                assert keys.shape == b.keys.shape == (1, 4, r.length, 16)
                torch.testing.assert_close(keys, b.keys, atol=ATOL, rtol=RTOL)
                torch.testing.assert_close(values, b.values, atol=ATOL, rtol=RTOL)


def test_padding_waste_rows_and_fixed_chunk_padding_are_reported(lens_file):
    model = tiny_model("sdpa")
    prompts = P.prompt_tokens(LENS, model.config.vocab_size)
    results = {}
    for name, sched in [("padded", _schedule(PaddedSchedule)), ("prepack", _schedule(PrepackSchedule)),
                        ("fixed", _schedule(ChunkedSchedule, chunk=CHUNK, fixed=True))]:
        reqs = [R.Request(p, 2) for p in prompts]
        rec = R.Recorder(torch.device("cpu"))
        with torch.inference_mode():
            extra = sched.schedule(DecoderEngine(model), reqs, NullPhases(), rec) or {}
        results[name] = rec.summary(reqs, extra)
    assert results["padded"]["computed_prefill_tokens"] == len(LENS) * max(LENS)
    assert results["padded"]["rows"] == len(LENS)
    pre = results["prepack"]
    assert pre["rows"] == len(best_fit_decreasing(LENS, max(LENS))) < len(LENS)
    assert pre["computed_prefill_tokens"] == pre["rows"] * pre["row_width"] < len(LENS) * max(LENS)
    fixed = results["fixed"]
    chunks = sum(-(-n // CHUNK) for n in LENS)
    assert fixed["computed_prefill_tokens"] == chunks * CHUNK
    assert fixed["padded_tokens"] == chunks * CHUNK - sum(LENS)


# ----------------------------------------------------------------------------- the pitfalls

PACK = [5, 7, 4]


def _packed_inputs(model):
    prompts = P.prompt_tokens(PACK, model.config.vocab_size, seed=3)
    ids = torch.cat(prompts)[None]
    pos = torch.cat([torch.arange(n) for n in PACK])[None]
    ends = torch.tensor(PACK).cumsum(0) - 1
    refs = torch.stack([alone(model, p, 1)[0] for p in prompts])
    return prompts, ids, pos, ends, refs


def _packed_logits(model, ids, pos, ends, mask=None):
    kw = {cache_kwarg(model): dynamic_cache(model)}
    with torch.inference_mode():
        return model(ids, attention_mask=mask, position_ids=pos, use_cache=True, **kw).logits[0, ends]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_position_ids_alone_with_a_cache_give_wrong_logits_and_the_float_mask_right_ones(attn):
    model = tiny_model(attn)
    _, ids, pos, ends, refs = _packed_inputs(model)
    wrong = _packed_logits(model, ids, pos, ends)  # restarting position ids, no mask, a cache
    assert (wrong[1:] - refs[1:]).abs().max() > 1e-2  # prompts 2 and 3 see the ones before them
    mask = block_causal_mask(PACK, sum(PACK), torch.float32)[None, None]
    torch.testing.assert_close(_packed_logits(model, ids, pos, ends, mask), refs, atol=ATOL, rtol=RTOL)


def test_a_boolean_4d_mask_on_the_eager_path_gives_wrong_logits():
    model = tiny_model("eager")
    _, ids, pos, ends, refs = _packed_inputs(model)
    fmask = block_causal_mask(PACK, sum(PACK), torch.float32)[None, None]
    bmask = fmask == 0  # True where attending: eager adds it onto the scores (+1 / +0) instead of masking
    wrong = _packed_logits(model, ids, pos, ends, bmask)
    assert (wrong - refs).abs().max() > 1e-2
    torch.testing.assert_close(_packed_logits(model, ids, pos, ends, fmask), refs, atol=ATOL, rtol=RTOL)


def test_block_causal_mask_is_float_block_diagonal_and_causal():
    m = block_causal_mask([2, 3], 6, torch.float32)
    neg = torch.finfo(torch.float32).min
    assert m.dtype == torch.float32 and set(m.unique().tolist()) == {0.0, neg}
    allowed = (m == 0).int().tolist()
    assert allowed == [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [0, 0, 1, 1, 0, 0],
                       [0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 0, 1]]  # the last: row padding, its own block
    off = visible(2, 3)[0]  # two new queries over three cached entries: each sees the past and itself
    assert off.int().tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    # padding (not valid) is seen by nobody; positions (a pruned cache, out of order) decide over entry order
    pad = visible(2, 1, valid=torch.tensor([[True, True, False]]))[0]
    assert pad.int().tolist() == [[1, 1, 0], [1, 1, 0]]
    by_pos = visible(1, 2, kpos=torch.tensor([[0, 5, 3]]), qpos=torch.tensor([[3]]))[0]
    assert by_pos.int().tolist() == [[1, 0, 1]]


# ----------------------------------------------------------------------------- bin packing

def _reference_bfd(lens, bin_size):
    rows, room = [], []
    for i in sorted(range(len(lens)), key=lambda i: (-lens[i], i)):
        fits = [r for r in range(len(rows)) if room[r] >= lens[i]]
        if fits:
            r = min(fits, key=lambda r: (room[r], r))
            rows[r].append(i)
            room[r] -= lens[i]
        else:
            rows.append([i])
            room.append(bin_size - lens[i])
    return rows


def test_best_fit_decreasing_on_a_worked_example():
    # sorted 5,4,3,3,2,1 into bins of 6: 5|4|3 open rows; 3 -> row of 3; 2 -> row of 4; 1 -> row of 5
    assert best_fit_decreasing([5, 4, 3, 3, 2, 1], 6) == [[0, 5], [1, 4], [2, 3]]
    # the 2 fits both rows and goes to the fuller one (room 2, not room 3)
    assert best_fit_decreasing([7, 8, 2], 10) == [[1, 2], [0]]


def test_best_fit_decreasing_rows_never_exceed_the_bin_and_hold_every_prompt_once():
    rng = random.Random(0)
    for _ in range(200):
        lens = [rng.randint(1, 60) for _ in range(rng.randint(1, 40))]
        bin_size = rng.randint(max(lens), 150)
        rows = best_fit_decreasing(lens, bin_size)
        assert sorted(i for row in rows for i in row) == list(range(len(lens)))
        assert all(sum(lens[i] for i in row) <= bin_size for row in rows)
        assert rows == _reference_bfd(lens, bin_size)
        assert len(rows) >= -(-sum(lens) // bin_size)
    with pytest.raises(GenprofError, match="does not fit a bin of 10"):
        best_fit_decreasing([3, 11], 10)


# ----------------------------------------------------------------------------- prompts

def test_prompt_presets_are_reproducible_and_shaped():
    a = P.lengths("mmlu", 500, seed=1, max_len=4096)
    assert a == P.lengths("mmlu", 500, seed=1, max_len=4096) != P.lengths("mmlu", 500, seed=2, max_len=4096)
    med = sorted(a)[250]
    assert 200 < med < 320 and min(a) >= 32
    chat, doc = P.lengths("chat", 500, 0, 4096), P.lengths("longdoc", 500, 0, 3000)
    assert sorted(chat)[250] < 80 and sorted(doc)[250] > 1500 and max(doc) == 3000


def test_prompt_lengths_file_is_cycled_and_validated(tmp_path, lens_file):
    assert P.lengths(lens_file, 9, max_len=40) == [1, 5, 37, 20, 3, 40, 16, 1, 5]
    bad = tmp_path / "bad.txt"
    bad.write_text("12\n0\n")
    with pytest.raises(GenprofError, match="must be >= 1"):
        P.lengths(str(bad), 2)
    with pytest.raises(GenprofError, match="unknown prompt preset"):
        P.lengths("wiki", 2)


# ----------------------------------------------------------------------------- as toggles

@pytest.mark.parametrize("workload", ["stable-diffusion", "muse"])
def test_schedules_are_refused_on_other_workloads(workload):
    for opt in ("padded", "prepack", "chunked-prefill:chunk=64", "fixed-chunk:chunk=64", "sarathi:chunk=64,batch=4"):
        with pytest.raises(GenprofError, match=f"does not apply to '{workload}'; it applies to: llm"):
            genprof.api.validate(genprof.make_spec(workload, optimizations=[opt]))


def test_schedules_refuse_bad_options_and_each_other():
    with pytest.raises(GenprofError, match="chunk must be >= 1"):
        genprof.api.validate(genprof.make_spec("llm", optimizations=["chunked-prefill:chunk=0"]))
    with pytest.raises(GenprofError, match="cannot be combined"):
        genprof.api.validate(genprof.make_spec("llm", optimizations=["prepack", "padded"]))
    with pytest.raises(GenprofError, match="does not exist"):
        genprof.api.validate(genprof.make_spec("llm", optimizations=["prepack:prompts=/nonexistent/lens.txt"]))


def test_schedule_metrics_reach_run_json(tmp_path):
    res = genprof.run("llm", size="tiny", mode="timing", batch=6, tokens=3, repeats=1, warmup=0, out=tmp_path,
                      optimizations=["sarathi:chunk=32,batch=3,prompts=chat"])
    assert res.ok, res.meta.get("traceback")
    info = json.loads((res.path / "run.json").read_text())["info"]
    stats = info["schedule"]
    assert info["schedule_name"] == "sarathi" and stats["requests"] == 6
    for key in ("real_prefill_tokens", "computed_prefill_tokens", "rows", "prefill_s", "ttft_s", "tbt_median_s",
                "tbt_p99_s", "decode_tokens_per_s", "end_to_end_tokens_per_s", "kv_cache_bytes"):
        assert key in stats, key
    assert res.meta["summary"]["memory"]  # peak memory is the run's own
    assert res.meta["summary"]["steps"]["decode"]["steps_per_repeat"] >= 1
    assert "prefill" in res.meta["summary"]["phases"]
