"""Sweeps: many RunSpecs, run in isolated processes (or on Ray), resumable.

A sweep is a list of RunSpecs: the product of axes (workloads x sizes x
optimizations x batch sizes x any other RunSpec field), built from CLI options
or a sweep file (TOML; YAML too when pyyaml is importable). See docs/sweeps.md
for the file format.

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

import dataclasses
import gzip
import hashlib
import itertools
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
from genprof.spec import OptSpec, RunSpec
from genprof.storelock import StoreLock, clean_stale_tmp

# Fields a sweep may set or vary, with the names a sweep file may use for them.
FIELDS = tuple(f.name for f in dataclasses.fields(RunSpec))
ALIASES = {"workloads": "workload", "sizes": "size", "opt": "optimizations", "opts": "optimizations",
           "batches": "batch", "set": "params", "trace_file": "record_trace"}
FILE_KEYS = ("base", "axes", "workload", "skip_invalid")
RESULT_MARK = "GENPROF_SWEEP_RESULT "


# ---------------------------------------------------------------------------------------------- building


def _field(name: str, where: str) -> str:
    key = ALIASES.get(name, name)
    if key not in FIELDS:
        valid = ", ".join(sorted(FIELDS))
        raise GenprofError(f"unknown {where} {name!r}; valid: {valid}")
    return key


def parse_opts(value: Any) -> tuple[OptSpec, ...]:
    """One value of the optimizations axis: 'baseline' | 'attn=flash' | 'a=x+b:k=v' | ['a=x', 'b']."""
    if value is None:
        return ()
    if isinstance(value, str):
        if value.strip().lower() in ("", "baseline", "none"):
            return ()
        items = value.split("+")
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise GenprofError(f"bad optimizations value {value!r}; expected 'baseline', 'NAME[=V]' or a list of them")
    out = []
    for item in items:
        if isinstance(item, OptSpec):
            out.append(item)
        elif isinstance(item, str):
            out.append(OptSpec.parse(item))
        else:
            raise GenprofError(f"bad optimization {item!r}; expected a string like 'attn=flash'")
    return tuple(out)


def _params(value: Any) -> tuple[tuple[str, Any], ...]:
    if value is None:
        return ()
    if isinstance(value, Mapping):
        return tuple((str(k), v) for k, v in value.items())
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        from genprof.spec import parse_params

        return parse_params(list(value))
    raise GenprofError(f"bad params value {value!r}; expected a table like {{latent = 48}}")


def _coerce(key: str, value: Any) -> Any:
    if key == "optimizations":
        return parse_opts(value)
    if key == "params":
        return _params(value)
    if isinstance(value, (dict, list)):
        raise GenprofError(f"bad value for {key}: {value!r}; expected a single value")
    want = _TYPES.get(key)
    if value is not None and want is not None and (type(value) is not want):
        raise GenprofError(f"bad value for {key}: {value!r}; expected {_TYPE_NAMES[want]}")
    return value


_TYPES = {**{k: str for k in ("workload", "size", "dtype", "device", "mode", "weights")},
          **{k: int for k in ("batch", "steps", "tokens", "repeats", "warmup", "seed", "threads")},
          "record_trace": bool}
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false"}


def make_spec(fields: Mapping[str, Any]) -> RunSpec:
    """A RunSpec from sweep fields (validated by RunSpec itself: size, mode, dtype, integers)."""
    kw = {k: _coerce(k, v) for k, v in fields.items()}
    if "workload" not in kw:
        raise GenprofError("a sweep needs at least one workload (--workload or axes.workload)")
    try:
        return RunSpec(**kw)
    except TypeError as e:  # a value of the wrong type that RunSpec does not check itself
        raise GenprofError(f"bad sweep value: {e}") from None


@dataclass
class Sweep:
    specs: list[RunSpec]
    dropped: list[str] = field(default_factory=list)  # combinations left out by skip_invalid (why)
    duplicates: int = 0


def expand(base: Mapping[str, Any] | None = None, axes: Mapping[str, Iterable[Any]] | None = None,
           per_workload: Mapping[str, Mapping[str, Any]] | None = None, skip_invalid: bool = False,
           validate: bool = True, check_device: bool = True) -> Sweep:
    """The product of `axes` over `base`; `per_workload[name]` overrides fields for one workload.

    Every combination is validated (RunSpec, then the workload and optimizations
    as `genprof run` would). An invalid one raises a one-line GenprofError
    naming the combination, or with `skip_invalid` is left out and listed in
    `Sweep.dropped`. Identical combinations are run once.
    """
    base = {_field(k, "sweep field"): v for k, v in (base or {}).items()}
    ax: dict[str, list[Any]] = {}
    for k, values in (axes or {}).items():
        key = _field(k, "sweep axis")
        if isinstance(values, (str, int, float, bool)) or isinstance(values, Mapping) or values is None:
            values = [values]
        values = list(values)
        if not values:
            raise GenprofError(f"sweep axis {k!r} is empty; give at least one value")
        ax[key] = values
    per = {str(w): {_field(k, f"field for workload {w!r}"): v for k, v in (o or {}).items()}
           for w, o in (per_workload or {}).items()}
    if "workload" not in ax and "workload" not in base:
        raise GenprofError("a sweep needs at least one workload (--workload or axes.workload)")
    if per and validate:  # a misspelt name in a per-workload table would otherwise be silently unused
        from genprof import workloads

        known = workloads.names()
        for w in per:
            if w not in known:
                raise GenprofError(f"settings for unknown workload {w!r}; valid: {', '.join(known)}")
    names = list(ax)
    specs: list[RunSpec] = []
    dropped: list[str] = []
    seen: set[str] = set()
    dup = 0
    for combo in itertools.product(*(ax[n] for n in names)):
        fields = {**base, **dict(zip(names, combo))}
        wl = fields.get("workload")
        if isinstance(wl, str) and wl in per:
            fields.update(per[wl])
        label = " ".join(f"{n}={_show(v)}" for n, v in zip(names, combo)) or "the sweep"
        try:
            spec = make_spec(fields)
            if validate:
                check(spec, check_device=check_device)
        except GenprofError as e:
            if skip_invalid:
                dropped.append(f"{label}: {e}")
                continue
            raise GenprofError(f"{label}: {e}") from None
        key = spec_key(spec)
        if key in seen:
            dup += 1
            continue
        seen.add(key)
        specs.append(spec)
    return Sweep(specs, dropped, dup)


def _show(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "+".join(map(str, v)) or "baseline"
    if isinstance(v, Mapping):
        return ",".join(f"{k}={x}" for k, x in v.items()) or "{}"
    return str(v)


def check(spec: RunSpec, check_device: bool = True) -> None:
    """Validate a spec as `genprof run` does; with check_device=False a cuda spec is checked as cpu
    (the Ray driver may have no GPU while the cluster does)."""
    from genprof import api

    from genprof.estimate import skipped

    if not check_device:  # the run's machine is not this one: its memory is not either
        if spec.device.startswith("cuda"):
            spec = dataclasses.replace(spec, device="cpu")
        with skipped():
            api.validate(spec)
        return
    api.validate(spec)


def load_file(path: str | os.PathLike) -> dict[str, Any]:
    """A sweep file (TOML, or YAML when pyyaml is installed) as {base, axes, workload, skip_invalid}."""
    p = Path(path)
    if not p.is_file():
        raise GenprofError(f"sweep file {p} does not exist")
    text_bytes = p.read_bytes()
    suffix = p.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise GenprofError(f"{p} is YAML but pyyaml is not installed; pip install pyyaml, "
                                   "or write the sweep as TOML") from None
            data = yaml.safe_load(text_bytes.decode("utf-8"))
        elif suffix == ".toml":
            import tomllib

            data = tomllib.loads(text_bytes.decode("utf-8"))
        else:
            raise GenprofError(f"sweep file {p} must end in .toml, .yaml or .yml")
    except GenprofError:
        raise
    except UnicodeDecodeError as e:
        raise GenprofError(f"sweep file {p} is not UTF-8 text: {e}") from None
    except Exception as e:  # tomllib.TOMLDecodeError, yaml.YAMLError
        raise GenprofError(f"sweep file {p} does not parse: {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise GenprofError(f"sweep file {p}: expected a table with {', '.join(FILE_KEYS)} at the top")
    unknown = sorted(set(data) - set(FILE_KEYS))
    if unknown:
        raise GenprofError(f"sweep file {p}: unknown key {unknown[0]!r}; valid: {', '.join(FILE_KEYS)}")
    for key in ("base", "axes", "workload"):
        if key in data and not isinstance(data[key], dict):
            raise GenprofError(f"sweep file {p}: {key!r} must be a table")
    for w, o in (data.get("workload") or {}).items():
        if not isinstance(o, dict):
            raise GenprofError(f"sweep file {p}: workload.{w} must be a table")
    if not isinstance(data.get("skip_invalid", False), bool):
        raise GenprofError(f"sweep file {p}: skip_invalid must be true or false")
    return {"base": data.get("base") or {}, "axes": data.get("axes") or {},
            "workload": data.get("workload") or {}, "skip_invalid": data.get("skip_invalid", False)}


# ---------------------------------------------------------------------------------------------- identity


def _canonical(d: Mapping[str, Any]) -> str:
    return json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)


def spec_key(spec: RunSpec) -> str:
    """A stable 16-hex key of everything that defines a run (the same for a spec read back from run.json)."""
    d = json.loads(_canonical(spec.to_dict()))
    return hashlib.sha256(_canonical(RunSpec.from_dict(d).to_dict()).encode()).hexdigest()[:16]


def key_of_run(meta: Mapping[str, Any]) -> str | None:
    """The spec key of a stored run (None when its spec cannot be read back)."""
    try:
        return spec_key(RunSpec.from_dict(dict(meta["spec"])))
    except Exception:
        return None


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
        except OSError as e:
            if notes is not None:
                notes.append(f"ignored: {d / store.RUN_JSON}: {e}")
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
           "parse_opts", "install_run", "resources", "clean_stale_tmp", "check_timeout"]
