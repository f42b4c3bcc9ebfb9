"""prod-image (SDXL stand-in): a tiny run through the CLI, and the paper-size structure on the meta device."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import genprof
from conftest import run_cli


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[dict, pd.DataFrame]:
    out = tmp_path_factory.mktemp("prod-image-cli")
    r = run_cli("run", "prod-image", "--size", "tiny", "--repeats", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    run_dir = Path(r.stdout.split("run: ", 1)[1].split()[0])
    return json.loads((run_dir / "run.json").read_text()), pd.read_parquet(run_dir / "ops.parquet")


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    res = genprof.run("prod-image", size="paper", device="meta", steps=1,
                      out=tmp_path_factory.mktemp("prod-image-meta"))
    assert res.ok, res.meta.get("traceback")
    return res


def test_cli_tiny_run_has_every_phase_and_its_steps(cli_run):
    meta, ops = cli_run
    assert meta["status"] == "ok"
    assert {"text_encoder", "denoise", "decode"} <= set(ops["phase"])
    assert meta["summary"]["steps"]["denoise"]["steps_per_repeat"] == 2
    assert set(ops.loc[(ops["phase"] == "denoise") & (ops["part"] == "unet"), "step"]) == {0, 1}
    assert set(ops.loc[ops["part"] == "unet", "phase"]) == {"denoise"}
    assert set(ops.loc[ops["part"] == "vae", "phase"]) == {"decode"}
    # both text encoders run, in the text_encoder phase only
    for part in ("text_encoder", "text_encoder_2"):
        assert set(ops.loc[ops["part"] == part, "phase"]) == {"text_encoder"}


def test_paper_parts_have_the_published_sizes(paper):
    params = paper.meta["info"]["parameters"]
    assert params["unet"] == pytest.approx(2.567e9, rel=0.005)  # SDXL base UNet
    assert params["text_encoder"] == pytest.approx(123e6, rel=0.01)  # CLIP ViT-L text
    assert params["text_encoder_2"] == pytest.approx(695e6, rel=0.01)  # OpenCLIP bigG text
    assert paper.meta["info"]["image_px"] == 1024
    assert paper.meta["info"]["latent_shape"] == [1, 4, 128, 128]


def test_paper_attention_only_at_the_two_lower_resolutions(paper):
    att = paper.ops[(paper.ops["family"] == "Attention") & (paper.ops["part"] == "unet")]
    self_ = att[att["attention_kind"] == "self"]
    # 128x128 latent: no attention at 128x128; 64x64 (10 heads) and 32x32 (20 heads), CFG batch 2
    assert set(self_["seq_q"]) == {64 * 64, 32 * 32}
    assert dict(zip(self_["seq_q"], self_["batch_heads"])) == {4096: 2 * 10, 1024: 2 * 20}
    assert set(att.loc[att["attention_kind"] == "cross", "seq_kv"]) == {77}
    # transformer layers: 2 down x 2 + 3 up x 2 at 64x64; 2 down x 10 + 3 up x 10 + mid 10 at 32x32
    calls = self_.groupby("seq_q")["calls"].sum()
    assert calls[4096] == 10 and calls[1024] == 60


def test_paper_conditioning_is_sdxl_s(paper):
    ops = paper.ops
    linear = ops[ops["op"] == "aten::linear"]
    # cross-attention context: 768 + 1280 = 2048 wide
    to_k = linear[linear["module"] == "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"]
    assert to_k["input_shapes"].str.startswith("[[2, 77, 2048]").all() and len(to_k) == 1
    # added condition: pooled 1280 + 6 time ids x 256 = 2816
    add = linear[linear["module"] == "unet.add_embedding.linear_1"]
    assert add["input_shapes"].str.startswith("[[2, 2816]").all() and len(add) == 1
    # the encoders run on the prompts only: the empty prompt is a zero embedding (SDXL)
    enc = linear[linear["part"].isin(["text_encoder", "text_encoder_2"])]
    assert enc["input_shapes"].str.startswith("[[1, ").all()
    # the pooled prompt goes through the second encoder's projection (CLIPTextModelWithProjection)
    assert "text_encoder_2.text_projection" in set(enc["module"])


def test_paper_flops_per_unet_step_are_sdxl_s(paper):
    """One SDXL UNet pass at 1024 px counts 6.76 TFLOPs per image (3.4 TMACs): 13.5 TFLOPs at CFG batch 2."""
    flops = paper.ops.groupby("phase")["flops"].sum()
    per_image_step = flops["denoise"] / 2
    assert 5.5e12 < per_image_step < 8e12
    assert 8e12 < flops["decode"] < 13e12  # VAE decoder at 1024x1024
