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


def _dead(p) -> bool:
    """Gone, or a zombie: dead but not yet reaped (its new parent may never reap it)."""
    import psutil

    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_kill_only_the_sweep_then_resume_at_once(tmp_path):
    """SIGKILL the sweep's own process (not its group) while a worker is inside a run, and resume at once:
    the worker died with the sweep, the lock of the dead sweep is taken over, and every spec ends with
    exactly one complete run directory (an orphaned worker used to commit a second one)."""
    import psutil

    out = tmp_path / "runs"
    axes = ["--tokens", "2", "--tokens", "3"]
    specs = sw.expand(CHEAP_BASE, {"tokens": [2, 3]}).specs
    assert len(specs) == 2
    t0 = time.perf_counter()
    proc = subprocess.Popen([genprof_exe(), "sweep", *CHEAP, *axes, "--out", str(out), "--no-report"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        # one run committed and the next worker inside its run (its .tmp-* folder exists)
        while not (_committed(out) and any(n.startswith(store.TMP_PREFIX) for n in os.listdir(out))):
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "no run finished in time"
            time.sleep(0.02)
        workers = psutil.Process(proc.pid).children()
        assert workers
        os.kill(proc.pid, signal.SIGKILL)  # the sweep alone
        proc.wait()
        for w in workers:  # the kernel kills them with their parent
            psutil.wait_procs([w], timeout=10)
            assert _dead(w), f"worker {w.pid} outlived its sweep"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group, if the test failed
        except ProcessLookupError:
            pass
    before = len(_run_dirs(out))
    assert before == 1
    r = run_cli("sweep", *CHEAP, *axes, "--out", str(out), "--no-report")
    assert r.returncode == 0, r.stderr
    assert "skipped: 1" in r.stdout and "done: 1" in r.stdout
    assert "took over the store's lock from a sweep that is gone" in r.stdout
    _assert_complete_once(out, specs)
    print(f"\nkill + resume of 2 runs: {time.perf_counter() - t0:.1f} s ({before} done before the kill)")


def test_a_second_sweep_on_the_same_store_is_refused(tmp_path):
    from genprof.storelock import StoreLock

    out = tmp_path / "runs"
    with StoreLock(out):  # this process is the sweep running on `out`
        r = run_cli("sweep", *CHEAP, "--tokens", "2", "--out", str(out))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"is in use by another sweep (host {store.HOST}, pid {os.getpid()}" in r.stderr
    assert _run_dirs(out) == []


LOCK_CASES = [
    # (id, holder written in the lock file ({pid}/{started}: a live process of this host), its age in s, taken)
    ("this-host-process-gone", {"host": "{host}", "pid": 999_999_999}, 0, True),
    ("this-host-process-alive", {"host": "{host}", "pid": "{pid}", "started": "{started}"}, 0, False),
    ("this-host-pid-reused", {"host": "{host}", "pid": "{pid}", "started": 1.0}, 0, True),
    ("other-host-recent-heartbeat", {"host": "elsewhere", "pid": 1}, 10, False),
    ("other-host-stale-heartbeat", {"host": "elsewhere", "pid": 1}, 10_000, True),
    ("unreadable-recent", "{not json", 10, False),
    ("unreadable-stale", "{not json", 10_000, True),
]


@pytest.mark.parametrize("holder,age,taken", [c[1:] for c in LOCK_CASES], ids=[c[0] for c in LOCK_CASES])
def test_a_stale_lock_is_taken_over_and_a_live_one_is_not(holder, age, taken, tmp_path):
    """The store lock knows its holder's host: a PID is judged on its own host only (with its start time,
    against reuse); another host's lock by its heartbeat."""
    import psutil

    from genprof.storelock import LOCK_NAME, StoreLock

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        fill = {"{host}": store.HOST, "{pid}": live.pid, "{started}": psutil.Process(live.pid).create_time()}
        if isinstance(holder, dict):
            holder = json.dumps({k: fill.get(v, v) if isinstance(v, str) else v for k, v in holder.items()})
        lock = tmp_path / LOCK_NAME
        lock.write_text(holder)
        os.utime(lock, (time.time() - age, time.time() - age))
        if taken:
            with StoreLock(tmp_path) as held:
                assert held.recovered and json.loads(lock.read_text())["pid"] == os.getpid()
            assert lock.read_text() == ""  # released: emptied, never deleted
        else:
            with pytest.raises(GenprofError, match="is in use by another sweep"):
                StoreLock(tmp_path).acquire()
            assert lock.read_text() == holder  # left as it was
    finally:
        live.kill()
        live.wait()


def test_temporary_folders_are_removed_only_when_their_host_says_their_process_is_gone(tmp_path):
    from genprof.storelock import STALE_TMP_S, clean_stale_tmp

    old = time.time() - STALE_TMP_S - 60
    folders = {  # name -> (age in s, removed)
        f".tmp-a@{store.HOST}@999999999": (None, True),  # this host, process gone
        f".tmp-b@{store.HOST}@{os.getpid()}": (None, False),  # this host, running
        ".tmp-c@elsewhere@1": (None, False),  # another host: cannot tell, recent
        ".tmp-d@elsewhere@1": (old, True),  # another host, untouched for days
        ".tmp-e-999999999": (None, False),  # an older name without a host: like another host's
        ".tmp-f-999999999": (old, True),
    }
    for name, (age, _) in folders.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "ops.parquet").write_text("x")
        if age is not None:
            for p in (tmp_path / name / "ops.parquet", tmp_path / name):
                os.utime(p, (age, age))
    removed = {p.name for p in clean_stale_tmp(tmp_path)}
    assert removed == {n for n, (_, gone) in folders.items() if gone}
    assert {p.name for p in tmp_path.iterdir()} == {n for n, (_, gone) in folders.items() if not gone}


@pytest.mark.parametrize("way", ["prctl", "watch"])
def test_a_worker_dies_with_its_parent(way, tmp_path):
    """Both ways of genprof.sweep_worker.die_with_parent: the kernel's (Linux) and the watching thread."""
    if way == "prctl" and not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    worker = Path(__file__).resolve().parent.parent / "genprof" / "sweep_worker.py"
    child = ("import importlib.util, os, sys, time\n"
             f"if {way!r} == 'watch': sys.platform = 'other'\n"
             f"spec = importlib.util.spec_from_file_location('w', {str(worker)!r})\n"
             "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
             "m.die_with_parent(int(sys.argv[1]))\n"
             "open(sys.argv[2], 'w').write(str(os.getpid()))\n"
             "time.sleep(60)\n")
    parent = ("import os, subprocess, sys, time\n"
              "subprocess.Popen([sys.executable, '-c', sys.argv[1], str(os.getpid()), sys.argv[2]])\n"
              "time.sleep(60)\n")
    pidfile = tmp_path / "pid"
    proc = subprocess.Popen([sys.executable, "-c", parent, child, str(pidfile)], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not pidfile.exists() or not pidfile.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        import psutil

        child_proc = psutil.Process(int(pidfile.read_text()))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        psutil.wait_procs([child_proc], timeout=5)
        assert _dead(child_proc)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


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
