"""imagen (DeepFloyd IF stand-in): a tiny run through the CLI, and the paper-size structure on the meta device."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import genprof
from conftest import run_cli
from genprof.profiler.scopes import NO_STEP


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[Path, dict, pd.DataFrame]:
    out = tmp_path_factory.mktemp("imagen-cli")
    r = run_cli("run", "imagen", "--size", "tiny", "--repeats", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    run_dir = Path(r.stdout.split("run: ", 1)[1].split()[0])
    meta = json.loads((run_dir / "run.json").read_text())
    return run_dir, meta, pd.read_parquet(run_dir / "ops.parquet")


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    res = genprof.run("imagen", size="paper", device="meta", steps=1, out=tmp_path_factory.mktemp("imagen-meta"))
    assert res.ok, res.meta.get("traceback")
    return res


def test_cli_tiny_run_has_every_phase_and_its_steps(cli_run):
    run_dir, meta, ops = cli_run
    assert meta["status"] == "ok"
    assert {"text_encoder", "denoise", "super_resolution"} <= set(ops["phase"])
    steps = meta["summary"]["steps"]
    assert steps["denoise"]["steps_per_repeat"] == 2 and steps["super_resolution"]["steps_per_repeat"] == 2
    # each UNet runs in its own phase, in every step of it, and nowhere else
    assert set(ops.loc[ops["part"] == "unet", "phase"]) == {"denoise"}
    assert set(ops.loc[ops["part"] == "sr_unet", "phase"]) == {"super_resolution"}
    assert set(ops.loc[ops["part"] == "text_encoder", "phase"]) == {"text_encoder"}
    for phase, part in (("denoise", "unet"), ("super_resolution", "sr_unet")):
        rows = ops[(ops["phase"] == phase) & (ops["part"] == part)]
        assert set(rows["step"]) == {0, 1}
    assert "vae" not in set(ops["part"])  # pixel space: no autoencoder
    phases = pd.read_parquet(run_dir / "phases.parquet")
    assert set(phases.loc[phases["step"] == NO_STEP, "phase"]) == {"text_encoder", "denoise", "super_resolution",
                                                                   "total"}


def test_paper_parts_have_the_published_sizes(paper):
    params = paper.meta["info"]["parameters"]
    assert params["text_encoder"] == pytest.approx(4.76e9, rel=0.01)  # T5-v1.1-XXL encoder
    assert params["unet"] == pytest.approx(4.3e9, rel=0.01)  # IF-I-XL
    assert params["sr_unet"] == pytest.approx(1.24e9, rel=0.01)  # IF-II-L
    assert paper.meta["info"]["steps"] == 1 and paper.meta["info"]["sr_steps"] == 1


def test_paper_stage_one_attends_at_the_lower_levels_of_the_64px_unet(paper):
    att = paper.ops[(paper.ops["family"] == "Attention") & (paper.ops["part"] == "unet")]
    # no attention at 64x64; hybrid attention (text tokens + image tokens as keys) at 32x32, 16x16, 8x8
    assert set(att["seq_q"]) == {32 * 32, 16 * 16, 8 * 8}
    assert set(att["attention_kind"]) == {"self+cross"}
    assert (att["seq_kv"] == att["seq_q"] + 77).all()
    # heads of 64 over 1408, 2112, 2816 channels, CFG batch 2
    assert dict(zip(att["seq_q"], att["batch_heads"])) == {1024: 2 * 22, 256: 2 * 33, 64: 2 * 44}
    assert (att["head_dim"] == 64).all()


def test_paper_super_resolution_stage_is_the_real_one(paper):
    ops = paper.ops
    sr = ops[ops["phase"] == "super_resolution"]
    assert sr["flops"].sum() > 1e12  # one 256x256 IF-II step at batch 2: about 6 TFLOPs
    # its input is the noise and the upsampled stage-I image, 3 + 3 channels, at 256x256 (CFG batch 2)
    conv_in = sr[(sr["module"] == "sr_unet.conv_in") & (sr["op"] == "aten::conv2d")]
    assert conv_in["input_shapes"].str.startswith("[[2, 6, 256, 256]").all() and len(conv_in) == 1
    stage1_in = ops[(ops["module"] == "unet.conv_in") & (ops["op"] == "aten::conv2d")]
    assert stage1_in["input_shapes"].str.startswith("[[2, 3, 64, 64]").all()
    # the noise level is embedded like a timestep (class_embed_type="timestep")
    assert {"sr_unet.class_embedding.linear_1"} <= set(sr["module"])
    # attention at its two lowest levels only: 32x32 and 16x16 of the 256x256 image
    att = sr[sr["family"] == "Attention"]
    assert set(att["seq_q"]) == {32 * 32, 16 * 16}
    # the T5 states are projected to the UNets' widths (encoder_hid_dim) and pooled into the time embedding
    assert {"unet.encoder_hid_proj", "unet.add_embedding.pool"} <= set(ops["module"])
    assert {"sr_unet.encoder_hid_proj"} <= set(sr["module"])


def test_paper_flops_per_phase(paper):
    flops = paper.ops.groupby("phase")["flops"].sum()
    assert flops["text_encoder"] == pytest.approx(2 * 2 * 77 * 4.76e9, rel=0.1)  # 2 prompts x 77 tokens
    assert 4e12 < flops["denoise"] < 8e12  # one IF-I-XL step at batch 2
    assert 4e12 < flops["super_resolution"] < 8e12  # one IF-II-L step at batch 2
