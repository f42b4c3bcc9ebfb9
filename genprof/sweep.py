"""Sweeps: many RunSpecs, run in isolated processes (or on Ray), resumable.

A sweep is a list of RunSpecs: the product of axes (workloads x sizes x
optimizations x batch sizes x any other RunSpec field), built from CLI options
or a sweep file (TOML; YAML too when pyyaml is importable; genprof.sweepspec
builds and checks them, docs/sweeps.md has the file format).

Identity and resume. Every RunSpec has a stable key (`spec_key`): a hash of its
canonical JSON. The key is not stored separately: it is recomputed from the
`spec` that every run.json already holds, so the run store itself is the only
state of a sweep. Before running, the store under `out` is indexed by key; a
key with a complete successful run is skipped, a key whose run failed is
skipped too unless `retry_failed` (then the new attempt replaces the old failed
directory once it is committed). Run directories are committed atomically by
`genprof.store` (assembled in `.tmp-*`, renamed), so killing a sweep at any
moment loses no completed run and leaves no half-written run directory.

One sweep per store. A sweep holds the store's lock (genprof.storelock: host,
PID, heartbeat; recovered when its holder is gone) from indexing to the end, so
a second sweep on the same `out` is refused instead of running every spec
again; temporary folders of dead runs are removed only when their host and
process say they are dead.

Executors.
- local: one run at a time, each in its own process
  (`python -m genprof.sweep_worker SPEC_JSON OUT --parent PID`), which dies
  with the sweep (genprof.sweep_worker): a sweep killed by any signal leaves
  no run going on that a resumed sweep would run a second time. A child that
  crashes, is killed (out of memory: SIGKILL) or passes `timeout` is recorded
  as a failed run with the reason; the sweep goes on.
- ray: one Ray task per run with the resources it needs (num_cpus; num_gpus=1
  for cuda). The task runs in a scratch directory on its node and returns the
  run directory's files; the driver commits them into `out` atomically, so no
  shared file system is needed. A crashed or OOM-killed task is recorded as
  failed like a local one.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from genprof import schema, store
from genprof.errors import GenprofError
from genprof.spec import RunSpec
from genprof.storelock import StoreLock, clean_stale_tmp
from genprof.sweepspec import (ALIASES, FIELDS, Sweep, check, expand, key_of_run, load_file, make_spec,
                               parse_opts, spec_key)

RESULT_MARK = "GENPROF_SWEEP_RESULT "


def check_complete(run_dir: Path, meta: Mapping[str, Any]) -> str | None:
    """None when a successful run directory is whole, else what is wrong (naming the file)."""
    for name in store.expected_files(meta):
        p = run_dir / name
        if not p.is_file():
            return f"{p} is missing"
        try:
            if name.endswith(".parquet"):
                import pyarrow.parquet as pq

                schema.check_table(name, pq.read_schema(p))  # whole footer, and the columns readers need
            elif name.endswith(".gz"):
                with gzip.open(p, "rb") as f:
                    while f.read(1 << 20):
                        pass
        except Exception as e:
            return f"corrupt {p}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


@dataclass
class Stored:
    ok: list[Path] = field(default_factory=list)
    failed: list[Path] = field(default_factory=list)


def index(out: str | os.PathLike, notes: list[str] | None = None) -> dict[str, Stored]:
    """Every run below `out` by spec key: complete successful runs and failed ones.

    A corrupt run.json or an incomplete table is reported in `notes` (by file
    name) and does not count as done, so its spec is run again.
    """
    out = Path(out)
    found: dict[str, Stored] = {}
    if not out.exists():
        return found
    for d in store.run_dirs(out):
        try:
            meta = store.read_run(d)
        except GenprofError as e:
            if notes is not None:
                notes.append(f"ignored: {e}")
            continue
        key = key_of_run(meta)
        if key is None:
            if notes is not None:
                notes.append(f"ignored: {d / store.RUN_JSON}: its spec cannot be read back")
            continue
        slot = found.setdefault(key, Stored())
        if meta.get("status") == "ok":
            problem = check_complete(d, meta)
            if problem:
                if notes is not None:
                    notes.append(f"incomplete run {d.name} ({problem}): it will be run again")
                continue
            slot.ok.append(d)
        else:
            slot.failed.append(d)
    return found


# ---------------------------------------------------------------------------------------------- results


@dataclass
class Entry:
    """One run of a sweep and what became of it.

    status: done (ran now, ok) | failed (ran now, failed) | skipped (already
    complete) | skipped-failed (failed before; rerun with retry_failed).
    """

    index: int
    spec: RunSpec
    key: str
    status: str = "pending"
    path: Path | None = None
    reason: str = ""
    seconds: float = 0.0

    @property
    def label(self) -> str:
        s = self.spec
        extra = [f"batch={s.batch}"]
        for name, default in (("steps", None), ("tokens", None), ("dtype", "float32"), ("device", "cpu"),
                              ("mode", "trace"), ("seed", 0), ("threads", None)):
            if getattr(s, name) != default:
                extra.append(f"{name}={getattr(s, name)}")
        extra += [f"{k}={v}" for k, v in s.params]
        return f"{s.workload} {s.size} {s.opt_label} {' '.join(extra)}"


@dataclass
class SweepResult:
    entries: list[Entry]
    out: Path
    notes: list[str] = field(default_factory=list)
    report: Path | None = None

    def count(self, *statuses: str) -> int:
        return sum(e.status in statuses for e in self.entries)

    @property
    def done(self) -> int:
        return self.count("done")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def skipped(self) -> int:
        return self.count("skipped", "skipped-failed")

    @property
    def any_failed(self) -> bool:
        """A run of the sweep is failed at the end (now, or before and not retried)."""
        return self.count("failed", "skipped-failed") > 0

    def paths(self) -> list[Path]:
        return [e.path for e in self.entries if e.path is not None]


Event = Callable[[str, Entry], None]  # ("start" | "end", entry)


def plan(specs: list[RunSpec], out: str | os.PathLike, retry_failed: bool = False,
         notes: list[str] | None = None) -> tuple[list[Entry], dict[str, Stored]]:
    """Entries for every spec: already complete or failed ones marked skipped; the rest pending."""
    stored = index(out, notes)
    entries = []
    for i, spec in enumerate(specs):
        e = Entry(i, spec, spec_key(spec))
        have = stored.get(e.key)
        if have and have.ok:
            e.status, e.path = "skipped", have.ok[0]
        elif have and have.failed and not retry_failed:
            e.status, e.path = "skipped-failed", have.failed[0]
            e.reason = _reason(have.failed[0])
        entries.append(e)
    return entries, stored


def _reason(run_dir: Path) -> str:
    try:
        return str(store.read_run(run_dir).get("reason", ""))
    except (GenprofError, OSError):
        return ""


def record_failure(out: str | os.PathLike, spec: RunSpec, reason: str, detail: str = "") -> Path:
    """A failed run directory for a run that died before it could record itself (crash, kill, timeout)."""
    run_id = store.new_run_id(spec.workload, spec.size, spec.opt_label)
    w = store.RunWriter(out, run_id)
    meta = {"run_id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "spec": spec.to_dict(), "status": "failed", "reason": reason[:500], "traceback": detail[-20000:],
            "sweep": {"key": spec_key(spec), "recorded_by": "sweep"}}
    return w.commit(meta)


def _supersede(old: Iterable[Path], keep: Path | None) -> None:
    """Remove earlier failed directories of a retried run: renamed to `.tmp-*` first (atomic), then deleted."""
    for d in old:
        if keep is not None and d.resolve() == keep.resolve():
            continue
        gone = d.parent / store.tmp_name(f"superseded-{d.name}")
        try:
            os.rename(d, gone)
        except OSError:
            continue
        shutil.rmtree(gone, ignore_errors=True)


def run_sweep(specs: list[RunSpec], out: str | os.PathLike = "runs", executor: str = "local",
              retry_failed: bool = False, timeout: float | None = None, on_event: Event | None = None,
              report: str | os.PathLike | None | bool = None, ray_address: str | None = None,
              cpus_per_run: float | None = None, notes: list[str] | None = None) -> SweepResult:
    """Run every spec not already complete under `out`; write the HTML report at the end.

    report: a path, None for OUT/report.html, False for none.
    """
    if executor not in ("local", "ray"):
        raise GenprofError(f"unknown executor {executor!r}; valid: local, ray")
    check_timeout(timeout)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GenprofError(f"--out {out} is a file; give a folder for the run store")
    out.mkdir(parents=True, exist_ok=True)
    notes = notes if notes is not None else []
    with StoreLock(out) as lock:
        if lock.recovered:
            notes.append(f"took over the store's lock from a sweep that is gone ({lock.recovered})")
        return _locked_sweep(specs, out, executor, retry_failed, timeout, on_event, report, ray_address,
                             cpus_per_run, notes)


def check_timeout(timeout: float | None) -> None:
    if timeout is not None and not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise GenprofError(f"--timeout must be a finite number of seconds > 0, got {timeout!r}")


def _locked_sweep(specs: list[RunSpec], out: Path, executor: str, retry_failed: bool, timeout: float | None,
                  on_event: Event | None, report: str | os.PathLike | None | bool, ray_address: str | None,
                  cpus_per_run: float | None, notes: list[str]) -> SweepResult:
    clean_stale_tmp(out)
    entries, stored = plan(specs, out, retry_failed, notes)
    todo = [e for e in entries if e.status == "pending"]
    for e in entries:
        if e.status != "pending" and on_event:
            on_event("skip", e)
    if todo:
        if executor == "local":
            _run_local(todo, out, timeout, on_event)
        else:
            _run_ray(todo, out, on_event, ray_address, cpus_per_run, timeout)
    if retry_failed:
        for e in todo:
            have = stored.get(e.key)
            if have and have.failed and e.path is not None:
                _supersede(have.failed, e.path)
    result = SweepResult(entries, out, notes)
    if report is not False and result.paths():
        from genprof.reports.html import write_report

        target = Path(report) if report else out / "report.html"
        result.report = write_report(result.paths(), target, title=f"genprof sweep ({len(entries)} runs)")
    return result


# ---------------------------------------------------------------------------------------------- local


def worker_command(spec: RunSpec, out: Path) -> list[str]:
    """The worker of one run: it dies with this process, and skips the memory check this process made."""
    return [sys.executable, "-m", "genprof.sweep_worker", json.dumps(spec.to_dict()), str(out),
            "--parent", str(os.getpid())]


def _run_local(todo: list[Entry], out: Path, timeout: float | None, on_event: Event | None) -> None:
    for e in todo:
        if on_event:
            on_event("start", e)
        t0 = time.perf_counter()
        _run_one_local(e, out, timeout)
        e.seconds = time.perf_counter() - t0
        if on_event:
            on_event("end", e)


def _run_one_local(e: Entry, out: Path, timeout: float | None) -> None:
    # Same process group as the sweep: killing the sweep's group kills the run too; killing the sweep
    # alone kills it as well (the worker asks the kernel for SIGKILL when its parent dies).
    proc = subprocess.Popen(worker_command(e.spec, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace")
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        e.status = "failed"
        e.reason = f"timed out after {timeout:g} s (worker killed)"
        e.path = record_failure(out, e.spec, e.reason, stderr)
        return
    except BaseException:  # Ctrl-C or SIGTERM of the sweep: do not leave the run behind
        proc.kill()
        proc.wait()
        raise
    result = None
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARK):
            try:
                result = json.loads(line[len(RESULT_MARK):])
            except json.JSONDecodeError:
                result = None
    if result and result.get("path"):
        e.path = Path(result["path"])
        e.status = "done" if result.get("status") == "ok" else "failed"
        e.reason = result.get("reason", "")
        return
    e.status = "failed"
    if result and result.get("error"):  # refused before anything was written (GenprofError)
        e.reason = result["error"]
    elif proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() else str(-proc.returncode)
        e.reason = f"worker killed by {sig}" + (" (out of memory?)" if sig == "SIGKILL" else "")
    else:
        tail = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        e.reason = f"worker exited with code {proc.returncode}" + (f": {tail[-1][:300]}" if tail else "")
    e.path = record_failure(out, e.spec, e.reason, stderr)


# ---------------------------------------------------------------------------------------------- ray


def _ray_task(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """Runs on a Ray worker: one run in a scratch directory; returns the run directory's files."""
    import tempfile

    from genprof import api

    with tempfile.TemporaryDirectory(prefix="genprof-ray-") as scratch:
        try:
            res = api.run(RunSpec.from_dict(spec_dict), out=scratch)
        except GenprofError as e:
            return {"error": str(e)}
        files = {p.name: p.read_bytes() for p in res.path.iterdir() if p.is_file()}
        return {"run_id": res.path.name, "status": res.meta["status"], "reason": res.meta.get("reason", ""),
                "files": files}


