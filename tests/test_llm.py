"""llm at tiny size: prefill and decode apart, one decode step per token, a growing KV cache."""

from __future__ import annotations

import torch

import genprof
from genprof.spec import RunSpec
from genprof.phases import NullPhases


def test_prefill_and_decode_are_reported_separately_with_8_decode_steps(llm_run):
    ops, summary = llm_run.ops, llm_run.meta["summary"]
    assert set(summary["phases"]) == {"prefill", "decode"}
    assert summary["steps"]["decode"]["steps_per_repeat"] == 8
    model_ops = ops[(ops["phase"] == "decode") & (ops["part"] == "model")]
    assert sorted(model_ops["step"].unique()) == list(range(8))
    assert summary["derived"]["ttft_s"] > 0 and summary["derived"]["tpot_s"] > 0


def test_decode_attends_to_a_kv_cache_that_grows_by_one_token_a_step(llm_run):
    ops = llm_run.ops
    prompt = llm_run.meta["info"]["prompt_len"]
    att = ops[(ops["family"] == "Attention") & (ops["repeat"] == 0)]
    pre = att[att["phase"] == "prefill"]
    assert set(pre["seq_q"]) == {prompt} and set(pre["seq_kv"]) == {prompt}
    dec = att[att["phase"] == "decode"].groupby("step")[["seq_q", "seq_kv"]].max()
    assert (dec["seq_q"] == 1).all()
    assert dec["seq_kv"].tolist() == [prompt + 1 + i for i in range(8)]


def test_llm_families_include_linear_attention_normalization_embedding(llm_run):
    assert {"Linear", "Attention", "Normalization", "Embedding"} <= set(llm_run.ops["family"])


def test_decode_linear_flops_are_two_per_parameter_per_token(llm_run):
    """Linear FLOPs of one decode step = 2 x (weights of every Linear layer) at batch 1."""
    built = genprof.build(RunSpec("llm", size="tiny", tokens=8))
    linear_params = sum(m.weight.numel() for m in built.parts["model"].modules() if isinstance(m, torch.nn.Linear))
    ops = llm_run.ops
    step = ops[(ops["phase"] == "decode") & (ops["step"] == 3) & (ops["repeat"] == 0) & (ops["family"] == "Linear")]
    assert step["flops"].sum() == 2 * linear_params


def test_greedy_generation_is_deterministic_across_runs():
    built = genprof.build(RunSpec("llm", size="tiny", tokens=8))
    with torch.inference_mode():
        a, b = built.run(NullPhases()), built.run(NullPhases())
    assert a.shape == (1, 9) and torch.equal(a, b)
