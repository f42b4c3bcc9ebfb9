"""Run directories: written atomically, read back as DataFrames.

One directory per run under an output folder:
  run.json        spec, environment, status (ok / failed + reason), summary metrics
  ops.parquet     the op table (trace mode)
  phases.parquet  per repeat, phase and step: wall time in seconds
  trace.json.gz   the Chrome trace (trace mode, when asked for)
  kernels.parquet GPU time per kernel, stream and op (runs imported from a trace: `genprof import`)
A run is assembled in a hidden temporary directory next to its final place and
renamed into place in one step, so a killed run leaves no half-written
directory (at most a `.tmp-RUN@HOST@PID` folder, which readers ignore and which
names the machine and process that own it). Every read checks the file against
its schema (genprof.schema): a file that fails is reported by name and field, as
a GenprofError, never as a traceback; `load_runs` skips it with a warning.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from genprof import schema
from genprof.errors import GenprofError

RUN_JSON, OPS, PHASES, TRACE = "run.json", "ops.parquet", "phases.parquet", "trace.json.gz"
KERNELS = "kernels.parquet"
TMP_PREFIX = ".tmp-"
FORMAT_VERSION = schema.FORMAT_VERSION
MAX_RUN_JSON_BYTES = 64 << 20  # far above any run.json genprof writes (a traceback is cut at 20 kB)
MAX_DEPTH = 64  # JSON nesting a run.json may have; genprof writes at most 6 levels
HOST = "".join(c if c.isalnum() or c in "-._" else "_" for c in socket.gethostname()) or "localhost"


def tmp_name(label: str) -> str:
    """The temporary folder name of this process on this machine: `.tmp-LABEL@HOST@PID`."""
    return f"{TMP_PREFIX}{label}@{HOST}@{os.getpid()}"


def tmp_owner(name: str) -> tuple[str | None, int | None]:
    """(host, pid) of a temporary folder's name; host None for the older `.tmp-LABEL-PID` names."""
    parts = name.rsplit("@", 2)
    if len(parts) == 3 and parts[2].isdigit():
        return parts[1], int(parts[2])
    pid = name.rsplit("-", 1)[-1]
    return None, int(pid) if pid.isdigit() else None


