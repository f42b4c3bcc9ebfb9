"""Sweeps: expansion, identity, isolated runs, kill and resume, failed runs, the Ray executor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import genprof_exe, run_cli
from genprof import store
from genprof import sweep as sw
from genprof.errors import GenprofError
from genprof.spec import RunSpec

CHEAP = ["--workload", "llm", "--size", "tiny", "--repeats", "1", "--warmup", "0"]
CHEAP_BASE = {"workload": "llm", "size": "tiny", "tokens": 2, "repeats": 1, "warmup": 0}


def _run_dirs(out: Path) -> list[Path]:
    return store.run_dirs(out) if out.exists() else []


def _committed(out: Path) -> int:
    """Run directories committed so far (safe to call while a sweep renames folders here)."""
    try:
        return sum(1 for n in os.listdir(out) if not n.startswith(".") and os.path.isfile(out / n / "run.json"))
    except OSError:
        return 0


def _assert_complete_once(out: Path, specs: list[RunSpec]) -> None:
    """Every spec has exactly one run directory, complete; nothing half-written is left."""
    by_key: dict[str, list[Path]] = {}
    for d in _run_dirs(out):
        meta = store.read_run(d)
        by_key.setdefault(sw.key_of_run(meta), []).append(d)
        assert meta["status"] == "ok", meta.get("reason")
        for name in (store.RUN_JSON, store.PHASES, store.OPS):
            assert (d / name).is_file(), d / name
        assert store.read_table(d, store.OPS) is not None and store.read_table(d, store.PHASES) is not None
    assert sorted(by_key) == sorted(sw.spec_key(s) for s in specs)
    assert all(len(v) == 1 for v in by_key.values()), by_key
    assert not [p for p in out.iterdir() if p.name.startswith(store.TMP_PREFIX)]


# ---------------------------------------------------------------------------------------------- expansion


def test_expand_is_the_product_of_the_axes_with_duplicates_run_once():
    s = sw.expand({"size": "tiny", "repeats": 1}, {"workload": ["llm"], "batch": [1, 2, 2],
                                                    "optimizations": ["baseline", "attn=math", ["attn=sdpa"]],
                                                    "tokens": [2, 3]})
    assert len(s.specs) == 2 * 3 * 2 and s.duplicates == 1 * 3 * 2
    assert {sp.opt_label for sp in s.specs} == {"baseline", "attn=math", "attn=sdpa"}
    assert {(sp.batch, sp.tokens) for sp in s.specs} == {(1, 2), (1, 3), (2, 2), (2, 3)}
    assert all(sp.repeats == 1 and sp.size == "tiny" for sp in s.specs)


def test_invalid_combination_names_itself_or_is_left_out():
    axes = {"workload": ["llm", "stable-diffusion"], "tokens": [2]}
    with pytest.raises(GenprofError, match=r"workload=stable-diffusion tokens=2: .*tokens"):
        sw.expand({"size": "tiny"}, axes)
    s = sw.expand({"size": "tiny"}, axes, skip_invalid=True)
    assert [sp.workload for sp in s.specs] == ["llm"] and len(s.dropped) == 1
    # per-workload settings: tokens only where they apply
    s = sw.expand({"size": "tiny"}, {"workload": ["llm", "stable-diffusion"]},
                  {"llm": {"tokens": 2}, "stable-diffusion": {"steps": 2}})
    assert {(sp.workload, sp.tokens, sp.steps) for sp in s.specs} == {("llm", 2, None), ("stable-diffusion", None, 2)}


def test_sweep_files_toml_and_yaml_give_the_same_specs(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('skip_invalid = false\n[base]\nsize = "tiny"\nrepeats = 1\n'
                    '[axes]\nworkload = ["llm"]\nbatch = [1, 2]\nopt = ["baseline", "attn=math"]\n'
                    'params = [{}, {prompt_len = 16}]\n[workload.llm]\ntokens = 2\n')
    a = sw.load_file(toml)
    specs_t = sw.expand(a["base"], a["axes"], a["workload"]).specs
    assert len(specs_t) == 8 and {sp.tokens for sp in specs_t} == {2}
    assert {sp.params for sp in specs_t} == {(), (("prompt_len", 16),)}
    pytest.importorskip("yaml")
    yml = tmp_path / "s.yaml"
    yml.write_text("base: {size: tiny, repeats: 1}\naxes:\n  workload: [llm]\n  batch: [1, 2]\n"
                   "  opt: [baseline, attn=math]\n  params: [{}, {prompt_len: 16}]\nworkload:\n  llm: {tokens: 2}\n")
    b = sw.load_file(yml)
    specs_y = sw.expand(b["base"], b["axes"], b["workload"]).specs
    assert [sw.spec_key(s) for s in specs_y] == [sw.spec_key(s) for s in specs_t]


def test_spec_key_is_stable_through_run_json():
    spec = sw.make_spec({**CHEAP_BASE, "optimizations": "attn:backend=math", "params": {"prompt_len": 16}})
    meta = json.loads(json.dumps({"spec": spec.to_dict()}))
    assert sw.key_of_run(meta) == sw.spec_key(spec)
    assert sw.spec_key(spec) != sw.spec_key(sw.make_spec({**CHEAP_BASE, "batch": 2}))
    assert sw.resources(spec) == {"num_cpus": 1.0, "num_gpus": 0}
    assert sw.resources(sw.make_spec({**CHEAP_BASE, "device": "cuda", "threads": 4})) == {"num_cpus": 4.0, "num_gpus": 1}


# ---------------------------------------------------------------------------------------------- local


def test_cli_sweep_runs_each_in_its_own_process_then_skips_them(tmp_path):
    t0 = time.perf_counter()
    r = run_cli("sweep", *CHEAP, "--tokens", "2", "--batch", "1", "--batch", "2", "--out", str(tmp_path))
    elapsed = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    assert "done: 2  failed: 0  skipped: 0" in r.stdout and "report:" in r.stdout
    assert (tmp_path / "report.html").is_file()
    specs = sw.expand(CHEAP_BASE, {"batch": [1, 2]}).specs
    _assert_complete_once(tmp_path, specs)
    again = run_cli("sweep", *CHEAP, "--tokens", "2", "--batch", "1", "--batch", "2", "--out", str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert "done: 0  failed: 0  skipped: 2" in again.stdout
    _assert_complete_once(tmp_path, specs)
    print(f"\nlocal sweep of 2 runs: {elapsed:.1f} s")


def test_kill_the_sweep_at_any_moment_then_resume(tmp_path):
    """SIGKILL the whole sweep (parent and its worker) mid-way; resuming completes every run exactly once."""
    out = tmp_path / "runs"
    args = [genprof_exe(), "sweep", *CHEAP, "--batch", "1", "--batch", "2", "--batch", "3",
            "--tokens", "2", "--tokens", "3", "--out", str(out), "--no-report"]
    specs = sw.expand(CHEAP_BASE, {"batch": [1, 2, 3], "tokens": [2, 3]}).specs
    assert len(specs) == 6
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not _committed(out):
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "no run finished in time"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = len(_run_dirs(out))
    assert 1 <= before < 6
    for d in _run_dirs(out):  # what was committed before the kill is whole
        assert (d / store.OPS).is_file() and (d / store.PHASES).is_file()
    r = run_cli("sweep", *CHEAP, "--batch", "1", "--batch", "2", "--batch", "3", "--tokens", "2", "--tokens", "3",
                "--out", str(out), "--no-report")
    assert r.returncode == 0, r.stderr
    assert f"skipped: {before}" in r.stdout and f"done: {6 - before}" in r.stdout
    _assert_complete_once(out, specs)
    print(f"\nkill + resume of 6 runs: {time.perf_counter() - t0:.1f} s ({before} done before the kill)")


def test_failed_run_is_kept_skipped_on_resume_and_retried_on_request(tmp_path):
    broken = tmp_path / "broken-weights"  # passes the checks made before running; fails when loaded
    broken.mkdir()
    (broken / "config.json").write_text("{")
    f = tmp_path / "s.toml"
    f.write_text(f'[base]\nworkload = "llm"\nsize = "tiny"\ntokens = 2\nrepeats = 1\nwarmup = 0\n'
                 f'weights = "{broken}"\n')
    out = tmp_path / "runs"
    r = run_cli("sweep", "--file", str(f), "--out", str(out), "--no-report")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "done: 0  failed: 1  skipped: 0" in r.stdout and "config.json" in r.stdout, r.stdout
    (first,) = _run_dirs(out)
    r = run_cli("sweep", "--file", str(f), "--out", str(out), "--no-report")
    assert r.returncode == 1 and "skipped: 1 (1 failed before" in r.stdout
    assert _run_dirs(out) == [first]
    r = run_cli("sweep", "--file", str(f), "--out", str(out), "--no-report", "--retry-failed")
    assert r.returncode == 1 and "done: 0  failed: 1  skipped: 0" in r.stdout
    (second,) = _run_dirs(out)  # the new attempt replaced the old failed record
    assert second != first and store.read_run(second)["status"] == "failed"


def test_a_worker_that_dies_or_hangs_is_a_failed_run_and_the_sweep_goes_on(tmp_path, monkeypatch):
    specs = sw.expand(CHEAP_BASE, {"batch": [1, 2, 3]}).specs
    scripts = iter([
        "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",  # the OOM killer's way
        "import sys; sys.stderr.write('boom\\n'); sys.exit(3)",
        "import time; time.sleep(60)",
    ])
    monkeypatch.setattr(sw, "worker_command", lambda spec, out: [sys.executable, "-c", next(scripts)])
    res = sw.run_sweep(specs, tmp_path, timeout=3, report=False)
    assert [e.status for e in res.entries] == ["failed"] * 3
    reasons = [e.reason for e in res.entries]
    assert "SIGKILL" in reasons[0] and "code 3: boom" in reasons[1] and "timed out" in reasons[2]
    runs = store.load_runs(tmp_path, "runs")
    assert len(runs) == 3 and set(runs["status"]) == {"failed"}
    assert sorted(sw.index(tmp_path)) == sorted(sw.spec_key(s) for s in specs)


# ---------------------------------------------------------------------------------------------- ray


def test_ray_executor_gives_the_same_tables_as_the_local_one(tmp_path):
    ray = pytest.importorskip("ray")
    specs = sw.expand({**CHEAP_BASE}, {"batch": [1, 2]}).specs
    local = sw.run_sweep(specs, tmp_path / "local", report=False)
    assert [e.status for e in local.entries] == ["done", "done"]
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        t0 = time.perf_counter()
        remote = sw.run_sweep(specs, tmp_path / "ray", executor="ray", report=False)
        print(f"\nray sweep of 2 runs: {time.perf_counter() - t0:.1f} s")
    finally:
        ray.shutdown()
    assert [e.status for e in remote.entries] == ["done", "done"], [e.reason for e in remote.entries]
    _assert_complete_once(tmp_path / "ray", specs)
    for table in ("ops", "phases"):
        a = store.load_runs(tmp_path / "local", table)
        b = store.load_runs(tmp_path / "ray", table)
        assert list(a.columns) == list(b.columns)
        assert (a.groupby(["workload", "size"]).size().tolist() == b.groupby(["workload", "size"]).size().tolist())

    def rows(root: Path) -> dict[str, int]:
        return {sw.key_of_run(store.read_run(d)): len(store.read_table(d, store.OPS)) for d in _run_dirs(root)}

    assert rows(tmp_path / "local") == rows(tmp_path / "ray")
    # resuming skips what is there (without starting Ray: nothing is left to run)
    again = sw.run_sweep(specs, tmp_path / "ray", executor="ray", report=False)
    assert [e.status for e in again.entries] == ["skipped", "skipped"]
