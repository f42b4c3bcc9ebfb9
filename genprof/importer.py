"""`genprof import`: a torch.profiler trace recorded by anyone, stored as a genprof run directory.

`import_traces(paths, out)` reads each trace file (Chrome/Kineto JSON, plain or
gzipped; a folder counts as its trace files, one run per file, e.g. one per
rank), builds the op table, phase times and GPU time per kernel
(`genprof.profiler.optable.build_tables`) and writes a run directory that
`show`, `report`, `compare` and `project` read like any other: run.json,
ops.parquet, phases.parquet, and kernels.parquet (GPU time per kernel, stream
and op). run.json says where the run came from (`source`: file, size, trace
name, device from `deviceProperties`, rank and world size from
`distributedInfo`, torch version when the trace records one, time span) and
holds the summary every run has, plus `summary.gpu`: kernel, memcpy and
memset time, busy time per device and stream, device time per family.

Not here: what events mean (`genprof.profiler.naming`), the op table
(`genprof.profiler.optable`), the run store's format (`genprof.store`).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from genprof import store
from genprof.errors import GenprofError
from genprof.profiler import events, forked, optable
from genprof.profiler.stats import phase_summary
from genprof.reports.breakdown import family_summary

TRACE_SUFFIXES = (".json", ".json.gz")
TORCH_VERSION_KEYS = ("torch_version", "torchVersion", "pytorch_version", "pytorchVersion")


@dataclass
class Imported:
    path: Path
    meta: dict[str, Any]
    ops: pd.DataFrame


def trace_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The trace files named: files as given, folders as the .json/.json.gz files directly inside them."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            inside = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(TRACE_SUFFIXES))
            if not inside:
                raise GenprofError(f"{p} holds no trace files (*.json or *.json.gz)")
            found += inside
        elif p.is_file():
            found.append(p)
        else:
            raise GenprofError(f"trace file not found: {p}")
    return found


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".json", ".trace", ".pt"):
        name = name[:-len(suffix)] if name.endswith(suffix) and len(name) > len(suffix) else name
    return name


def import_traces(paths: Iterable[str | os.PathLike], out: str | os.PathLike = "runs",
                  name: str | None = None) -> list[Imported]:
    """One run directory under `out` per trace file; GenprofError (nothing written) for a bad path."""
    files = trace_files(paths)
    return [import_trace(f, out, name) for f in files]


def import_trace(path: str | os.PathLike, out: str | os.PathLike = "runs", name: str | None = None) -> Imported:
    """Read one trace file and store it as a run directory; returns its path, run.json and op table."""
    path = Path(path)
    t0 = time.perf_counter()
    ev = events.from_chrome_trace(path)
    source = _source(path, ev)
    workload = name or _stem(path)
    rank = source.get("rank")
    label = re.sub(r"[^A-Za-z0-9_.=-]+", "-", workload)[:80] + (f"_rank{rank}" if rank is not None else "")
    run_id = store.new_run_id(label, "trace")
    before = dict(forked.STATS)
    tables = optable.build_tables(ev, {}, {}, {"run_id": run_id, "workload": workload, "size": "trace",
                                               "optimizations": "baseline"})
    reading = {**ev.reading, "count_helpers": forked.STATS["children"] - before["children"],
               "count_helper_peak_bytes": forked.STATS["peak_bytes"] - before["peak_bytes"]}
    analyze_s = time.perf_counter() - t0
    device = "cuda" if len(ev.kernel_ns) else "cpu"
    meta: dict[str, Any] = {
        "run_id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "spec": {"workload": workload, "size": "trace", "batch": None, "steps": None, "tokens": None, "repeats": 1,
                 "warmup": 0, "mode": "trace", "device": device, "dtype": None, "optimizations": [], "params": {},
                 "record_trace": False, "seed": None, "weights": None, "threads": None,
                 "imported_from": str(path.resolve())},
        "source": source,
        "environment": {"torch": source.get("torch"), "device_name": (source.get("device") or {}).get("name") or device,
                        "python": None, "platform": None, "cuda": None},
        "workload": {"name": workload, "kind": "imported trace", "stand_in": "", "phases": []},
        "note": "imported from a trace recorded elsewhere: times are the trace's (one pass, no repeats); "
                "device_time_s is GPU time, total_time_s CPU time",
        "status": "ok",
    }
    meta["summary"] = summarize_tables(tables, analyze_s, len(ev), reading)
    writer = store.RunWriter(out, run_id)
    try:
        writer.write_table(store.OPS, tables.ops)
        writer.write_table(store.PHASES, tables.phases)
        writer.write_table(store.KERNELS, tables.kernels)
    except BaseException:
        writer.abort()
        raise
    return Imported(writer.commit(meta), meta, tables.ops)


def _source(path: Path, ev: events.EventTable) -> dict[str, Any]:
    """Where a run came from, from the file and the trace's own metadata."""
    m = ev.meta
    dist = m.get("distributedInfo") if isinstance(m.get("distributedInfo"), dict) else {}
    lo, hi = ev.span_ns()
    out: dict[str, Any] = {
        "kind": "trace file", "file": str(path.resolve()), "bytes": path.stat().st_size,
        "trace_name": m.get("traceName"), "schema_version": m.get("schemaVersion"),
        "torch": next((str(m[k]) for k in TORCH_VERSION_KEYS if m.get(k)), None),
        "rank": dist.get("rank"), "world_size": dist.get("world_size"), "backend": dist.get("backend"),
        "time_span_s": (hi - lo) / 1e9, "cpu_events": len(ev), "device_events": int(len(ev.kernel_ns)),
        "device": _device(m, ev),
    }
    start = lo + int(m.get("baseTimeNanoseconds") or 0)
    if start > 10**18:  # an absolute time (after 2001): Kineto's clock is the Unix epoch
        out["start_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start / 1e9))
    return out


def _device(meta: dict[str, Any], ev: events.EventTable) -> dict[str, Any] | None:
    """The GPU the device events ran on, from `deviceProperties` (the first one when they name none)."""
    props = [p for p in meta.get("deviceProperties") or [] if isinstance(p, dict)]
    used = sorted(set(ev.kernel_device.tolist()))
    if not props:
        return {"name": None, "used": used} if used else None
    by_id = {p.get("id"): p for p in props}
    p = next((by_id[d] for d in used if d in by_id), props[0])
    cc = (f"{p['computeMajor']}.{p['computeMinor']}" if "computeMajor" in p and "computeMinor" in p else None)
    return {"name": p.get("name"), "compute_capability": cc, "memory_bytes": p.get("totalGlobalMem"),
            "multiprocessors": p.get("numSms"), "id": p.get("id"), "used": used, "in_trace": len(props)}


def summarize_tables(tables: optable.Tables, analyze_s: float, cpu_events: int,
                     reading: dict[str, Any] | None = None) -> dict[str, Any]:
    """run.json's summary of an imported trace: the keys every run has, plus `gpu`; `profiler.reading` says
    how the file was read and counted (helper processes, their peak memory growth: `tracefile.read`,
    `forked.split`)."""
    total, phase_stats, step_stats = phase_summary(tables.phases)
    ops = tables.ops
    summary: dict[str, Any] = {
        "timer": "trace file", "mode": "trace", "total": total, "phases": phase_stats,
        "steps": step_stats, "memory": {}, "derived": {},
        "profiler": {"events": cpu_events + tables.gpu.get("events", 0), "analyze_s": analyze_s,
                     "reading": reading or {}},
    }
    if not ops.empty:
        summary.update(family_summary(ops))
        summary["flops_per_repeat"] = float(ops["flops"].sum())
        summary["bytes_per_repeat"] = float(ops["bytes"].sum())
        summary["unclassified_ops"] = sorted(ops.loc[ops["family"] == "Other", "op"].unique().tolist())
    gpu = dict(tables.gpu)
    if gpu.get("events"):
        dev = ops.groupby("family")["device_time_s"].sum()
        gpu["family_time_s"] = {str(k): float(v) for k, v in dev[dev > 0].sort_values(ascending=False).items()}
        gpu["attributed_s"] = float(np.sum(ops["device_time_s"]))
    summary["gpu"] = gpu
    return summary
