"""The modern suite (pixart, sd3, flux, cogvideox, wan): a tiny run each, and the paper size on the meta device.

Published figures are from the checkpoints themselves (docs/workloads.md names each source): the parameter count
of the transformer as loaded, and the token counts that the published resolution, frame count, patch size and text
length give by hand.
"""

from __future__ import annotations

import pytest

import genprof
from conftest import run_cli
from genprof.profiler.taxonomy import ATTENTION_KINDS

MODERN = ("pixart", "sd3", "flux", "cogvideox", "wan")

# Transformer parameters of the published checkpoints (exact counts of the loaded weights).
PUBLISHED = {"sd3": 2_028_328_000, "flux": 11_901_408_320, "cogvideox": 5_570_283_072, "wan": 14_288_491_584}
# PixArt-alpha publishes only "0.6B" (one significant digit): it is checked against that rounding, and exactly
# against the parameter count of DiT-XL/2 with cross-attention written out by hand (pixart_by_hand).
PIXART_PUBLISHED = 0.6e9

# Attention at paper size, by hand: (kind, query length, key length) per call of the transformer.
# pixart: (1024 px / 8 / 2)^2 = 4096 image tokens, 120 T5 tokens; sd3: 4096 + 77 CLIP + 256 T5 tokens in one
# attention; flux: 4096 + 512 T5 tokens; cogvideox: 13 latent frames x (480/8/2) x (720/8/2) + 226 text tokens;
# wan: 21 latent frames x (720/8/2) x (1280/8/2) video tokens, 512 UMT5 tokens.
PAPER_ATTENTION = {
    "pixart": {("self", 4096, 4096), ("cross", 4096, 120)},
    "sd3": {("joint", 4096 + 77 + 256, 4096 + 77 + 256)},
    "flux": {("joint", 4096 + 512, 4096 + 512)},
    "cogvideox": {("joint", 13 * 30 * 45 + 226, 13 * 30 * 45 + 226)},
    "wan": {("self", 21 * 45 * 80, 21 * 45 * 80), ("cross", 21 * 45 * 80, 512)},
}
# Attention calls per denoising step: layers x transformer calls per step (wan: two, prompt then negative).
PAPER_CALLS = {"pixart": {"self": 28, "cross": 28}, "sd3": {"joint": 24}, "flux": {"joint": 19 + 38},
               "cogvideox": {"joint": 42}, "wan": {"self": 80, "cross": 80}}


def pixart_by_hand(h: int = 1152, layers: int = 28, caption: int = 4096, patch: int = 2, channels: int = 4,
                   out: int = 8) -> int:
    """DiT-XL/2 with cross-attention and adaLN-single, counted from its description (PixArt-alpha, Fig. 4)."""
    block = 6 * h + (4 * h * h + 4 * h) + (4 * h * h + 4 * h) + (2 * 4 * h * h + 4 * h + h)  # table, attn1, attn2, MLP
    size = h // 3  # the 1024-px model's resolution and aspect-ratio embedders, h/3 wide each
    embed = (channels * patch * patch * h + h) + (caption * h + h + h * h + h) + (256 * h + h + h * h + h) \
        + 2 * (256 * size + size + size * size + size) + (6 * h * h + 6 * h)
    final = 2 * h + h * patch * patch * out + patch * patch * out
    return layers * block + embed + final


@pytest.fixture(scope="module", params=MODERN)
def paper(request, tmp_path_factory):
    """One meta-device run per workload at paper size, one denoising step (every step has the same shapes)."""
    res = genprof.run(request.param, size="paper", device="meta", steps=1, dtype="bfloat16",
                      out=tmp_path_factory.mktemp(f"{request.param}-meta"))
    assert res.ok, res.meta.get("traceback")
    return res


@pytest.fixture(scope="module", params=MODERN)
def tiny(request, tmp_path_factory):
    res = genprof.run(request.param, size="tiny", repeats=1, warmup=0, out=tmp_path_factory.mktemp(request.param))
    assert res.ok, res.meta.get("traceback")
    return res