def new_run_id(workload: str, size: str, opt_label: str = "") -> str:
    """`workload_size[_options]_time_random`: unique, sortable by time within a (workload, size, options)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    safe = "".join(c if c.isalnum() or c in "-_=." else "-" for c in opt_label)[:60]
    return "_".join([workload, size, *([safe] if safe else []), stamp, secrets.token_hex(2)])


def check_out(path: str | os.PathLike, flag: str = "--out", folder: bool = True) -> Path:
    """Refuse, before anything runs, an output folder (or file) that cannot be written: a file in the way,
    a parent that is a file, a folder without write permission. One line naming the option and the path."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise GenprofError(f"{flag} {path}: a file is in the way; give a folder")
    if not folder and path.is_dir() and path.suffix.lower() in (".html", ".htm"):
        raise GenprofError(f"{flag} {path}: a folder is in the way; give a file name")
    anc = path if folder else path.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise GenprofError(f"{flag} {path}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise GenprofError(f"{flag} {path}: {anc} is not writable")
    return path


class RunWriter:
    """Assemble a run in a temporary directory; `commit()` renames it into place."""

    def __init__(self, out_dir: str | os.PathLike, run_id: str):
        self.out_dir = check_out(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id
        self.final = self.out_dir / run_id
        if self.final.exists():
            raise GenprofError(f"run directory {self.final} already exists; choose another --out")
        self.tmp = self.out_dir / tmp_name(run_id)
        self.tmp.mkdir()

    def path(self, name: str) -> Path:
        return self.tmp / name

    def write_table(self, name: str, df: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(df, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **schema.table_metadata(name)})
        pq.write_table(table, self.tmp / name)

    def commit(self, run_json: dict[str, Any]) -> Path:
        run_json = {"format_version": FORMAT_VERSION, **run_json}
        with open(self.tmp / RUN_JSON, "w") as f:
            json.dump(run_json, f, indent=1, default=_json_default)
            f.flush()
            os.fsync(f.fileno())
        os.rename(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def read_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """run.json of one run, checked against its schema, or a one-line GenprofError naming the file and field."""
    p = Path(run_dir) / RUN_JSON
    if not p.is_file():
        raise GenprofError(f"{run_dir} is not a genprof run directory (no {RUN_JSON})")
    try:
        size = p.stat().st_size
        if size > MAX_RUN_JSON_BYTES:
            raise GenprofError(f"corrupt {p}: {size} bytes, more than a run.json holds ({MAX_RUN_JSON_BYTES})")
        data = json.loads(p.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenprofError(f"corrupt {p}: {e}") from None
    except RecursionError:
        raise GenprofError(f"corrupt {p}: nested too deeply to read") from None
    except OSError as e:
        raise GenprofError(f"cannot read {p}: {e.strerror or e}") from None
    if _depth(data) > MAX_DEPTH:
        raise GenprofError(f"corrupt {p}: nested more than {MAX_DEPTH} levels deep")
    try:
        return schema.check_run(data)
    except schema.NewerFormat as e:
        raise GenprofError(f"{p}: {e}") from None
    except schema.SchemaError as e:
        raise GenprofError(f"corrupt {p}: {e}") from None


def _depth(data: Any) -> int:
    """The nesting depth of parsed JSON (iterative: a deep file must not overflow the stack here either)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > MAX_DEPTH:
            break
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


def read_table(run_dir: str | os.PathLike, name: str = OPS) -> pd.DataFrame | None:
    """One table of a run, checked against its schema: None if the run has none, GenprofError (naming the file
    and the column) if it is unreadable or has the wrong columns."""
    p = Path(run_dir) / name
    if not p.exists():
        return None
    try:
        import pyarrow.parquet as pq

        schema.check_table(name, pq.read_schema(p))
        df = pd.read_parquet(p)
    except schema.NewerFormat as e:
        raise GenprofError(f"{p}: {e}") from None
    except schema.SchemaError as e:
        raise GenprofError(f"corrupt {p}: {e}") from None
    except Exception as e:  # pyarrow raises several types for truncated files
        raise GenprofError(f"corrupt {p}: {type(e).__name__}: {e}".splitlines()[0]) from None
    for col, value in schema.FILL.get(name, {}).items():
        if col not in df.columns:
            df[col] = value
    return df


def run_dirs(root: str | os.PathLike) -> list[Path]:
    """Every run directory at or below `root` (temporary directories excluded)."""
    root = Path(root)
    if not root.exists():
        raise GenprofError(f"{root} does not exist")
    if (root / RUN_JSON).is_file():
        return [root]
    if not root.is_dir():
        raise GenprofError(f"{root} is neither a run directory nor a folder of runs")
    return sorted(p.parent for p in root.rglob(RUN_JSON)
                  if not any(part.startswith(TMP_PREFIX) for part in p.relative_to(root).parts))


def load_runs(root: str | os.PathLike, table: str = "ops") -> pd.DataFrame:
    """One DataFrame over every run below `root`.

    table="ops": the op tables (trace-mode runs); "phases": phase times of
    every run; "kernels": GPU time per kernel (runs that have it); "runs": one
    row per run (status, spec, summary). A corrupt run is skipped with a
    warning that names the file.
    """
    if table not in ("ops", "phases", "kernels", "runs"):
        raise GenprofError(f"unknown table {table!r}; valid: ops, phases, kernels, runs")
    frames: list[pd.DataFrame] = []
    records: list[dict[str, Any]] = []
    name = {"ops": OPS, "kernels": KERNELS}.get(table, PHASES)
    for d in run_dirs(root):
        try:
            meta = read_run(d)
            if table == "runs":
                records.append(_run_record(meta, d))
                continue
            df = read_table(d, name)
        except GenprofError as e:
            warnings.warn(f"skipped: {e}", stacklevel=2)
            continue
        if df is None and meta["status"] == "ok" and name in expected_files(meta):
            warnings.warn(f"skipped: {d / name} is missing", stacklevel=2)
            continue
        if df is None or df.empty:
            continue
        if table == "phases":
            spec = meta.get("spec", {})
            df = df.assign(run_id=meta["run_id"], workload=spec.get("workload", ""),
                           size=spec.get("size", ""), optimizations="+".join(spec.get("optimizations") or [])
                           or "baseline", mode=spec.get("mode", ""))
        frames.append(df)
    if table == "runs":
        return pd.DataFrame(records)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _run_record(meta: dict[str, Any], d: Path) -> dict[str, Any]:
    spec = meta.get("spec") or {}
    summary = meta.get("summary") or {}
    total = summary.get("total") or {}
    return {
        "run_id": meta["run_id"], "path": str(d), "status": meta["status"], "reason": meta.get("reason", ""),
        "workload": spec.get("workload"), "size": spec.get("size"), "batch": spec.get("batch"),
        "mode": spec.get("mode"), "device": spec.get("device"), "dtype": spec.get("dtype"),
        "optimizations": "+".join(spec.get("optimizations") or []) or "baseline",
        "total_median_s": total.get("median_s"), "total_stdev_s": total.get("stdev_s"),
        "total_ci_low_s": total.get("ci_low_s"), "total_ci_high_s": total.get("ci_high_s"),
        "repeats": total.get("n"), "created": meta.get("created"),
        "measured": measured(meta),
        "stability": (summary.get("stability") or {}).get("verdict", "") if measured(meta) else "",
    }


def measured(meta: Mapping[str, Any]) -> bool:
    """Whether a run timed anything: a meta-device run counts FLOPs and bytes and times nothing."""
    summary = meta.get("summary") or {}
    if "measured" in summary:
        return bool(summary["measured"])
    return (meta.get("spec") or {}).get("device") != "meta"  # runs stored before the flag existed


def expected_files(meta: Mapping[str, Any]) -> list[str]:
    """The tables a complete successful run directory holds."""
    spec = meta.get("spec") or {}
    names = [PHASES]
    if spec.get("mode") == "trace":
        names.append(OPS)
        if spec.get("record_trace"):
            names.append(TRACE)
        if spec.get("imported_from"):
            names.append(KERNELS)
    return names


def environment(device: str) -> dict[str, Any]:
    """Versions and machine facts stored with every run."""
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cpu": _cpu_name(), "genprof_git": _git_revision(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    for mod in ("diffusers", "transformers", "accelerate"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:
            env[mod] = None
    if device.startswith("cuda") and torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name(torch.device(device))
        env["cuda"] = torch.version.cuda
    else:
        env["device_name"] = env["cpu"] if device == "cpu" else device
    return env


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_revision() -> str | None:
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
