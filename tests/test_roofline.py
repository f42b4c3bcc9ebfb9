"""Roofline projection: bound classification, the LLM at paper size, the CLI (`project`, `paper`)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

import genprof
from genprof.roofline import PROFILES, get_profile, project, summarize
from genprof.roofline.hardware import HardwareProfile
from genprof.roofline.project import decode_per_token, step_weights

GPUS = ("a100", "h100", "h200")
TOY = HardwareProfile("toy", "toy", "gpu", {"fp32": 100.0, "tf32": 100.0, "bf16": 100.0}, 10.0)  # ridge 10 FLOP/B


def _ops(rows):
    base = dict(run_id="r", workload="w", size="tiny", optimizations="baseline", repeat=0, phase="p", step=-1,
                part="", module="m", attention_kind="", calls=1, total_time_s=0.0, seq_q=0, seq_kv=0,
                batch_heads=0, head_dim=0, input_shapes="")
    return pd.DataFrame([{**base, **r} for r in rows])


def test_intensity_and_bound_follow_the_ridge_point():
    ops = _ops([dict(op="aten::mm", family="Linear", flops=2000, bytes=100),  # 20 FLOP/B > 10: compute
                dict(op="aten::mm", family="Linear", flops=500, bytes=100),  # 5 FLOP/B: memory
                dict(op="aten::add", family="Elementwise", flops=0, bytes=40),
                dict(op="aten::view", family="Memory", flops=0, bytes=0)])
    p = project(ops, TOY)
    assert list(p["bound"]) == ["compute", "memory", "memory", "none"]
    assert p["intensity"].iloc[0] == pytest.approx(20) and p["intensity"].iloc[1] == pytest.approx(5)
    assert list(p["time_s"]) == pytest.approx([20.0, 10.0, 4.0, 0.0])


def test_overhead_rows_are_not_projected_and_cpu_pays_dispatch_per_op():
    ops = _ops([dict(op="aten::add", family="Elementwise", flops=0, bytes=30, calls=3),
                dict(op="aten::view", family="Memory", flops=0, bytes=0, calls=2),
                dict(op="[overhead]", family="Overhead", flops=0, bytes=0, total_time_s=5.0)])
    cpu = HardwareProfile("c", "c", "cpu", {"fp32": 100.0}, 10.0, op_overhead_s=0.5)
    p = project(ops, cpu)
    assert "[overhead]" not in set(p["op"])
    assert list(p["time_s"]) == pytest.approx([3 * (1.0 + 0.5), 2 * 0.5])  # views: the dispatch term only


def test_gpu_launch_bound_excess_is_an_overhead_row():
    ops = _ops([dict(op="aten::add", family="Elementwise", flops=0, bytes=100, calls=100)])
    p = project(ops, TOY.with_overrides(launch_s=1.0))
    launch = p[p["op"] == "[launch]"]
    assert launch["time_s"].sum() == pytest.approx(100 - 10) and set(launch["family"]) == {"Overhead"}


def test_unknown_hardware_is_a_one_line_error():
    with pytest.raises(genprof.GenprofError, match=r"unknown hardware 'tpu'; valid: a100, h100, h200, local"):
        get_profile("tpu")


@pytest.fixture(scope="module")
def llm_paper(tmp_path_factory):
    res = genprof.run("llm", size="paper", device="meta", dtype="bfloat16", tokens=2,
                      out=tmp_path_factory.mktemp("llm"))
    assert res.ok, res.meta.get("traceback")
    return res


@pytest.mark.parametrize("hw_name", GPUS)
def test_llm_paper_prefill_compute_bound_decode_memory_bound_at_weights_plus_kv_over_bandwidth(llm_paper, hw_name):
    hw = PROFILES[hw_name]
    p = project(llm_paper.ops, hw, "bfloat16")
    by_phase = summarize(p[p["family"] != "Overhead"], "phase").set_index("phase")
    assert by_phase.loc["prefill", "compute_fraction"] > 0.5
    assert by_phase.loc["decode", "compute_fraction"] < 0.1
    # by hand, from the Llama-2-7B config: 2 bytes per bf16 parameter; K and V of 32 layers x 4096 x (512 + 1)
    weights = 6_738_415_616 * 2
    kv = 2 * 32 * 4096 * (512 + 1) * 2
    expected = (weights + kv) / hw.bandwidth
    tpot = decode_per_token(p[p["step"] == 0])
    assert tpot == pytest.approx(expected, rel=0.15)


def test_decode_counts_the_weight_bytes_of_every_linear(llm_paper):
    ops = llm_paper.ops
    lin = ops[(ops["phase"] == "decode") & (ops["step"] == 0) & (ops["op"] == "aten::linear")]
    # 7 projections x 32 layers + lm_head: every weight read once per token
    assert lin["bytes"].sum() >= (32 * (4 * 4096 * 4096 + 3 * 4096 * 11008) + 32000 * 4096) * 2


def _genprof(capsys, monkeypatch, *args):
    """`genprof ARGS` through the console script's entry point (genprof.cli:main), in this process."""
    from genprof import cli

    monkeypatch.setattr(sys, "argv", ["genprof", *args])
    with pytest.raises(SystemExit) as e:
        cli.main()
    r = capsys.readouterr()
    return subprocess.CompletedProcess(args, e.value.code, r.out, r.err)


