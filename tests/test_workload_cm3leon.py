"""cm3leon (Llama decoder-only stand-in): prefill of the text prompt, then one image token per decode step
against a KV cache that grows by one, and about 2 FLOPs per weight per token."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

import genprof
from conftest import run_cli
from genprof.errors import GenprofError
from genprof.spec import RunSpec
from genprof.phases import NullPhases
from genprof.workloads.cm3leon import PRESETS

PHASES = {"prefill", "decode", "vq_decode"}
TOKENS = 3


@pytest.fixture(scope="module")
def paper_meta(tmp_path_factory):
    """CM3leon-7B shape on the meta device, 3 image tokens: counts and shapes only."""
    res = genprof.run("cm3leon", device="meta", size="paper", tokens=TOKENS, out=tmp_path_factory.mktemp("cm3leon"))
    assert res.ok, res.meta.get("traceback")
    return res


def test_cli_tiny_run_reports_every_phase_and_one_step_per_image_token(tmp_path):
    r = run_cli("run", "cm3leon", "--size", "tiny", "--repeats", "1", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    run_dir = Path(r.stdout.split("run: ", 1)[1].split()[0])
    meta = json.loads((run_dir / "run.json").read_text())
    n = PRESETS["tiny"]["grid"] ** 2
    assert meta["status"] == "ok" and set(meta["summary"]["phases"]) == PHASES
    assert meta["summary"]["steps"]["decode"]["steps_per_repeat"] == n == meta["info"]["decode_tokens"]
    derived = meta["summary"]["derived"]
    assert derived["prefill_s"] > 0 and derived["time_per_image_token_s"] > 0
    ops = pd.read_parquet(run_dir / "ops.parquet")
    assert PHASES <= set(ops["phase"])
    model = ops[ops["part"] == "model"]
    assert set(model["phase"]) == {"prefill", "decode"}
    assert set(model.loc[model["phase"] == "decode", "step"]) == set(range(n))
    assert set(ops.loc[ops["part"] == "vqvae", "phase"]) == {"vq_decode"}


def test_paper_decodes_one_token_a_step_against_a_cache_that_grows_by_one(paper_meta):
    ops, info = paper_meta.ops, paper_meta.meta["info"]
    prompt = info["prompt_len"]
    att = ops[ops["family"] == "Attention"]
    pre = att[att["phase"] == "prefill"]
    assert set(pre["seq_q"]) == set(pre["seq_kv"]) == {prompt} == {128}
    dec = att[att["phase"] == "decode"].groupby("step")[["seq_q", "seq_kv"]].agg(["min", "max"])
    assert (dec[("seq_q", "min")] == 1).all() and (dec[("seq_q", "max")] == 1).all()
    # step 0 feeds <break> after the prompt; step i feeds image token i-1
    assert dec[("seq_kv", "min")].tolist() == dec[("seq_kv", "max")].tolist() == [prompt + 1 + i for i in range(TOKENS)]


def _non_embedding_parameters(c: dict) -> int:
    """By hand, from the Llama config: per layer q, k, v, o, gate, up, down and two RMSNorms; final norm; lm_head."""
    d, ff, layers, vocab = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    kv = d * c["num_key_value_heads"] // c["num_attention_heads"]
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * ff + 2 * d
    return layers * per_layer + d + vocab * d


def test_paper_flops_per_decoded_token_are_two_per_weight_plus_attention(paper_meta):
    c = PRESETS["paper"]["config"]
    info = paper_meta.meta["info"]
    params = _non_embedding_parameters(c)
    assert params == info["parameters_detail"]["non_embedding"]
    assert 6.5e9 < params < 7.0e9  # ~7B, CM3leon-7B
    rows = 2 * info["batch"]  # the prompt and the unconditional (masked-text) prompt decode together
    head_dim = c["hidden_size"] // c["num_attention_heads"]
    ops = paper_meta.ops
    per_step = ops[(ops["phase"] == "decode") & (ops["step"] >= 0)].groupby("step")["flops"].sum()
    for step, flops in per_step.items():
        kv_len = info["prompt_len"] + 1 + step
        attention = 4 * c["num_attention_heads"] * kv_len * head_dim * c["num_hidden_layers"]
        assert flops / rows == pytest.approx(2 * params + attention, rel=0.05)


def test_tiny_decodes_an_image_of_grid_times_vq_factor_pixels():
    built = genprof.build(RunSpec("cm3leon", size="tiny", batch=2))
    with torch.inference_mode():
        image = built.run(NullPhases())
    grid = PRESETS["tiny"]["grid"]
    px = grid * 2 ** (len(PRESETS["tiny"]["vq"]["block_out_channels"]) - 1)
    assert image.shape == (2, 3, px, px) and built.info["image_px"] == px
    assert torch.isfinite(image).all()


def test_steps_is_refused_with_a_pointer_to_tokens():
    with pytest.raises(GenprofError, match="--tokens"):
        genprof.api.validate(RunSpec("cm3leon", steps=4))
    with pytest.raises(GenprofError, match="at most 1024"):
        genprof.api.validate(RunSpec("cm3leon", size="paper", tokens=1025))
