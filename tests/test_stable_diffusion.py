"""stable-diffusion at tiny size, traced: families, phases, steps, and a table that adds up."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

import genprof
from genprof.profiler.scopes import NO_STEP
from genprof.spec import RunSpec


def test_all_main_families_are_present(sd_run):
    families = set(sd_run.ops["family"])
    assert {"Convolution", "Linear", "Attention", "Normalization"} <= families


def test_ops_are_attributed_to_phases_and_denoise_steps(sd_run):
    ops = sd_run.ops
    assert {"text_encoder", "denoise", "decode"} <= set(ops["phase"])
    denoise = ops[ops["phase"] == "denoise"]
    assert set(denoise.loc[denoise["part"] == "unet", "step"]) == {0, 1}  # tiny preset: 2 steps
    # between steps only the loop itself runs (iterating the timesteps, Python): no model op
    assert set(denoise.loc[denoise["step"] == NO_STEP, "part"]) == {""}
    assert (ops.loc[ops["phase"] != "denoise", "step"] == NO_STEP).all()
    # parts: the UNet runs only in denoise, the VAE only in decode, CLIP only in text_encoder
    assert set(ops.loc[ops["part"] == "unet", "phase"]) == {"denoise"}
    assert set(ops.loc[ops["part"] == "vae", "phase"]) == {"decode"}
    assert set(ops.loc[ops["part"] == "text_encoder", "phase"]) == {"text_encoder"}


def test_ops_plus_overhead_add_up_to_each_phase_wall_time(sd_run):
    ops, phases = sd_run.ops, sd_run.phases
    wall = phases[phases["step"] == NO_STEP].set_index(["repeat", "phase"])["time_s"]
    summed = ops.groupby(["repeat", "phase"])["total_time_s"].sum()
    for key, w in wall.items():
        if key[1] == "total":
            continue
        assert summed[key] == pytest.approx(w, rel=0.05), key
    # every denoising step too
    step_wall = phases[phases["step"] != NO_STEP].set_index(["repeat", "phase", "step"])["time_s"]
    step_sum = ops[ops["step"] != NO_STEP].groupby(["repeat", "phase", "step"])["total_time_s"].sum()
    pd.testing.assert_series_equal(step_sum.sort_index(), step_wall.sort_index(), rtol=0.05, check_names=False)


def test_overhead_is_its_own_row_and_never_dropped(sd_run):
    overhead = sd_run.ops[sd_run.ops["family"] == "Overhead"]
    assert (overhead["op"] == "[overhead]").all()
    assert overhead["total_time_s"].sum() > 0
    assert set(overhead["phase"]) >= {"text_encoder", "denoise", "decode"}


def test_no_op_is_counted_twice(sd_run):
    """Top-level ops only: their children (addmm, mkldnn_convolution, the flash kernel) never appear."""
    ops = sd_run.ops
    children = {"aten::addmm", "aten::mkldnn_convolution", "aten::_convolution", "aten::convolution",
                "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::native_group_norm",
                "aten::native_layer_norm"}
    assert not children & set(ops["op"])
    # op calls equal module calls counted by an independent hook
    counts: dict[str, int] = {"Conv2d": 0, "Linear": 0}
    built = genprof.build(RunSpec("stable-diffusion", size="tiny"))
    handles = [m.register_forward_hook(lambda mod, a, o: counts.__setitem__(type(mod).__name__,
                                                                              counts[type(mod).__name__] + 1))
               for part in built.parts.values() for m in part.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    from genprof.phases import NullPhases

    with torch.inference_mode():
        built.run(NullPhases())
    for h in handles:
        h.remove()
    rep0 = ops[ops["repeat"] == 0]
    assert rep0.loc[rep0["op"] == "aten::conv2d", "calls"].sum() == counts["Conv2d"]
    assert rep0.loc[rep0["op"] == "aten::linear", "calls"].sum() == counts["Linear"]
    # and the op time in a phase never exceeds its wall time
    wall = sd_run.phases.query("step == -1").set_index(["repeat", "phase"])["time_s"]
    op_time = ops[ops["family"] != "Overhead"].groupby(["repeat", "phase"])["total_time_s"].sum()
    for key, t in op_time.items():
        if key in wall.index:
            assert t <= wall[key] * 1.0001


def test_self_and_cross_attention_with_their_sequence_lengths(sd_run):
    att = sd_run.ops[(sd_run.ops["family"] == "Attention") & (sd_run.ops["part"] == "unet")]
    assert set(att["attention_kind"]) == {"self", "cross"}
    cross = att[att["attention_kind"] == "cross"]
    assert set(cross["seq_kv"]) == {16}  # the tiny preset's text length
    self_ = att[att["attention_kind"] == "self"]
    assert set(self_["seq_q"]) == {64, 16}  # 8x8 latent, then 4x4 in the mid block
    assert (att["flops"] > 0).all()


def test_summary_has_phase_statistics_and_family_shares(sd_run):
    s = sd_run.meta["summary"]
    assert s["phases"]["denoise"]["n"] == 2
    for key in ("median_s", "p10_s", "p90_s", "stdev_s"):
        assert key in s["phases"]["denoise"]
    assert s["steps"]["denoise"]["steps_per_repeat"] == 2
    assert sum(s["family_share"].values()) == pytest.approx(1.0, abs=1e-4)
    assert s["flops_per_repeat"] > 0
    assert s["memory"]["peak_rss_growth_bytes"] >= 0


def test_timing_mode_times_phases_without_an_op_table(runs_dir):
    res = genprof.run("stable-diffusion", size="tiny", mode="timing", repeats=3, warmup=1, out=runs_dir)
    assert res.ok and res.ops is None
    s = res.meta["summary"]
    assert s["timer"] == "perf_counter"
    assert {"text_encoder", "denoise", "decode"} == set(s["phases"])
    assert all(v["n"] == 3 for v in s["phases"].values())
    phase_sum = sum(v["median_s"] for v in s["phases"].values())
    assert phase_sum <= s["total"]["median_s"] * 1.05