def test_cli_project_prints_families_and_phases_and_writes_only_when_asked(llm_paper, tmp_path, capsys, monkeypatch):
    r = _genprof(capsys, monkeypatch, "project", str(llm_paper.path), "--hw", "h100", "--eff-memory", "0.8",
                 "--out", str(tmp_path / "proj"))
    assert r.returncode == 0, r.stderr
    assert "H100 SXM" in r.stdout and "Linear" in r.stdout and "decode" in r.stdout and "prefill" in r.stdout
    assert "host and device per phase" in r.stdout and "host-bound" in r.stdout and "graphs+fused-norm" in r.stdout
    assert (tmp_path / "proj" / "projection.parquet").is_file() and (tmp_path / "proj" / "roofline.png").is_file()
    assert not (llm_paper.path / "projection.parquet").exists()


@pytest.mark.parametrize("args, message", [
    (("--hw", "v100"), "error: unknown hardware 'v100'; valid: a100, h100, h200, local"),
    (("--hw", "a100", "--host", "xeon"), "error: unknown host profile 'xeon'; valid: a JSON file or one of amd-epyc"),
    (("--hw", "a100", "--launch-us", "-3"), "error: --launch-us must be in [0, 1000000) microseconds, got -3")])
def test_cli_project_bad_option_exits_2_with_one_line(llm_paper, capsys, monkeypatch, args, message):
    r = _genprof(capsys, monkeypatch, "project", str(llm_paper.path), *args)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [message]


def test_llm_paper_decode_is_host_bound_eager_and_device_bound_with_graphs(llm_paper):
    """Llama-2-7B decode at batch 1: eager issues about 1,300 kernels a token and the host cannot keep up
    on any GPU profile; replayed as a CUDA graph the same kernels are device-bound, and the combined time
    is the device's busy time plus the replay. Prefill (512 tokens) is device-bound on the A100."""
    from genprof.roofline import overlap
    from genprof.roofline.host import load_host

    host = load_host()
    for name in GPUS:
        ph = overlap.phases(llm_paper.ops, PROFILES[name], host, "bfloat16").set_index(["phase", "regime"])
        eager, graphs = ph.loc[("decode", "eager")], ph.loc[("decode", "graphs")]
        assert 1200 <= eager["kernels_per_step"] <= 1500
        assert eager["bound"] == "host" and eager["combined_s"] >= eager["host_s"]
        assert graphs["bound"] == "device"
        assert graphs["combined_s"] == pytest.approx(graphs["busy_s"] + 2 * host.graph_replay_s, rel=1e-6)
        assert ph.loc[("decode", "eager+fused-norm"), "kernels_per_step"] < eager["kernels_per_step"] - 32 * 2 * 4
    assert overlap.phases(llm_paper.ops, PROFILES["a100"], host, "bfloat16").set_index(
        ["phase", "regime"]).loc[("prefill", "eager"), "bound"] == "device"


def test_cli_paper_quick_writes_the_headline_table_and_report(tmp_path, capsys, monkeypatch):
    doc, out = tmp_path / "paper.md", tmp_path / "out"
    r = _genprof(capsys, monkeypatch, "paper", "--size", "tiny", "--no-measure", "--only", "stable-diffusion",
                 "--only", "llm", "--out", str(out), "--doc", str(doc))
    assert r.returncode == 0, r.stderr
    text = doc.read_text()
    assert "Convolution share of diffusion-TTI time" in text and "needs a GPU" in text
    assert "LLM prefill compute-bound" in text
    norm = text[text.index("## Normalization in the projected diffusion time"):text.index("## How the counts are made")]
    assert "| stable-diffusion | `aten::group_norm` |" in norm and "What changed" in text
    html = (out / "paper.html").read_text()
    assert 'id="table-headline"' in html and 'id="fig-roofline"' in html
    assert "Host-bound or device-bound" in text and "| llm | decode |" in text and 'id="table-host-verdicts"' in html


def test_step_weights_extend_counted_steps_to_the_full_run():
    """Counted steps extend to the full run: two steps grow linearly, one step (equal diffusion steps) is
    repeated, and for decode counted on 3 tokens a step 0 that does extra work once (e.g. cross-attention
    K/V) stays out of the line: the weights sum to the exact full-run total."""
    p = pd.DataFrame({"phase": ["d", "d", "x"], "step": [0, 1, -1], "v": [1.0, 2.0, 7.0]})
    w = step_weights(p, {"d": 4})
    assert (p["v"] * w).sum() == pytest.approx(1 + 2 + 3 + 4 + 7)  # v(s) = 1 + s over 4 steps, plus the rest
    assert step_weights(p.iloc[[0]], {"d": 50}).iloc[0] == 50
    n = 1024
    cost = {0: 50.0, 1: 10.0, 2: 10.5}  # step s >= 1: 10 + 0.5 (s - 1)
    proj = pd.DataFrame({"phase": "decode", "step": [0, 1, 2], "time_s": [cost[0], cost[1], cost[2]]})
    w = step_weights(proj, {"decode": n})
    want = cost[0] + sum(10.0 + 0.5 * (s - 1) for s in range(1, n))
    assert (w * proj["time_s"]).sum() == pytest.approx(want)
    # every step counted: weights are 1
    full = pd.DataFrame({"phase": "decode", "step": [0, 1, 2], "time_s": [1.0, 2.0, 3.0]})
    assert (step_weights(full, {"decode": 3}) == 1.0).all()
    # one counted step (equal diffusion steps): n times it
    one = pd.DataFrame({"phase": "denoise", "step": [0], "time_s": [2.0]})
    assert (step_weights(one, {"denoise": 50}) * one["time_s"]).sum() == pytest.approx(100.0)
