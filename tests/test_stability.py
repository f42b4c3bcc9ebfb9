"""Timings a user can trust: the statistics on synthetic samples, a stalled repeat flagged unstable and a clean
run not, speedups within the noise called "not significant", adaptive repeats, the thread default, meta-device
runs shown as counts, and `genprof paper` / `genprof suite` writing and reporting where a user expects."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import genprof
from genprof import cli
from genprof.profiler import stats as S
from genprof.profiler.session import RepeatPolicy
from genprof.workloads import registry
from genprof.workloads.base import Built, Workload

# ------------------------------------------------------------------------------------------ statistics


def _binomial_coverage(n: int, j: int) -> float:
    """P(X_(j+1) <= median <= X_(n-j)) for n continuous samples: the reference the CI must match."""
    return 1 - 2 * sum(math.comb(n, i) for i in range(j + 1)) / 2 ** n


def test_median_ci_takes_the_narrowest_order_statistics_with_95_percent_coverage():
    rng = np.random.default_rng(0)
    for n in range(2, 40):
        xs = np.sort(rng.normal(1.0, 0.1, n))
        lo, hi, level = S.median_ci(xs)
        j = int(np.searchsorted(xs, lo))
        assert hi == xs[n - 1 - j] and level == pytest.approx(_binomial_coverage(n, j))
        if n >= 6:
            assert level >= 0.95 and (j + 1 > (n - 1) // 2 or _binomial_coverage(n, j + 1) < 0.95)
        else:  # too few samples for 95%: [min, max] and the coverage it has
            assert (lo, hi) == (xs[0], xs[-1]) and level < 0.95
    # and it covers the true median about as often as it says (Monte Carlo, n = 9: 96.1%)
    hits = sum(lo <= 0 <= hi for lo, hi, _ in (S.median_ci(rng.normal(0, 1, 9)) for _ in range(4000)))
    assert abs(hits / 4000 - _binomial_coverage(9, 1)) < 0.015


def test_summarize_counts_spread_and_outliers():
    s = S.summarize([1.0, 1.01, 0.99, 1.02, 0.98, 5.0])
    assert s["median_s"] == pytest.approx(1.005) and s["outliers"] == 1 and s["n"] == 6
    assert s["mad_s"] == pytest.approx(0.015) and s["iqr_s"] > 0 and s["ci_level"] >= 0.95
    assert S.summarize([1.0, 1.001, 1.002, 0.999, 1.0005])["outliers"] == 0  # a tiny MAD is no excuse to flag
    assert S.summarize([1.8, 80.1])["outliers"] == 1  # the two repeats of a stalled suite run
    assert S.summarize([])["n"] == 0


@pytest.mark.parametrize("samples, cpu, verdict, reason", [
    ([1.0, 1.01, 0.99, 1.0, 1.02], None, "stable", None),
    ([1.0, 1.3, 0.7, 1.25, 0.8], None, "unstable", "spread"),
    ([1.0, 1.01, 0.99, 1.0, 4.0], None, "unstable", "outliers"),
    ([1.8, 80.1], None, "unstable", "spread"),
    ([1.0, 1.0, 1.01, 1.0], [1.0, 1.0, 0.4, 1.0], "unstable", "starved"),
    ([1.0, 1.0, 1.01, 1.0], [0.01, 0.01, 0.004, 0.01], "stable", None),  # idle process: no starvation signal
])
def test_stability_verdicts_on_synthetic_runs(samples, cpu, verdict, reason):
    signals = {"wall_s": samples, "cpu_s": cpu or samples, "threads": 1, "cpus": 2, "load_start": 0.5,
               "load_end": 0.7}
    st = S.stability(S.summarize(samples), signals)
    assert st["verdict"] == verdict, st
    assert (reason is None and not st["reasons"]) or any(r.startswith(reason) for r in st["reasons"])
    assert not st["warnings"]
    busy = S.stability(S.summarize(samples), {**signals, "load_start": 3.5, "threads": 4})
    assert any("load average 3.5" in w for w in busy["warnings"]) and any("4 torch threads" in w
                                                                          for w in busy["warnings"])


def test_significance_is_non_overlapping_intervals():
    a, b = S.summarize([1.0, 1.02, 0.98, 1.01, 0.99, 1.0]), S.summarize([1.1, 1.12, 1.08, 1.11, 1.09, 1.1])
    c = S.summarize([1.0, 1.15, 0.9, 1.1, 0.95, 1.05])
    assert S.significant(a, b) is True and S.significant(a, c) is False
    assert S.significant(a, {"ci_low_s": math.nan}) is None
    # intervals apart, medians 0.2% apart: drift between runs, not a speedup (MIN_EFFECT)
    tight, near = (S.summarize([m + d for d in (-1e-5, 0, 1e-5, 0, -1e-5, 1e-5)]) for m in (0.0500, 0.0501))
    assert tight["ci_high_s"] < near["ci_low_s"] and S.significant(tight, near) is False


def test_adaptive_repeats_stop_at_the_target_or_the_budget():
    steady = RepeatPolicy(3, ci_target=0.05, budget_s=100)
    walls = [1.0, 1.01, 0.99]
    while steady.more(walls):
        walls.append(1.0 + 0.01 * ((-1) ** len(walls)))
    assert len(walls) == 6 and steady.why_stopped(walls) == "ci target"  # six: the least for a 95% interval
    noisy, walls = RepeatPolicy(3, ci_target=0.01, budget_s=10), []
    rng = np.random.default_rng(1)
    while noisy.more(walls):
        walls.append(float(rng.uniform(0.5, 1.5)))
    assert sum(walls) >= 10 > sum(walls[:-1]) and noisy.why_stopped(walls) == "budget"
    assert not RepeatPolicy(3).more([1.0, 1.0, 1.0]) and RepeatPolicy(3).why_stopped([1, 1, 1]) == "repeats"


# ------------------------------------------------------------------------------------------ through a run


class Sleeper(Workload):
    """A workload whose inference sleeps: its time is known, and a stall can be put into one call."""

    name = "sleeper"
    kind = "test"
    phases = ("sleep",)
    presets = {"tiny": dict(sleep_s=0.04, stall_call=-1, stall_s=0.0)}

    def build(self, spec):
        p = self.config(spec)
        calls = {"n": 0}

        def infer(phases):
            with phases.phase("sleep"):
                time.sleep(p["sleep_s"] + (p["stall_s"] if calls["n"] == p["stall_call"] else 0.0))
            calls["n"] += 1
            return torch.zeros(1)

        return Built(parts={}, infer=infer)


@pytest.fixture
def sleeper():
    registry._load_all()
    registry.register(Sleeper)
    yield
    registry._REGISTRY.pop("sleeper", None)
    genprof.api.release()


def _sleep_run(tmp_path, repeats=5, **params):
    res = genprof.run("sleeper", mode="timing", repeats=repeats, warmup=1, out=tmp_path, params=params)
    assert res.ok, res.meta.get("traceback")
    return res


def test_a_stalled_repeat_is_flagged_unstable_and_a_clean_run_is_not(sleeper, tmp_path):
    # A clean run on a machine busy with other work can be (rightly) unstable: a sleeping process wakes late.
    # So up to three tries; on a quiet machine the first is stable.
    for _ in range(3):
        st = _sleep_run(tmp_path).meta["summary"]["stability"]
        if st["verdict"] == "stable":
            break
    assert st["verdict"] == "stable", st
    assert len(st["signals"]["wall_s"]) == 5 and st["signals"]["threads"] == 1
    stalled = _sleep_run(tmp_path, stall_call=3, stall_s=0.4)  # the third measured repeat (after 1 warm-up)
    st = stalled.meta["summary"]["stability"]
    assert st["verdict"] == "unstable" and any(r.startswith("outliers: ") for r in st["reasons"]), st
    assert max(st["signals"]["wall_s"]) > 0.4 == pytest.approx(max(st["signals"]["wall_s"]) - 0.04, abs=0.1)
    # the command line says so: a warning line, and a mark in `show`
    r = CliRunner().invoke(cli.app, ["show", str(stalled.path)])
    assert "timing: UNSTABLE: " in r.stdout and "outliers: " in r.stdout
    r = CliRunner().invoke(cli.app, ["run", "sleeper", "--mode", "timing", "--repeats", "5", "--set",
                                     "stall_call=2", "--set", "stall_s=0.4", "--out", str(tmp_path)])
    assert r.exit_code == 0 and "unstable timing: " in r.stderr and "outliers: " in r.stderr


def test_compare_calls_a_speedup_within_the_noise_not_significant(sleeper, tmp_path):
    base = _sleep_run(tmp_path, repeats=6, sleep_s=0.05)
    same = _sleep_run(tmp_path, repeats=6, sleep_s=0.05)
    slower = _sleep_run(tmp_path, repeats=6, sleep_s=0.09)
    r = CliRunner().invoke(cli.app, ["compare", str(base.path), str(same.path), str(slower.path)])
    assert r.exit_code == 0, r.output
    rows = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if line.startswith("│ sleeper")}
    assert "not significant" in rows[same.meta["run_id"]]
    assert "│ yes" in rows[slower.meta["run_id"]] and "baseline" in rows[base.meta["run_id"]]


def test_adaptive_repeats_through_a_run(sleeper, tmp_path):
    res = genprof.run("sleeper", mode="timing", repeats=3, warmup=0, out=tmp_path, ci_target=0.2, budget_s=5.0)
    sig = res.meta["summary"]["stability"]["signals"]
    assert res.meta["summary"]["total"]["n"] == sig["repeats"] >= 6 and sig["stopped_by"] == "ci target"
    assert res.meta["spec"]["ci_target"] == 0.2


def test_the_thread_default_is_recorded_and_the_caller_s_threads_come_back(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        one = genprof.run("llm", mode="timing", repeats=1, warmup=0, out=tmp_path)
        two = genprof.run("llm", mode="timing", repeats=1, warmup=0, out=tmp_path, threads=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert one.meta["environment"]["torch_threads"] == 1 == one.meta["summary"]["stability"]["signals"]["threads"]
    assert two.meta["environment"]["torch_threads"] == 2


# ------------------------------------------------------------------------------------------ counts, not times


def test_a_meta_device_run_shows_counts_and_no_time(tmp_path):
    res = genprof.run("llm", size="tiny", device="meta", tokens=2, out=tmp_path)
    s = res.meta["summary"]
    assert s["measured"] is False and s["phases"] == {} and "family_share" not in s and "stability" not in s
    assert s["flops_per_repeat"] > 0
    r = CliRunner().invoke(cli.app, ["show", str(res.path)])
    assert "counted, not timed" in r.stdout and "GFLOP" in r.stdout and "median s" not in r.stdout
    other = genprof.run("llm", size="tiny", device="meta", tokens=2, out=tmp_path)
    r = CliRunner().invoke(cli.app, ["compare", str(res.path), str(other.path)], standalone_mode=False)
    assert isinstance(r.exception, genprof.errors.GenprofError) and "meta device" in str(r.exception)
    measured = genprof.run("llm", size="tiny", repeats=1, warmup=0, out=tmp_path)
    from genprof.reports.html import render_report

    html = render_report(tmp_path)
    counted = html.split('id="counted-runs"')[1].split("</section>")[0]
    assert "llm" in counted and "<td" in counted
    family = html.split('id="family-breakdown"')[1].split("</section>")[0]
    # the measured run alone: its prefill and decode bars, one row per family each
    assert family.count("<tr>") - 1 == 2 * len(measured.meta["summary"]["family_share"])


# ------------------------------------------------------------------------------------------ commands


def test_paper_writes_under_out_and_reuses_the_suite_runs_it_finds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["paper", "--size", "tiny", "--measure-size", "tiny", "--only", "llm", "--out", "out"]
    r = CliRunner().invoke(cli.app, args)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "paper.md").is_file() and (tmp_path / "out" / "paper.html").is_file()
    assert not (tmp_path / "docs").exists()
    assert "paper: measuring llm (tiny, cpu)" in r.stdout  # progress lines: stdout is not a terminal here
    measured = [p for p in (tmp_path / "out").iterdir() if p.name.startswith("llm_tiny_baseline")]
    assert len(measured) == 1
    r = CliRunner().invoke(cli.app, args)
    assert r.exit_code == 0 and f"reusing the measured llm (tiny) in {Path('out') / measured[0].name}" in r.stdout
    assert len([p for p in (tmp_path / "out").iterdir() if p.name.startswith("llm_tiny_baseline")]) == 1


def test_suite_prints_a_line_per_workload_and_repeat_when_stdout_is_not_a_terminal(tmp_path):
    r = CliRunner().invoke(cli.app, ["suite", "--size", "tiny", "--only", "llm", "--repeats", "2", "--out",
                                     str(tmp_path)])
    assert r.exit_code == 0, r.output
    lines = [line for line in r.stdout.splitlines() if line.startswith("[")]
    assert any(line.endswith("suite tiny: llm (1/1)") for line in lines)
    assert any(line.endswith("llm: repeat 1/2") for line in lines) and any(line.endswith("repeat 2/2")
                                                                          for line in lines)
