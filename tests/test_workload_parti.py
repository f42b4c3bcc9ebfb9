"""parti (T5 encoder-decoder stand-in): one image token per decode step, a growing self-attention cache,
cross-attention keys/values computed once."""

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
from genprof.workloads.parti import PRESETS

PHASES = {"text_encoder", "decode", "vq_decode"}
TOKENS = 2


@pytest.fixture(scope="module")
def paper_meta(tmp_path_factory):
    """Parti-20B shape on the meta device, 2 image tokens: counts and shapes only."""
    res = genprof.run("parti", device="meta", size="paper", tokens=TOKENS, out=tmp_path_factory.mktemp("parti"))
    assert res.ok, res.meta.get("traceback")
    return res


def test_cli_tiny_run_reports_every_phase_and_one_step_per_image_token(tmp_path):
    r = run_cli("run", "parti", "--size", "tiny", "--repeats", "1", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    run_dir = Path(r.stdout.split("run: ", 1)[1].split()[0])
    meta = json.loads((run_dir / "run.json").read_text())
    n = PRESETS["tiny"]["grid"] ** 2
    assert meta["status"] == "ok" and set(meta["summary"]["phases"]) == PHASES
    assert meta["summary"]["steps"]["decode"]["steps_per_repeat"] == n == meta["info"]["decode_tokens"]
    assert meta["summary"]["derived"]["time_per_image_token_s"] > 0
    ops = pd.read_parquet(run_dir / "ops.parquet")
    assert PHASES <= set(ops["phase"])
    decoder = ops[ops["module"].str.startswith("model.decoder")]
    assert set(decoder["phase"]) == {"decode"} and set(decoder["step"]) == set(range(n))
    assert set(ops.loc[ops["module"].str.startswith("model.encoder"), "phase"]) == {"text_encoder"}
    assert set(ops.loc[ops["part"] == "vqvae", "phase"]) == {"vq_decode"}


def test_paper_decodes_one_token_a_step_against_a_cache_that_grows_by_one(paper_meta):
    ops, info = paper_meta.ops, paper_meta.meta["info"]
    att = ops[ops["family"] == "Attention"]
    dec = att[att["phase"] == "decode"]
    assert set(dec["step"]) == set(range(TOKENS))
    assert set(dec["seq_q"]) == {1}  # one image token per step
    self_ = dec[dec["attention_kind"] == "self"].groupby("step")["seq_kv"].agg(["min", "max"])
    assert self_["min"].tolist() == self_["max"].tolist() == [1 + i for i in range(TOKENS)]
    cross = dec[dec["attention_kind"] == "cross"]
    assert set(cross["seq_kv"]) == {info["text_len"]} == {128}  # the whole text, every step
    assert set(cross["step"]) == set(range(TOKENS))
    enc = att[att["phase"] == "text_encoder"]
    assert set(enc["seq_q"]) == set(enc["seq_kv"]) == {128}
    # 64 decoder layers, each with one self- and one cross-attention call per step; 64 heads x CFG batch 2
    assert (dec.groupby("step")["calls"].sum() == 2 * 64).all()
    assert set(dec["batch_heads"]) == {2 * 64}


def test_paper_cross_attention_keys_and_values_are_computed_once(paper_meta):
    """Step 0 projects the text to cross-attention K and V in every layer; later steps reuse the cache."""
    ops = paper_meta.ops
    lin = ops[(ops["phase"] == "decode") & (ops["family"] == "Linear")].groupby("step")["flops"].sum()
    d, layers, text_len, rows = 4096, 64, 128, 2
    kv_projection = layers * 2 * (2 * rows * text_len * d * d)  # K and V: d_model -> 64 heads x 64
    assert lin.loc[0] - lin.loc[1] == kv_projection
    # what is left per token: 2 FLOPs per decoder weight outside the cross K/V projections, plus the lm_head
    lm_head = 2 * rows * d * (16000 + 8192)
    per_layer = 4 * d * d + 2 * d * d + 2 * d * 16384  # weights: self q,k,v,o + cross q,o + MLP in and out
    assert lin.loc[1] == 2 * rows * layers * per_layer + lm_head


def test_paper_parameters_match_parti_20b(paper_meta):
    info = paper_meta.meta["info"]
    assert 20.0e9 < info["parameters"]["model"] < 21.0e9
    assert info["token_grid"] == [32, 32] and info["image_tokens"] == 1024 and info["image_px"] == 256
    assert info["codebook_size"] == 8192 and info["text_vocab"] == 16000


def test_tiny_decodes_an_image_of_grid_times_vq_factor_pixels():
    built = genprof.build(RunSpec("parti", size="tiny", batch=2))
    with torch.inference_mode():
        image = built.run(NullPhases())
    grid = PRESETS["tiny"]["grid"]
    px = grid * 2 ** (len(PRESETS["tiny"]["vq"]["block_out_channels"]) - 1)
    assert image.shape == (2, 3, px, px) and built.info["image_px"] == px
    assert torch.isfinite(image).all()


def test_steps_is_refused_with_a_pointer_to_tokens_and_tokens_beyond_the_grid_too():
    with pytest.raises(GenprofError, match="--tokens"):
        genprof.api.validate(RunSpec("parti", steps=4))
    with pytest.raises(GenprofError, match="at most 16"):
        genprof.api.validate(RunSpec("parti", size="tiny", tokens=17))
