"""make-a-video (ModelScope T2V stand-in): a tiny run through the CLI, and the paper-size structure on meta."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import genprof
from conftest import run_cli


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[dict, pd.DataFrame]:
    out = tmp_path_factory.mktemp("make-a-video-cli")
    r = run_cli("run", "make-a-video", "--size", "tiny", "--repeats", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    run_dir = Path(r.stdout.split("run: ", 1)[1].split()[0])
    return json.loads((run_dir / "run.json").read_text()), pd.read_parquet(run_dir / "ops.parquet")


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    res = genprof.run("make-a-video", size="paper", device="meta", steps=1,
                      out=tmp_path_factory.mktemp("make-a-video-meta"))
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
    att = ops[(ops["family"] == "Attention") & (ops["part"] == "unet")]
    assert set(att["attention_kind"]) == {"spatial-self", "spatial-cross", "temporal-self"}
    assert set(att.loc[att["attention_kind"] == "temporal-self", "seq_q"]) == {4}  # the tiny preset's frames


def test_every_attention_module_is_tagged_spatial_or_temporal():
    from diffusers.models.attention_processor import Attention

    from genprof.spec import RunSpec

    built = genprof.build(RunSpec("make-a-video", size="paper", device="meta", steps=1))
    kinds = {}
    for name, m in built.parts["unet"].named_modules():
        if isinstance(m, Attention):
            kinds[name] = m.genprof_attention_kind
    assert set(kinds.values()) == {"spatial-self", "spatial-cross", "temporal-self"}
    for name, kind in kinds.items():
        temporal = ".temp_attentions." in name or name.startswith("transformer_in.")
        assert kind.startswith("temporal-" if temporal else "spatial-"), name
        # a temporal block's `attn2` is a second self-attention (double_self_attention), not cross
        assert kind.endswith("cross") == (not temporal and name.endswith("attn2")), name


def test_paper_unet_is_modelscope_s(paper):
    info = paper.meta["info"]
    assert info["parameters"]["unet"] == pytest.approx(1.41e9, rel=0.01)  # text-to-video-ms-1.7b UNet
    assert info["parameters"]["text_encoder"] == pytest.approx(340e6, rel=0.01)  # OpenCLIP ViT-H, 23 layers
    assert info["frames"] == 16 and info["latent_shape"] == [1, 4, 16, 32, 32] and info["frame_px"] == 256
    ops = paper.ops
    unet = ops[ops["part"] == "unet"]
    # temporal convolutions (kernel 3 over frames) next to the spatial ones
    conv3d = unet[(unet["op"] == "aten::conv3d") & (unet["module_type"] == "Conv3d")]
    assert not conv3d.empty and (conv3d["family"] == "Convolution").all()
    assert conv3d["module"].str.contains(r"temp_convs\.\d+\.conv\d").all()
    # the VAE decodes every frame: 16 frames as one batch
    post = ops[(ops["module"] == "vae.post_quant_conv") & (ops["op"] == "aten::conv2d")]
    assert post["input_shapes"].str.startswith("[[16, 4, 32, 32]").all() and len(post) == 1


def test_paper_temporal_attention_runs_over_the_frames_at_every_pixel(paper):
    att = paper.ops[(paper.ops["family"] == "Attention") & (paper.ops["part"] == "unet")]
    temporal = att[att["attention_kind"] == "temporal-self"]
    assert set(temporal["seq_q"]) == {16} and set(temporal["seq_kv"]) == {16}  # sequence = frames
    # batch x heads = 2 (CFG) x height x width x heads of the level (heads of 64 over the level's channels)
    heads = {32: 320 // 64, 16: 640 // 64, 8: 1280 // 64, 4: 1280 // 64}
    expected = {2 * s * s * h for s, h in heads.items()} | {2 * 32 * 32 * 8}  # + transformer_in: 8 heads
    assert set(temporal["batch_heads"]) == expected
    # spatial self-attention: sequence = height x width, batch = 2 x frames x heads
    spatial = att[att["attention_kind"] == "spatial-self"]
    assert dict(zip(spatial["seq_q"], spatial["batch_heads"])) == {s * s: 2 * 16 * h for s, h in heads.items()}
    assert set(att.loc[att["attention_kind"] == "spatial-cross", "seq_kv"]) == {77}


def test_paper_temporal_share_of_attention_flops(paper):
    """Temporal attention is cheap in FLOPs (sequence 16) though it runs at every pixel: about 5% here."""
    att = paper.ops[(paper.ops["family"] == "Attention") & (paper.ops["part"] == "unet")]
    share = att.loc[att["attention_kind"].str.startswith("temporal"), "flops"].sum() / att["flops"].sum()
    print(f"temporal share of UNet attention FLOPs: {share:.1%}")
    assert 0.02 < share < 0.10
    flops = paper.ops.groupby("phase")["flops"].sum()
    assert 8e12 < flops["denoise"] < 12e12  # one UNet step on 16 frames at CFG batch 2: 9.8 TFLOPs
