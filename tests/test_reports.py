"""Figures and the HTML report, from the session's real tiny runs."""

from __future__ import annotations

import re
import warnings
from html.parser import HTMLParser

import pandas as pd
import pytest
from matplotlib.figure import Figure

import genprof
from genprof.errors import GenprofError
from genprof.reports import figures
from genprof.reports.html import write_report
from reportdata import EVIL, EVIL_WORKLOAD, FAILED_REASON, FIGURES, TABLES, mixed_root, timing_root

SECTIONS = ("summary", "environment", "figures", "family-breakdown", "phase-statistics", "top-ops",
            "sequence-lengths", "optimizations", "failed-runs")


@pytest.fixture(scope="module")
def root(tmp_path_factory, sd_run, llm_run):
    return mixed_root(tmp_path_factory.mktemp("report-root"), sd_run, llm_run, evil=True)


@pytest.fixture(scope="module")
def tables(root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return genprof.load_runs(root), genprof.load_runs(root, "phases")


@pytest.fixture(scope="module")
def report(root, tmp_path_factory):
    out = write_report([root], tmp_path_factory.mktemp("report") / "report.html", title="test report")
    return out.read_text()


def _speedup_table():
    return pd.DataFrame({"workload": ["stable-diffusion", "llm"], "optimization": ["attn=flash", "prepack"],
                         "speedup": [1.6, 0.9], "clip_score": [0.31, None]})


@pytest.mark.parametrize("name", ["family_breakdown", "step_times", "seq_lengths", "attention_kinds", "speedups"])
def test_each_figure_is_a_figure_and_saves_png_and_svg(name, tables, tmp_path):
    ops, phases = tables
    data = {"step_times": phases, "speedups": _speedup_table()}.get(name, ops)
    fig = getattr(figures, name)(data)
    assert isinstance(fig, Figure)
    paths = figures.save(fig, tmp_path / name)
    assert [p.suffix for p in paths] == [".png", ".svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[0].stat().st_size > 5000
    assert b"<svg" in paths[1].read_bytes()[:2000] and paths[1].stat().st_size > 5000


def test_family_breakdown_splits_llm_into_prefill_and_decode_and_labels_optimizations(tables):
    ops, _ = tables
    shares = figures.family_shares(ops)
    assert list(dict.fromkeys(shares["bar"])) == [
        EVIL_WORKLOAD, "llm prefill", "llm decode", "stable-diffusion [baseline]", "stable-diffusion [attn=test]"]
    per_bar = shares.groupby("bar")["share"].sum()
    assert ((per_bar - 1).abs() < 1e-9).all()
    assert set(shares.loc[shares["bar"] == "llm decode", "family"]) >= {"Attention", "Linear", "Overhead"}


def test_attention_kinds_handles_temporal_and_spatial_kinds(tables, tmp_path):
    ops, _ = tables
    ops = ops.copy()
    att = ops["family"] == "Attention"
    ops.loc[att & ops["module"].str.contains("down_blocks"), "attention_kind"] = "spatial-self"
    ops.loc[att & ops["module"].str.contains("up_blocks"), "attention_kind"] = "temporal-self"
    shares = figures.attention_shares(ops)
    assert {"spatial-self", "temporal-self", "cross"} <= set(shares["kind"])
    assert (shares.groupby("run_id")["share"].sum().sub(1).abs() < 1e-9).all()
    assert isinstance(figures.attention_kinds(ops), Figure)
    assert isinstance(figures.seq_lengths(ops), Figure)


def test_figures_without_op_tables_raise_nodata():
    for fn in (figures.family_breakdown, figures.seq_lengths, figures.attention_kinds, figures.step_times):
        with pytest.raises(figures.NoData):
            fn(pd.DataFrame())


def test_labels_survive_dollar_signs_and_markup(tables):
    ops, _ = tables
    odd = ops.assign(workload="a $x$ b $ <i>", run_id=ops["run_id"] + "x")
    fig = figures.family_breakdown(odd)
    fig.canvas.draw()  # mathtext would raise on an unbalanced $


def test_report_contains_every_section_figure_and_table(report):
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in report, sid
    for fid in FIGURES:
        assert re.search(rf'<figure id="{fid}">.*?<img class="figure" src="data:image/png;base64,', report, re.S), fid
    for tid in TABLES:
        assert f'<table class="sortable" id="{tid}">' in report, tid


def test_report_is_self_contained(report):
    assert not re.search(r"https?://", report)
    for m in re.finditer(r'\b(?:src|href)="([^"]*)"', report):
        assert m.group(1).startswith(("data:", "#")), m.group(0)
    assert "<link" not in report and "@import" not in report and "url(" not in report
    assert report.count("<script") == 1


def test_report_content(report, sd_run, llm_run):
    for rid in (sd_run.meta["run_id"], llm_run.meta["run_id"]):
        assert rid in report
    assert "genprof run stable-diffusion --repeats 2" in report  # the command of each run
    assert sd_run.meta["environment"]["torch"] in report
    # failed run: reason shown, as text
    assert "RuntimeError: out of memory &lt;b&gt;not bold&lt;/b&gt;" in report and FAILED_REASON not in report
    # corrupt run: a visible note naming the file
    assert re.search(r'<p class="note">skipped: corrupt [^<]*broken/run.json', report)
    # optimizations: speedup 2x against the baseline, quality metrics from run.json
    opt = re.search(r'<table class="sortable" id="table-optimizations">(.*?)</table>', report, re.S).group(1)
    assert "attn=test" in opt and ">2×<" in opt and "quality: clip_score" in opt and "0.3125" in opt
    assert "quality: fid.value" in opt and "12.5" in opt
    # phase statistics carry the spread of the repeats
    phases = re.search(r'id="table-phases">(.*?)</table>', report, re.S).group(1)
    for col in ("median s", "p10 s", "p90 s", "stdev s", ">n<"):
        assert col in phases
    assert "decode (per step)" in phases and "denoise (per step)" in phases


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts, self.text = 0, []

    def handle_starttag(self, tag, attrs):
        self.scripts += tag == "script"

    def handle_data(self, data):
        self.text.append(data)


def test_strings_from_runs_are_escaped(report):
    assert EVIL not in report and "&lt;script&gt;alert(1)&lt;/script&gt;" in report
    p = _Text()
    p.feed(report)
    assert p.scripts == 1  # only the table sorter
    assert EVIL_WORKLOAD in "".join(p.text)


def test_report_over_timing_mode_runs_only(tmp_path, sd_run):
    root = timing_root(tmp_path / "timing", sd_run)
    html = write_report([root], tmp_path / "timing.html").read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in html
    assert 'id="fig-step-times"' in html and 'id="fig-family-breakdown"' not in html
    assert "Time by operator family: not drawn" in html
    assert 'id="table-phases"' in html and "needs trace-mode runs" in html


def test_report_over_a_missing_root_is_a_one_line_error(tmp_path):
    with pytest.raises(GenprofError, match="does not exist"):
        write_report([tmp_path / "missing"], tmp_path / "r.html")
