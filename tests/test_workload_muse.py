"""muse (aMUSEd stand-in): parallel decoding, every image token predicted at every step."""

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
from genprof.workloads.muse import PRESETS, mask_schedule

PHASES = {"text_encoder", "decode_tokens", "vq_decode"}


@pytest.fixture(scope="module")
def paper_meta(tmp_path_factory):
    """aMUSEd-512 on the meta device, 2 steps: counts and shapes only."""
    res = genprof.run("muse", device="meta", size="paper", steps=2, out=tmp_path_factory.mktemp("muse-meta"))
    assert res.ok, res.meta.get("traceback")
    return res


def test_cli_tiny_run_reports_every_phase_and_one_step_per_decoding_step(tmp_path):
    r = run_cli("run", "muse", "--size", "tiny", "--repeats", "1", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    run_dir = Path(r.stdout.split("run: ", 1)[1].split()[0])
    meta = json.loads((run_dir / "run.json").read_text())
    steps = PRESETS["tiny"]["steps"]
    assert meta["status"] == "ok" and set(meta["summary"]["phases"]) == PHASES
    assert meta["summary"]["steps"]["decode_tokens"]["steps_per_repeat"] == steps
    assert meta["summary"]["derived"]["time_per_step_s"] > 0
    ops = pd.read_parquet(run_dir / "ops.parquet")
    assert PHASES <= set(ops["phase"])
    assert set(ops.loc[ops["part"] == "transformer", "step"]) == set(range(steps))
    assert set(ops.loc[ops["part"] == "transformer", "phase"]) == {"decode_tokens"}
    assert set(ops.loc[ops["part"] == "text_encoder", "phase"]) == {"text_encoder"}
    assert set(ops.loc[ops["part"] == "vqvae", "phase"]) == {"vq_decode"}
    assert {"Linear", "Attention", "Convolution", "Normalization", "Embedding"} <= set(ops["family"])


def test_paper_every_step_attends_over_all_token_positions(paper_meta):
    info, ops = paper_meta.meta["info"], paper_meta.ops
    assert info["token_grid"] == [32, 32] and info["image_tokens"] == 1024 and info["steps"] == 2
    # aMUSEd-512 runs its transformer on a 2x down-sampled grid: 16x16 = 256 positions per image token grid
    positions = info["transformer_positions"]
    assert positions == info["image_tokens"] // 4 == 256
    att = ops[(ops["phase"] == "decode_tokens") & (ops["family"] == "Attention")]
    assert set(att["step"]) == {0, 1}
    for _, step in att.groupby("step"):
        assert set(step["seq_q"]) == {positions}  # all tokens at once, every step
        assert set(step.loc[step["attention_kind"] == "self", "seq_kv"]) == {positions}
        assert set(step.loc[step["attention_kind"] == "cross", "seq_kv"]) == {info["text_len"]}
        assert set(step["batch_heads"]) >= {2 * 16}  # CFG doubles the batch; 16 heads in the transformer layers
    # parallel decoding: every step does the same work
    per_step = ops[ops["phase"] == "decode_tokens"].groupby("step")["flops"].sum()
    assert per_step.loc[0] == per_step.loc[1] > 0


def test_paper_parameters_match_amused_512(paper_meta):
    params = paper_meta.meta["info"]["parameters"]
    assert 0.59e9 < params["transformer"] < 0.62e9  # aMUSEd-512 U-ViT, ~603M
    assert 0.12e9 < params["text_encoder"] < 0.13e9  # CLIP-L/14 text encoder with projection
    assert 0.14e9 < params["vqvae"] < 0.15e9  # VQ-GAN, 146M


def test_tiny_decodes_an_image_of_grid_times_vq_factor_pixels():
    built = genprof.build(RunSpec("muse", size="tiny", batch=2))
    with torch.inference_mode():
        image = built.run(NullPhases())
    px = PRESETS["tiny"]["grid"] * 2 ** (len(PRESETS["tiny"]["vq"]["block_out_channels"]) - 1)
    assert image.shape == (2, 3, px, px) == (2, 3, built.info["image_px"], built.info["image_px"])
    assert torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1


def test_cosine_schedule_unmasks_everything_by_the_last_step():
    for n, steps in ((1024, 12), (64, 3), (4, 8)):
        s = mask_schedule(n, steps)
        assert len(s) == steps and s[-1] == 0 and s[0] < n
        assert all(b <= a for a, b in zip(s, s[1:]))
    assert mask_schedule(1024, 12)[:3] == [1015, 989, 946]  # floor(1024 cos(pi/2 * i/12)), i = 1, 2, 3


def test_tokens_is_refused_with_a_pointer_to_steps():
    with pytest.raises(GenprofError, match="--steps"):
        genprof.api.validate(RunSpec("muse", tokens=4))
