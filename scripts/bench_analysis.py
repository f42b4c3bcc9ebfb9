"""How fast genprof reads a large trace: its op table against HolisticTraceAnalysis and torch's key_averages.

One trace of at least a million events: genprof's own trace of the `llm`
workload at `tiny` size decoding many tokens (so every event is a real
profiler event: ops, nested aten calls, genprof's phase/step/module ranges),
exported as a gzipped Kineto/Chrome trace. Then:

From the trace file, each side in a fresh process (peak memory = the
process's peak RSS minus its RSS after imports), median of --repeats:
- genprof: `events.from_chrome_trace` (streaming parse of the gzipped JSON,
  columns only) + `optable.build` (vectorized call tree; per-event context
  of repeat/phase/step/module; outermost ops and overhead rows grouped by
  (repeat, phase, step, module, scope, op, input shapes); family, FLOPs and bytes per
  row; phase and step times).
- HTA (holistictraceanalysis): `TraceAnalysis(trace_dir)` (parses the file into
  its DataFrame with a symbol table) + `CallGraph` (parent, depth, kernel time
  of every event: HTA's attribution, the work nearest to our tree) + a pandas
  breakdown of the top-level ops (events whose parent is a user annotation or
  none) by name: count and summed duration. HTA has no op-family, FLOPs or
  phase/step/module attribution; this is its nearest breakdown of a CPU trace.

From the live profile (the profiler object of the same run, in this process):
- genprof: `events.from_profile` + `optable.build` (what trace mode does).
- torch: `profile.key_averages(group_by_input_shape=True)` (builds a Python
  FunctionEvent per event, links the tree, then groups by name and shapes).

Real GPU traces recorded by others (`--gpu-trace FILE`, repeatable; e.g. the
traces in ../shared/traces), each side in a fresh process, median of
--repeats, the sides alternating:
- genprof: `genprof import` of the file (`importer.import_trace`: streaming
  parse, op table with every kernel, memcpy and memset at its launching op,
  GPU time per kernel, busy time per stream, run directory written as parquet).
- HTA: `TraceAnalysis(trace_dir)` on a folder holding the file alone (its load:
  parse into its DataFrame, symbol table, per-rank preprocessing).
Beside the speed, the checks of tests/test_foreign_traces.py for each trace,
against an attribution written apart from genprof (tests/independent_attribution.py):
device time against the trace's kernel + memcpy + memset time, GPU time on
wrappers, and the largest deviation of the five aten ops with the most GPU time.

    pip install -e '.[bench]'
    python scripts/bench_analysis.py --tokens 2000 --repeats 3     # writes docs/benchmarks.md section
    python scripts/bench_analysis.py --no-cpu-trace --repeats 5 --gpu-trace ../shared/traces/a100-ddp-train.json.gz
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def peak_bytes() -> int:
    """Peak RSS since the last reset_peak() (the kernel's VmHWM), else since the process started."""
    from genprof.profiler.memory import read_hwm

    return read_hwm() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak() -> int:
    """Reset the peak-RSS mark to the current RSS (Linux); return the current RSS."""
    from genprof.profiler.memory import reset_hwm

    reset_hwm()
    return rss_bytes()


# ----------------------------------------------------------------------------------- workers

def worker_genprof(trace: Path) -> dict:
    from genprof.profiler import events, optable

    from genprof.profiler import forked

    base = reset_peak()
    t0 = time.perf_counter()
    ev = events.from_chrome_trace(trace)
    t1 = time.perf_counter()
    ops, phases = optable.build(ev, {}, {})
    t2 = time.perf_counter()
    return {"parse_s": t1 - t0, "analyze_s": t2 - t1, "total_s": t2 - t0, "events": len(ev) + len(ev.kernel_ns),
            "rows": len(ops), "processes": ev.reading.get("processes", 1),
            "peak_bytes": peak_bytes() - base + ev.reading.get("helper_peak_bytes", 0) + forked.STATS["peak_bytes"]}


def worker_hta(trace: Path) -> dict:
    import logging

    logging.disable(logging.WARNING)
    from hta.common.call_stack import CallGraph  # the newer trace_call_graph.CallGraph raises on this trace
    from hta.trace_analysis import TraceAnalysis

    base = reset_peak()
    t0 = time.perf_counter()
    analyzer = TraceAnalysis(trace_dir=str(trace.parent))
    t1 = time.perf_counter()
    CallGraph(analyzer.t)  # adds parent and depth columns to the trace DataFrame
    df = analyzer.t.get_trace(next(iter(analyzer.t.get_all_traces())))
    sym = analyzer.t.symbol_table
    names = np.asarray(sym.get_sym_table())
    cats = names[df["cat"].to_numpy()]
    # a genprof range is a user annotation (module ranges are written with the cpu_op category)
    cats = np.where(np.char.startswith(names[df["name"].to_numpy()].astype(str), "genprof."), "user_annotation", cats)
    parent = df["parent"].to_numpy()
    cpu = df["stream"].to_numpy() < 0
    pos = np.full(int(df.index.max()) + 2, -1)
    pos[df.index.to_numpy()] = np.arange(len(df))
    known = (parent >= 0) & (parent < len(pos) - 1)
    parent_cat = np.full(len(df), "", dtype=object)
    ok = known.copy()
    ok[known] = pos[parent[known].astype(int)] >= 0
    parent_cat[ok] = cats[pos[parent[ok].astype(int)]]
    top = cpu & (cats == "cpu_op") & ((parent_cat == "user_annotation") | (parent < 0))
    breakdown = df[top].assign(op=names[df.loc[top, "name"].to_numpy()]).groupby("op")["dur"].agg(["size", "sum"])
    t2 = time.perf_counter()
    return {"parse_s": t1 - t0, "analyze_s": t2 - t1, "total_s": t2 - t0, "events": int(len(df)),
            "rows": int(len(breakdown)), "peak_bytes": peak_bytes() - base}


def worker_genprof_import(trace: Path) -> dict:
    import tempfile

    from genprof import importer

    with tempfile.TemporaryDirectory(prefix="genprof-bench-") as out:
        base = reset_peak()
        t0 = time.perf_counter()
        res = importer.import_trace(trace, out)
        total = time.perf_counter() - t0
        reading = res.meta["summary"]["profiler"]["reading"]
        # the helper processes' growth too (reading, counting): as if they all peaked at once
        peak = peak_bytes() - base + reading.get("helper_peak_bytes", 0) + reading.get("count_helper_peak_bytes", 0)
    return {"total_s": total, "peak_bytes": peak, "rows": len(res.ops), "processes": reading.get("processes", 1),
            "events": res.meta["source"]["cpu_events"] + res.meta["source"]["device_events"]}


def worker_hta_load(trace: Path) -> dict:
    import logging

    logging.disable(logging.WARNING)
    from hta.trace_analysis import TraceAnalysis

    base = reset_peak()
    t0 = time.perf_counter()
    analyzer = TraceAnalysis(trace_dir=str(trace.parent))
    total = time.perf_counter() - t0
    df = analyzer.t.get_trace(next(iter(analyzer.t.get_all_traces())))
    return {"total_s": total, "peak_bytes": peak_bytes() - base, "rows": int(len(df)), "events": int(len(df))}


WORKERS = {"genprof": worker_genprof, "hta": worker_hta, "genprof-import": worker_genprof_import,
           "hta-load": worker_hta_load}


def run_worker(side: str, trace: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", side, "--trace", str(trace)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{side} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------- the trace

def make_trace(tokens: int, dest: Path) -> tuple[object, dict, dict]:
    """Profile llm tiny decoding `tokens` tokens with genprof's ranges; export the trace gzipped."""
    import gzip
    import shutil

    import torch
    from torch.autograd.profiler import record_function

    from genprof import api
    from genprof.profiler import scopes, session

    torch.set_num_threads(1)
    api._quiet_libraries()
    spec = api.make_spec("llm", size="tiny", tokens=tokens, repeats=1, warmup=0, mode="trace")
    built = api.build(spec)
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True)
    t0 = time.perf_counter()
    with scopes.ModuleScopes(built.parts) as modules:
        with session._quiet_stderr():
            prof.start()
        with record_function(scopes.REPEAT + "0"), torch.inference_mode():
            built.run(scopes.TracePhases())
        with session._quiet_stderr():
            prof.stop()
    run_s = time.perf_counter() - t0
    raw = dest.with_suffix("")
    prof.export_chrome_trace(str(raw))
    with open(raw, "rb") as src, gzip.open(dest, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst)
    info = {"profiled_run_s": run_s, "json_bytes": raw.stat().st_size, "gz_bytes": dest.stat().st_size,
            "kineto_events": len(prof.profiler.kineto_results.events())}
    raw.unlink()
    return prof, {"types": modules.types, "kinds": modules.attention_kinds}, info


def live(prof, modules: dict) -> dict:
    from genprof.profiler import events, optable

    base = reset_peak()
    t0 = time.perf_counter()
    ev = events.from_profile(prof)
    ops, _ = optable.build(ev, modules["types"], modules["kinds"])
    ours = {"total_s": time.perf_counter() - t0, "rows": len(ops), "peak_bytes": peak_bytes() - base}
    del ev, ops
    base = reset_peak()
    t0 = time.perf_counter()
    ka = prof.key_averages(group_by_input_shape=True)
    theirs = {"total_s": time.perf_counter() - t0, "rows": len(ka), "peak_bytes": max(peak_bytes() - base, 0)}
    return {"genprof": ours, "key_averages": theirs}


def to_markdown(res: dict) -> str:
    t, e = res["trace"], res["environment"]
    n = res["file"]["genprof"]["events"]
    f, lv = res["file"], res["live"]

    def row(name: str, r: dict, what: str) -> str:
        mem = f"{r['peak_bytes'] / 2**20:,.0f}" if r.get("peak_bytes") else "n/a"
        return (f"| {name} | {what} | {r['total_s']:.1f} | {n / r['total_s'] / 1e3:,.0f} | {mem} | {r['rows']:,} |")

    g, h = f["genprof"], f["hta"]
    lines = [
        f"Measured {e['date']} on {e['machine']}, torch {e['torch']}, holistictraceanalysis {e['hta']}, "
        f"1 thread; median of {res['repeats']} fresh processes per side (file), one pass each (live).", "",
        f"    {res['command']}", "",
        f"Trace: `llm` tiny decoding {res['tokens']} tokens with genprof's ranges: {n:,} events "
        f"({t['json_bytes'] / 2**20:,.0f} MiB of JSON, {t['gz_bytes'] / 2**20:,.0f} MiB gzipped); the profiled run "
        f"took {t['profiled_run_s']:.1f} s.", "",
        "| side | input | seconds | k events/s | peak MiB | rows |", "|---|---|---:|---:|---:|---:|",
        row("genprof", g, "trace file"), row("HTA", h, "trace file"),
        row("genprof", lv["genprof"], "live profile"), row("torch key_averages", lv["key_averages"], "live profile"),
        "",
        f"From the file: genprof {h['total_s'] / g['total_s']:.1f}x faster than HTA "
        f"(parse {g['parse_s']:.1f} s vs {h['parse_s']:.1f} s; analysis {g['analyze_s']:.1f} s vs "
        f"{h['analyze_s']:.1f} s), at {g['peak_bytes'] / max(h['peak_bytes'], 1):.2f}x its peak memory. "
        f"Live: genprof {lv['key_averages']['total_s'] / lv['genprof']['total_s']:.1f}x faster than key_averages.",
        "",
    ]
    return "\n".join(lines)


def _median(runs: list[dict]) -> dict:
    return {k: (int if isinstance(runs[0][k], int) else float)(np.median([x[k] for x in runs])) for k in runs[0]}


def gpu_traces(args, load_before: float) -> None:
    """genprof import against HTA's load on each real GPU trace, with the attribution checks; doc section."""
    import shutil
    from importlib.metadata import version

    sys.path.insert(0, str(ROOT / "tests"))
    from independent_attribution import Independent

    from genprof import importer, store

    results = []
    for src in args.gpu_trace:
        folder = args.workdir / "gpu" / src.name.split(".")[0]  # HTA reads every trace of a folder: this one alone
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        trace = folder / src.name
        shutil.copy(src, trace)
        runs: dict[str, list[dict]] = {"genprof-import": [], "hta-load": []}
        for r in range(args.repeats):
            for side in ("genprof-import", "hta-load") if r % 2 == 0 else ("hta-load", "genprof-import"):
                runs[side].append(run_worker(side, trace))
                print(f"  {src.name} {side} #{r + 1}: {runs[side][-1]}", flush=True)
        with __import__("tempfile").TemporaryDirectory() as out:
            check = Independent(trace).check(importer.import_trace(trace, out).ops)
        results.append({"trace": src.name, "gz_bytes": src.stat().st_size, "check": check,
                        **{side: _median(v) for side, v in runs.items()},
                        "spread": {side: [min(x["total_s"] for x in v), max(x["total_s"] for x in v)]
                                   for side, v in runs.items()}})
    res = {"repeats": args.repeats, "traces": results,
           "environment": {**store.environment("cpu"), "date": time.strftime("%Y-%m-%d"),
                           "hta": version("holistictraceanalysis"), "load_before": load_before,
                           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"},
           "command": "python scripts/bench_analysis.py " + " ".join(sys.argv[1:])}
    args.gpu_json.parent.mkdir(parents=True, exist_ok=True)
    args.gpu_json.write_text(json.dumps(res, indent=2))
    md = gpu_markdown(res)
    print(md)
    if not args.no_doc:
        from bench_overhead import replace_section

        replace_section(args.doc, "analysis-gpu", md)


def gpu_markdown(res: dict) -> str:
    e = res["environment"]
    lines = [
        f"Measured {e['date']} on {e['machine']} (shared with other jobs: load average {e['load_before']:.1f} "
        f"before the run), torch {e['torch']}, holistictraceanalysis {e['hta']}; median of {res['repeats']} fresh "
        "processes per side, the sides alternating (min-max in brackets).", "",
        f"    {res['command']}", "",
        "| trace | gz MiB | events | genprof import s | HTA load s | HTA / genprof | genprof peak MiB | HTA peak MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in res["traces"]:
        g, h, sp = t["genprof-import"], t["hta-load"], t["spread"]
        lines.append(f"| {t['trace']} | {t['gz_bytes'] / 2**20:.2f} | {g['events']:,} | {g['total_s']:.2f} "
                     f"({sp['genprof-import'][0]:.2f}-{sp['genprof-import'][1]:.2f}) | {h['total_s']:.2f} "
                     f"({sp['hta-load'][0]:.2f}-{sp['hta-load'][1]:.2f}) | {h['total_s'] / g['total_s']:.1f}x | "
                     f"{g['peak_bytes'] / 2**20:,.0f} | {h['peak_bytes'] / 2**20:,.0f} |")
    lines += ["", "What genprof's op table says of each trace, against the attribution of "
              "tests/independent_attribution.py (plain json, a stack walk per thread, correlation ids):", "",
              "| trace | trace's kernel + memcpy + memset s | op table device s | on wrappers | "
              "top-5 aten ops, largest deviation |", "|---|---:|---:|---:|---:|"]
    for t in res["traces"]:
        c = t["check"]
        dev = "—" if c["top5_max_deviation"] is None else f"{100 * c['top5_max_deviation']:.2f}%"
        lines.append(f"| {t['trace']} | {c['trace_device_s']:.6f} | {c['device_s']:.6f} | "
                     f"{100 * c['wrapper_share']:.1f}% | {dev} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2000, help="Decode tokens of llm tiny (about 500 events each).")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/genprof-bench-analysis"))
    ap.add_argument("--skip-live", action="store_true", help="Only the trace-file comparison.")
    ap.add_argument("--json", type=Path, default=ROOT / "docs" / "results" / "bench-analysis.json")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--gpu-trace", type=Path, action="append", default=[],
                    help="A real GPU trace to import against HTA's load (repeatable); section analysis-gpu.")
    ap.add_argument("--gpu-json", type=Path, default=ROOT / "docs" / "results" / "bench-analysis-gpu.json")
    ap.add_argument("--no-cpu-trace", action="store_true", help="Skip the million-event trace of genprof's own.")
    ap.add_argument("--worker", choices=tuple(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--trace", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.trace)))
        return
    load_before = os.getloadavg()[0]  # before this script loads the machine itself
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.gpu_trace:
        gpu_traces(args, load_before)
    if args.no_cpu_trace:
        return
    trace = args.workdir / "rank0.json.gz"  # HTA reads every trace file of a directory
    print(f"profiling llm tiny, {args.tokens} tokens ...", flush=True)
    prof, modules, info = make_trace(args.tokens, trace)
    print(f"  {info}", flush=True)
    live_res = None
    if not args.skip_live:
        live_res = live(prof, modules)
        print(f"  live: {live_res}", flush=True)
    del prof
    file_res: dict[str, list[dict]] = {"genprof": [], "hta": []}
    for r in range(args.repeats):
        for side in ("genprof", "hta") if r % 2 == 0 else ("hta", "genprof"):
            file_res[side].append(run_worker(side, trace))
            print(f"  {side} #{r + 1}: {file_res[side][-1]}", flush=True)

    def med(runs: list[dict]) -> dict:
        return {k: (int if isinstance(runs[0][k], int) else float)(np.median([x[k] for x in runs])) for k in runs[0]}

    from importlib.metadata import version

    from genprof import store

    res = {
        "tokens": args.tokens, "repeats": args.repeats, "trace": info,
        "file": {k: med(v) for k, v in file_res.items()}, "live": live_res or {},
        "environment": {**store.environment("cpu"), "date": time.strftime("%Y-%m-%d"),
                        "hta": version("holistictraceanalysis"),
                        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                        "load_before": load_before},
        "command": "python scripts/bench_analysis.py " + " ".join(sys.argv[1:]),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=2))
    if live_res:
        md = to_markdown(res)
        print(md)
        if not args.no_doc:
            from bench_overhead import replace_section

            replace_section(args.doc, "analysis", md)


if __name__ == "__main__":
    main()
