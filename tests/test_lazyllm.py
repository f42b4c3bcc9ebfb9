"""LazyLLM token pruning (`--opt lazyllm`) on the `llm` workload.

Exactness: with keep=1.0 at every pruning layer, the prefill logits and the
logits of every (teacher-forced) decode step equal the unpruned transformers model (float32,
CPU, rtol = atol = 1e-4; sdpa and eager attention; GQA), and greedy tokens are
identical. Pruning drops tokens (alive counts per layer), revival never
computes a (token, layer) twice, and on the trained retrieval model the
default schedule stays within 2 points of the unpruned accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import genprof
from genprof.api import build
from genprof.engine import DecoderEngine, Prompt
from genprof.errors import GenprofError
from genprof.optimizations import lazyllm as LZ
from genprof.optimizations.base import resolve
from genprof.phases import NullPhases
from genprof.spec import OptSpec, RunSpec
from genprof.workloads import get as get_workload
from genprof.workloads import retrieval as R
from genprof.workloads.base import Built, cache_kwarg, dynamic_cache
from genprof.workloads.llm import build_model

from conftest import run_cli

ATOL = RTOL = 1e-4
CFG = dict(config=dict(vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2))  # GQA: two query heads per kv head
PROMPT, STEPS = 40, 6

_MODELS: dict[str, torch.nn.Module] = {}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def model_for(attn: str) -> torch.nn.Module:
    if attn not in _MODELS:
        torch.manual_seed(0)
        _MODELS[attn] = build_model(CFG, attn).eval()
    return _MODELS[attn]


def prompt_ids(batch: int = 2) -> torch.Tensor:
    return torch.randint(0, 512, (batch, PROMPT), generator=torch.Generator().manual_seed(3))


@torch.inference_mode()
def hf_reference(model, ids):
    """Logits of the prefill and of every greedy decode step, and the tokens, from the unpruned model."""
    kw = {cache_kwarg(model): dynamic_cache(model)}
    logits = [model(ids, use_cache=True, logits_to_keep=1, **kw).logits[:, -1]]
    toks = [logits[0].argmax(-1, keepdim=True)]
    for _ in range(STEPS):
        logits.append(model(toks[-1], use_cache=True, **kw).logits[:, -1])
        toks.append(logits[-1].argmax(-1, keepdim=True))
    return logits, toks


def lazy_engine(model, ids, layers, keep, steps=STEPS):
    policy = LZ.LazyPolicy(LZ.parse_schedule(layers, keep, 4), 4)
    return DecoderEngine(model, prompt=lambda phases: Prompt([ids], steps)).with_policy(policy), policy


@torch.inference_mode()
def lazy_logits(engine, toks):
    """Teacher-forced on `toks`: the logits of the prefill and of every decode step, and the caches."""
    gen = engine.run(force=torch.cat(toks, 1), collect=True)
    return gen.logits, gen.caches


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_keep_one_equals_the_unpruned_model(attn):
    model = model_for(attn)
    ids = prompt_ids()
    ref, toks = hf_reference(model, ids)
    engine, _ = lazy_engine(model, ids, "1/2/3", "1.0")
    got, _ = lazy_logits(engine, toks)
    assert len(got) == len(ref)
    for step, (a, b) in enumerate(zip(ref, got)):
        torch.testing.assert_close(b, a, rtol=RTOL, atol=ATOL, msg=f"step {step}")
    # through the optimization on a built workload: the same greedy tokens
    built = Built(parts={"model": model}, engine=DecoderEngine(model, prompt=lambda phases: Prompt([ids], STEPS)),
                  inputs={"prompt": ids})
    with torch.inference_mode():
        base = built.run(NullPhases())
        lazy = LZ.LazyLLM(OptSpec("lazyllm", (("layers", "1/2/3"), ("keep", "1.0")))).apply(built)
        out = lazy.run(NullPhases())
    assert torch.equal(out, base) and torch.equal(out, torch.cat(toks, 1))
    assert not any("forward" in m.__dict__ for m in model.modules())  # the model is left as it was
    assert built.engine.policies == ()  # and so is the plain build's engine
    q = lazy.measure_quality(out)
    assert q["next_token_agreement"] == 1.0 and q["first_token_kl"] < 1e-6


def test_pruning_drops_tokens_progressively():
    model = model_for("sdpa")
    ids = prompt_ids(1)
    engine, policy = lazy_engine(model, ids, "1/2/3", "0.5")
    _, toks = hf_reference(model, ids)
    lazy_logits(engine, toks)
    assert policy.info["alive_per_layer"] == [40, 20, 10, 5]
    # the default schedule on 8 layers: 2/4/6 at 50% each
    assert LZ.parse_schedule(None, None, 8) == [(2, 0.5), (4, 0.5), (6, 0.5)]
    assert LZ.parse_schedule(None, None, 32) == [(8, 0.5), (16, 0.5), (24, 0.5)]
    assert LZ.parse_schedule(None, "0.6/0.5/0.4", 6) == [(2, 0.6), (3, 0.5), (5, 0.4)]
    assert LZ.parse_schedule(None, None, 2) == [(1, 0.125)]  # fractions landing on one layer merge


def test_last_token_kept_in_order_with_original_positions():
    model = model_for("eager")
    engine, _ = lazy_engine(model, prompt_ids(1), "1/3", "0.2", steps=0)
    with torch.inference_mode():
        cache = engine.run().caches[0]
    for layer in range(4):
        pos = cache.pos[layer][0].tolist()
        assert pos == sorted(pos) and pos[-1] == PROMPT - 1
    assert cache.length(3) == 2 and cache.length(1) == 8


def test_revival_computes_each_token_once_per_layer():
    model = model_for("sdpa")
    ids = prompt_ids(1)
    engine, policy = lazy_engine(model, ids, "1/2/3", "0.4")
    policy.log = []
    _, toks = hf_reference(model, ids)
    _, caches = lazy_logits(engine, toks)
    cache = caches[0]
    st = cache.state["lazyllm"]
    seen: set[tuple[int, int]] = set()
    for layer, positions in policy.log:
        for p in positions:
            assert (p, layer) not in seen, f"token {p} computed twice at layer {layer}"
            seen.add((p, layer))
    assert sum(st.revived.values()) > 0  # some pruned tokens came back
    for layer in range(1, 4):  # caches nest; the auxiliary cache of l is exactly what l-1 has and l lacks
        prev, cur = set(cache.pos[layer - 1][0].tolist()), set(cache.pos[layer][0].tolist())
        assert cur <= prev and len(cur) == cache.length(layer)
        assert set(st.aux_pos[layer].tolist()) == prev - cur
        assert st.aux_hidden[layer].shape[0] == st.aux_pos[layer].shape[0]
    # every logged computation is in a cache: nothing computed and thrown away
    assert len(seen) == sum(cache.lengths())


@pytest.fixture(scope="module")
def retrieval_model():
    from genprof.workloads.llm import load_model

    return load_model(R.RETRIEVAL_WEIGHTS, torch.float32).eval()


def test_trained_retrieval_model_and_default_schedule_quality(retrieval_model):
    # shipped with the package; scripts/train_retrieval.py regenerates it
    assert Path(R.RETRIEVAL_WEIGHTS, "model.safetensors").stat().st_size < 3e6
    unpruned = R.accuracy(retrieval_model)
    assert unpruned >= 0.95
    spec = RunSpec("llm", batch=R.EVAL_N, tokens=2, seed=R.EVAL_SEED, weights=R.RETRIEVAL_WEIGHTS,
                   params=(("task", "retrieval"),), optimizations=(OptSpec("lazyllm"),))
    built = build(spec)
    assert torch.equal(built.inputs["prompt"].cpu(), R.make_batch(R.EVAL_N, R.N_PAIRS, R.EVAL_SEED)[0])
    with torch.inference_mode():
        out = built.run(NullPhases())
    q = built.measure_quality(out)
    assert q["accuracy_unpruned"] == pytest.approx(unpruned)
    assert q["accuracy"] >= unpruned - 0.02, q
    assert 0 <= q["first_token_kl"] < 1.0 and q["next_token_agreement"] > 0.9, q
    info = built.info["lazyllm"]
    assert info["layers"] == [2, 3, 5] and info["prefill_flops_fraction"] < 0.6
    n = R.EVAL_N * (2 * R.N_PAIRS + 2)
    assert info["alive_per_layer"][:2] == [n, n] and info["alive_per_layer"][-1] < n / 7


def test_pruning_before_the_lookup_costs_accuracy():
    """The quality numbers are not vacuous: pruning at layer 1 ranks tokens by layer 0's attention, before the
    model has looked the key up, and loses the answer about as often as it drops tokens."""
    spec = RunSpec("llm", batch=100, tokens=1, seed=R.EVAL_SEED, weights=R.RETRIEVAL_WEIGHTS,
                   params=(("task", "retrieval"),), optimizations=(OptSpec.parse("lazyllm:layers=1,keep=0.5"),))
    built = build(spec)
    with torch.inference_mode():
        q = built.measure_quality(built.run(NullPhases()))
    assert q["accuracy_unpruned"] == 1.0
    assert 0.25 <= q["accuracy"] <= 0.75 and q["first_token_kl"] > 1.0, q


def test_cli_run_stores_quality_and_pruning_info(tmp_path):
    r = run_cli("run", "llm", "--size", "tiny", "--tokens", "4", "--repeats", "1", "--warmup", "0",
                "--opt", "lazyllm:layers=1,keep=0.5", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    meta = json.loads((next(tmp_path.iterdir()) / "run.json").read_text())
    assert meta["status"] == "ok", meta.get("traceback")
    q = meta["summary"]["quality"]
    assert {"first_token_agreement", "next_token_agreement", "first_token_kl"} <= set(q)
    info = meta["info"]["lazyllm"]
    assert info["alive_per_layer"] == [32, 16] and 0 < info["prefill_flops_fraction"] < 1
    assert "revived_tokens" in info


def test_retrieval_task_through_run_reports_accuracy(tmp_path):
    res = genprof.run("llm", size="tiny", mode="timing", tokens=1, repeats=1, warmup=0, batch=20, out=tmp_path,
                      weights=R.RETRIEVAL_WEIGHTS, params=(("task", "retrieval"),),
                      optimizations=(OptSpec("lazyllm"),))
    assert res.ok, res.meta.get("traceback")
    q = res.meta["summary"]["quality"]
    assert "accuracy" in q and q["accuracy"] >= 0.85


@pytest.mark.parametrize("opt, needle", [
    ("lazyllm:keep=2", "(0, 1]"),
    ("lazyllm:keep=abc", "not a number"),
    ("lazyllm:layers=5", "out of range"),
    ("lazyllm:layers=0", "out of range"),
    ("lazyllm:layers=1.5", "fraction of depth"),
    ("lazyllm:layers=1,keep=0.5/0.5", "2 keep values for 1 layers"),
    ("lazyllm:level=3", "unknown option"),
])
def test_bad_options_are_one_line_errors(opt, needle):
    spec = RunSpec("llm", optimizations=(OptSpec.parse(opt),))
    with pytest.raises(GenprofError) as e:
        resolve(spec.optimizations, spec, get_workload("llm"))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_refused_elsewhere_and_with_schedules():
    spec = RunSpec("stable-diffusion", optimizations=(OptSpec("lazyllm"),))
    with pytest.raises(GenprofError, match="does not apply to 'stable-diffusion'"):
        resolve(spec.optimizations, spec, get_workload("stable-diffusion"))
    spec = RunSpec("llm", optimizations=(OptSpec("lazyllm"), OptSpec("prepack")))
    with pytest.raises(GenprofError, match="cannot be combined"):
        resolve(spec.optimizations, spec, get_workload("llm"))
    with pytest.raises(GenprofError, match="meta"):
        spec = RunSpec("llm", device="meta", optimizations=(OptSpec("lazyllm"),))
        resolve(spec.optimizations, spec, get_workload("llm"))