def test_tiny_run_times_text_encoders_denoise_steps_and_decode_as_phases(tiny):
    ops, info = tiny.ops, tiny.meta["info"]
    assert tiny.meta["summary"]["steps"]["denoise"]["steps_per_repeat"] == 2
    assert set(ops.loc[(ops["phase"] == "denoise") & (ops["part"] == "transformer"), "step"]) == {0, 1}
    placed = ops[ops["part"] != ""].groupby("part")["phase"].agg(set)
    for part, phases in placed.items():
        expected = {"transformer": {"denoise"}, "vae": {"decode"}}.get(part, {"text_encoder"})
        assert phases == expected, part
    assert {p for p in info["parameters"] if p.startswith("text_encoder")} <= set(placed.index)
    att = ops[(ops["family"] == "Attention") & (ops["part"] == "transformer")]
    assert set(att["attention_kind"]) == set(info["attention_modules"]) <= set(ATTENTION_KINDS)


def test_paper_transformer_has_the_published_parameter_count(paper):
    name, params = paper.meta["spec"]["workload"], paper.meta["info"]["parameters"]["transformer"]
    if name == "pixart":
        assert params == pixart_by_hand()
        assert abs(params - PIXART_PUBLISHED) < 0.05e9  # "0.6B"
    else:
        assert abs(params / PUBLISHED[name] - 1) < 0.01


def test_paper_attention_is_joint_self_or_cross_over_the_published_token_counts(paper):
    name = paper.meta["spec"]["workload"]
    att = paper.ops[(paper.ops["family"] == "Attention") & (paper.ops["part"] == "transformer")]
    assert set(zip(att["attention_kind"], att["seq_q"], att["seq_kv"])) == PAPER_ATTENTION[name]
    assert att.groupby("attention_kind")["calls"].sum().to_dict() == PAPER_CALLS[name]


def test_paper_attention_flops_are_4_b_h_lq_lk_d_per_call(paper):
    att = paper.ops[(paper.ops["family"] == "Attention") & (paper.ops["part"] == "transformer")]
    by_hand = 4 * att["batch_heads"] * att["seq_q"] * att["seq_kv"] * att["head_dim"] * att["calls"]
    assert (att["flops"] == by_hand).all()


def test_paper_text_encoders_and_vaes_are_the_published_ones(paper):
    name, params = paper.meta["spec"]["workload"], paper.meta["info"]["parameters"]
    t5 = {"pixart": "text_encoder", "sd3": "text_encoder_3", "flux": "text_encoder_2", "cogvideox": "text_encoder"}
    if name in t5:
        assert params[t5[name]] == 4_762_310_656  # T5-v1.1-XXL encoder
    if name == "wan":
        assert params["text_encoder"] == 5_680_910_336  # UMT5-XXL encoder
    if name == "sd3":  # CLIP-L and bigG with projections, as SD3 medium loads them
        assert (params["text_encoder"], params["text_encoder_2"]) == (123_650_304, 694_659_840)
    if name == "flux":
        assert params["text_encoder"] == 123_060_480  # CLIP-L without projection (its pooled output)
    decode = paper.ops[paper.ops["phase"] == "decode"]
    assert set(decode["part"]) - {""} == {"vae"} and decode["flops"].sum() > 0


def test_modern_suite_runs_through_the_cli_by_name(tmp_path):
    r = run_cli("suite", "--suite", "modern", "--size", "tiny", "--only", "flux", "--repeats", "1",
                "--warmup", "0", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert [p.name.split("_")[0] for p in tmp_path.iterdir() if p.is_dir()] == ["flux"]
    unknown = run_cli("suite", "--suite", "2024", "--out", str(tmp_path))
    assert unknown.returncode == 2 and "unknown suite '2024'; valid: study, modern" in unknown.stderr
