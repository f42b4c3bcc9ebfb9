"""The CLI through its real entry point (the installed `genprof` console script)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli


def test_list_names_every_workload_and_its_stand_in():
    r = run_cli("list")
    assert r.returncode == 0, r.stderr
    assert "stable-diffusion" in r.stdout and "llm" in r.stdout
    assert "UNet2DConditionModel" in r.stdout


def test_run_llm_tiny_prints_where_the_run_went_and_its_breakdown(tmp_path):
    r = run_cli("run", "llm", "--size", "tiny", "--tokens", "8", "--repeats", "2", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    run_dir = Path(r.stdout.split("run: ", 1)[1].split()[0])
    assert run_dir.parent == tmp_path and (run_dir / "run.json").is_file() and (run_dir / "ops.parquet").is_file()
    for text in ("prefill", "decode", "Linear", "Attention", "ttft_s", "tpot_s"):
        assert text in r.stdout
    assert "profiler_start" not in r.stderr  # the profiler's own chatter is filtered
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "ok" and meta["summary"]["steps"]["decode"]["steps_per_repeat"] == 8
    # show reads the same run back
    s = run_cli("show", str(run_dir))
    assert s.returncode == 0, s.stderr
    assert "prefill" in s.stdout and "Linear" in s.stdout


def test_trace_file_is_a_gzip_chrome_trace(tmp_path):
    import gzip

    r = run_cli("run", "llm", "--tokens", "2", "--repeats", "1", "--warmup", "0", "--trace-file",
                "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    run_dir = next(tmp_path.iterdir())
    trace = json.loads(gzip.open(run_dir / "trace.json.gz").read())
    names = {e.get("name") for e in trace["traceEvents"]}
    assert "genprof.phase::prefill" in names and "aten::linear" in names


def _one_line_error(r, *needles: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_unknown_workload_is_one_line_naming_valid_choices(tmp_path):
    _one_line_error(run_cli("run", "nope", "--out", str(tmp_path)), "unknown workload 'nope'", "stable-diffusion")
    assert not any(tmp_path.iterdir())  # nothing written for a refused spec


def test_unknown_size_mode_and_option_are_refused_with_exit_2(tmp_path):
    _one_line_error(run_cli("run", "llm", "--size", "huge", "--out", str(tmp_path)), "tiny, small, paper")
    _one_line_error(run_cli("run", "llm", "--mode", "fast", "--out", str(tmp_path)), "timing, trace")
    _one_line_error(run_cli("run", "llm", "--opt", "warp=9", "--out", str(tmp_path)), "unknown optimization")
    _one_line_error(run_cli("run", "llm", "--steps", "3", "--out", str(tmp_path)), "--tokens")


def test_a_run_that_raises_is_stored_as_failed_and_exits_1(tmp_path):
    weights = tmp_path / "broken-weights"  # passes the checks made before running; fails when loaded
    weights.mkdir()
    (weights / "config.json").write_text("{")
    r = run_cli("run", "llm", "--weights", str(weights), "--out", str(tmp_path / "runs"))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "run failed" in r.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "failed" and "config.json" in meta["reason"] and meta["traceback"]


def test_show_on_a_corrupt_run_is_one_line(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "run.json").write_text("{not json")
    _one_line_error(run_cli("show", str(bad)), "corrupt")


def test_suite_runs_the_named_workloads_and_ends_in_a_report(tmp_path):
    r = run_cli("suite", "--size", "tiny", "--only", "llm", "--only", "stable-diffusion", "--repeats", "1",
                "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "report.html").is_file() and "report:" in r.stdout
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert [p.name.split("_")[0] for p in runs] == ["llm", "stable-diffusion"]
    seq = run_cli("show", str(runs[1]), "--seq")
    assert seq.returncode == 0, seq.stderr
    assert "unet.down_blocks.0" in seq.stdout and "cross" in seq.stdout
    rep = run_cli("report", str(tmp_path), "--out", str(tmp_path / "again.html"))
    assert rep.returncode == 0 and (tmp_path / "again.html").stat().st_size > 10_000


def test_compare_prints_speedups_per_family_and_attention_kind(tmp_path):
    for backend in ("math", "flash"):
        r = run_cli("run", "stable-diffusion", "--opt", f"attn={backend}", "--repeats", "1", "--out", str(tmp_path))
        assert r.returncode == 0, r.stderr
    math_run = next(tmp_path.glob("*attn=math*"))
    flash_run = next(tmp_path.glob("*attn=flash*"))
    c = run_cli("compare", str(math_run), str(flash_run))
    assert c.returncode == 0, c.stderr
    for text in ("end to end", "per operator family", "attention, per kind", "Convolution", "speedup"):
        assert text in c.stdout
    _one_line_error(run_cli("compare", str(math_run)), "two or more")


def test_unknown_suite_workload_is_refused(tmp_path):
    _one_line_error(run_cli("suite", "--only", "dalle", "--out", str(tmp_path)), "unknown suite workload")
