"""Counting on the meta device at paper size: no weights allocated, structure and FLOPs exact."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import genprof
from test_count_crosscheck import assert_phases_agree, assert_sites_agree, counted


@pytest.fixture(scope="module")
def sd_paper():
    built, ops, sites, phases = counted("stable-diffusion", "paper", "meta", "bfloat16")
    return SimpleNamespace(ops=ops, meta={"info": built.info}, sites=sites, phases=phases)


@pytest.fixture(scope="module")
def mav_paper():
    built, ops, sites, phases = counted("make-a-video", "paper", "meta", "bfloat16")
    return SimpleNamespace(ops=ops, meta={"info": built.info}, sites=sites, phases=phases)


@pytest.mark.parametrize("which", ["sd_paper", "mav_paper"])
def test_paper_size_counts_agree_with_the_independent_count(which, request):
    """One paper-size traced pass on the meta device (1 denoising step), against the recorder and
    the FLOP counter (tests/independent_count.py): per phase within 2%, per call site exact."""
    run = request.getfixturevalue(which)
    assert run.phases["flops"].sum() > 1e12
    assert_phases_agree(run.phases)
    assert_sites_agree(run.ops, run.sites)


def test_stable_diffusion_self_attention_sequence_changes_4x_per_unet_level(sd_paper):
    prof = genprof.reports.seq_profile(sd_paper.ops)
    unet_self = prof[(prof["phase"] == "denoise") & (prof["attention_kind"] == "self")]
    by_block = dict(zip(unet_self["block"], unet_self["seq_q_max"]))
    assert by_block["unet.down_blocks.0"] == 4096 and by_block["unet.down_blocks.1"] == 1024
    assert by_block["unet.down_blocks.2"] == 256 and by_block["unet.mid_block"] == 64
    assert set(unet_self["seq_q_max"]) == {4096, 1024, 256, 64}
    cross = prof[(prof["phase"] == "denoise") & (prof["attention_kind"] == "cross")]
    assert set(cross["seq_kv_max"]) == {77}


def test_stable_diffusion_unet_flops_per_image_step_match_the_published_order(sd_paper):
    unet = sd_paper.ops[sd_paper.ops["part"] == "unet"]
    per_image_step = unet["flops"].sum() / 2  # batch 2: classifier-free guidance
    assert 0.75e12 < per_image_step < 0.85e12  # SD 1.5: about 0.8 TFLOP (0.4 TMAC) at 512 px
    assert sd_paper.meta["info"]["parameters"]["unet"] == 859_520_964


def test_llm_decode_flops_per_token_are_2x_parameters_plus_attention(tmp_path):
    res = genprof.run("llm", size="paper", device="meta", tokens=2, out=tmp_path)
    assert res.ok, res.meta.get("traceback")
    params = res.meta["info"]["parameters"]["model"]
    assert params == 6_738_415_616  # Llama-2-7B
    ops, prompt = res.ops, res.meta["info"]["prompt_len"]
    for step in (0, 1):
        counted = ops[(ops["phase"] == "decode") & (ops["step"] == step)]["flops"].sum()
        context = prompt + 1 + step
        attention = 4 * 32 * 32 * 128 * context  # layers x heads x head_dim, one query token
        assert counted == pytest.approx(2 * params + attention, rel=0.05)


def test_meta_device_refuses_timing_mode():
    with pytest.raises(genprof.GenprofError, match="meta.*--mode trace"):
        genprof.api.validate(genprof.make_spec("llm", device="meta", mode="timing"))