def install_run(out: Path, run_id: str, files: Mapping[str, bytes]) -> Path:
    """Commit a run's files into the store atomically (assembled in `.tmp-*`, then renamed)."""
    if any("/" in n or n.startswith(".") for n in files) or store.RUN_JSON not in files:
        raise GenprofError(f"run {run_id}: bad file set {sorted(files)}")
    w = store.RunWriter(out, run_id)
    try:
        for name, data in files.items():
            with open(w.path(name), "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.rename(w.tmp, w.final)
    except BaseException:
        w.abort()
        raise
    return w.final


def resources(spec: RunSpec, cpus_per_run: float | None = None) -> dict[str, float]:
    """What one run asks of Ray: CPUs (its threads, or cpus_per_run, or 1), one GPU on cuda."""
    cpus = cpus_per_run if cpus_per_run is not None else float(spec.threads or 1)
    return {"num_cpus": cpus, "num_gpus": 1 if spec.device.startswith("cuda") else 0}


def _run_ray(todo: list[Entry], out: Path, on_event: Event | None, address: str | None,
             cpus_per_run: float | None, timeout: float | None) -> None:
    try:
        import ray
    except ImportError:
        raise GenprofError("--executor ray needs ray: pip install 'genprof[ray]' (or pip install ray)") from None
    started_here = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        try:
            if address:
                ray.init(address=address, logging_level="ERROR", log_to_driver=False)
            else:
                ray.init(num_cpus=max(os.cpu_count() or 1, 1), include_dashboard=False, logging_level="ERROR",
                         log_to_driver=False)
        except Exception as e:
            raise GenprofError(f"cannot start or reach Ray ({address or 'local'}): {type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}") from None
        started_here = True
    try:
        remote = ray.remote(max_retries=0)(_ray_task)
        pending: dict[Any, Entry] = {}
        t0: dict[int, float] = {}
        for e in todo:
            ref = remote.options(**resources(e.spec, cpus_per_run)).remote(e.spec.to_dict())
            pending[ref] = e
            t0[e.index] = time.perf_counter()
            if on_event:
                on_event("start", e)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
            if not ready:  # nothing finished within `timeout`: give up on what is left
                for ref, e in pending.items():
                    ray.cancel(ref, force=True)
                    e.status, e.reason = "failed", f"timed out after {timeout:g} s (Ray task cancelled)"
                    e.path = record_failure(out, e.spec, e.reason)
                    e.seconds = time.perf_counter() - t0[e.index]
                    if on_event:
                        on_event("end", e)
                break
            ref = ready[0]
            e = pending.pop(ref)
            try:
                r = ray.get(ref)
                if r.get("error"):
                    e.status, e.reason = "failed", r["error"]
                    e.path = record_failure(out, e.spec, e.reason)
                else:
                    e.path = install_run(out, r["run_id"], r["files"])
                    e.status = "done" if r["status"] == "ok" else "failed"
                    e.reason = r.get("reason", "")
            except ray.exceptions.RayError as err:  # worker crashed, OOM-killed, task raised
                e.status = "failed"
                e.reason = f"Ray task failed: {type(err).__name__}: {str(err).strip().splitlines()[0][:300] if str(err).strip() else ''}"
                e.path = record_failure(out, e.spec, e.reason, traceback.format_exc())
            e.seconds = time.perf_counter() - t0[e.index]
            if on_event:
                on_event("end", e)
    finally:
        if started_here:
            ray.shutdown()


__all__ = ["Sweep", "SweepResult", "Entry", "expand", "load_file", "spec_key", "run_sweep", "index", "plan",
           "parse_opts", "install_run", "resources", "clean_stale_tmp", "check_timeout",
           # from genprof.sweepspec, with which a sweep is built
           "ALIASES", "FIELDS", "check", "key_of_run", "make_spec"]
