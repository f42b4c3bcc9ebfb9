"""What genprof's measurement costs: a bare inference against timing mode, trace mode and torch.profiler alone.

For each workload, one process builds the model once, warms it up, then runs
rounds; each round runs the four conditions once, in an order that rotates
from round to round (so drift and cache state hit every condition alike):

- bare: `built.infer` with no genprof and no profiler, timed with perf_counter.
- timing: genprof's timing mode (`measure_timing`, one repeat, no warm-up):
  its phase/step timer marks and its peak-memory mark; wall time of the call.
- profiler: torch.profiler alone with the options trace mode uses (CPU
  activity, record_shapes=True; CUDA activity on a GPU), around one
  inference: wall time from start() to stop().
- trace: genprof's trace mode (`measure_trace`, one repeat, no warm-up): the
  same profiler plus genprof's phase/step/repeat ranges, one range per module
  call, and the peak-memory mark; wall time of the profiled region (collect),
  and separately the time to build the op table from it (analyze).

Ratios are per round (paired), then the median and p10-p90 over rounds:
timing/bare, trace/profiler (collect only: the distortion while measuring),
profiler/bare. Analysis cost is reported beside: genprof's op table against
torch's `key_averages(group_by_input_shape=True)` on the profile of the same
round.

    python scripts/bench_overhead.py --threads 1 --rounds 15           # writes docs/benchmarks.md section
"""

from __future__ import annotations

import argparse
import gc
import os
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genprof import api, store  # noqa: E402
from genprof.profiler import session  # noqa: E402
from genprof.profiler.timers import synchronize  # noqa: E402
from genprof.phases import NullPhases  # noqa: E402

CONDITIONS = ("bare", "timing", "profiler", "trace")


class Clock:
    """Wall time and process CPU time (all threads) of a block; CPU time leaves out time the VM was not
    running us (other tenants, steal), which dominates the noise on a shared machine."""

    def __enter__(self) -> "Clock":
        gc.collect()
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.w0, time.process_time() - self.c0


def bare(built, device) -> Clock:
    synchronize(device)
    with Clock() as c:
        with torch.inference_mode():
            built.run(NullPhases())
        synchronize(device)
    return c


def timing(built, device) -> Clock:
    with Clock() as c:
        session.measure_timing(built, device, repeats=1, warmup=0)
    return c


def profiler_alone(built, device) -> tuple[Clock, float, int]:
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    prof = torch.profiler.profile(activities=acts, record_shapes=True)
    with Clock() as c:
        with session._quiet_stderr():
            prof.start()
        with torch.inference_mode():
            built.run(NullPhases())
        synchronize(device)
        with session._quiet_stderr():
            prof.stop()
    t0 = time.perf_counter()
    prof.key_averages(group_by_input_shape=True)
    return c, time.perf_counter() - t0, len(prof.profiler.kineto_results.events())


def trace(built, device) -> tuple[Clock, float, int]:
    gc.collect()
    m = session.measure_trace(built, device, repeats=1, warmup=0, run={})
    c = Clock()
    c.wall, c.cpu = m.profiler["collect_s"], m.profiler["collect_cpu_s"]
    return c, m.profiler["analyze_s"], m.profiler["events"]


def bench(workload: str, size: str, rounds: int, warmup: int, device: torch.device, extra: dict) -> dict:
    spec = api.make_spec(workload, size=size, device=str(device), **extra)
    built = api.build(spec)
    for _ in range(warmup):
        bare(built, device)
    samples: dict[str, list[float]] = {c: [] for c in CONDITIONS}
    cpu: dict[str, list[float]] = {c: [] for c in CONDITIONS}
    analysis = {"genprof_s": [], "key_averages_s": [], "trace_events": [], "profiler_events": []}
    for r in range(rounds):
        order = CONDITIONS[r % 4:] + CONDITIONS[:r % 4]
        for c in order:
            if c == "bare":
                clock = bare(built, device)
            elif c == "timing":
                clock = timing(built, device)
            elif c == "profiler":
                clock, ka, n = profiler_alone(built, device)
                analysis["key_averages_s"].append(ka)
                analysis["profiler_events"].append(n)
            else:
                clock, an, n = trace(built, device)
                analysis["genprof_s"].append(an)
                analysis["trace_events"].append(n)
            samples[c].append(clock.wall)
            cpu[c].append(clock.cpu)
        print(f"  {workload} round {r + 1}/{rounds}: " +
              ", ".join(f"{c} {samples[c][-1]:.3f}s" for c in CONDITIONS), flush=True)
    def ratios(t: dict[str, list[float]]) -> dict[str, dict[str, float]]:
        s = {c: np.asarray(v) for c, v in t.items()}
        r = {"timing/bare": s["timing"] / s["bare"], "trace/profiler": s["trace"] / s["profiler"],
             "profiler/bare": s["profiler"] / s["bare"], "trace/bare": s["trace"] / s["bare"]}
        return {k: {"median": float(np.median(v)), "p10": float(np.percentile(v, 10)),
                    "p90": float(np.percentile(v, 90))} for k, v in r.items()}

    return {
        "workload": workload, "size": size, "rounds": rounds,
        "median_s": {c: float(np.median(v)) for c, v in samples.items()},
        "median_cpu_s": {c: float(np.median(v)) for c, v in cpu.items()},
        "ratios": ratios(samples), "cpu_ratios": ratios(cpu),
        "analysis": {k: float(np.median(v)) for k, v in analysis.items()},
    }


def to_markdown(results: list[dict], env: dict, command: str) -> str:
    lines = [
        "| workload | size | clock | bare s | timing / bare | profiler / bare | trace / profiler | trace / bare "
        "| events (trace) | op table s | key_averages s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def r(x: dict) -> str:
        return f"{x['median']:.3f} ({x['p10']:.3f}-{x['p90']:.3f})"

    for res in results:
        a = res["analysis"]
        for clock, q, med in (("wall", res["ratios"], res["median_s"]), ("CPU", res["cpu_ratios"], res["median_cpu_s"])):
            lines.append(f"| {res['workload']} | {res['size']} | {clock} | {med['bare']:.3f} | {r(q['timing/bare'])} "
                         f"| {r(q['profiler/bare'])} | {r(q['trace/profiler'])} | {r(q['trace/bare'])} "
                         f"| {int(a['trace_events']):,} | {a['genprof_s']:.3f} | {a['key_averages_s']:.3f} |")
    return "\n".join([
        f"Measured {env['date']} on {env['machine']}, torch {env['torch']}, {env['threads']} thread(s); "
        f"median of {results[0]['rounds']} paired rounds (p10-p90 in brackets). Wall: perf_counter; CPU: "
        "process CPU time of all threads (leaves out time the VM did not run us).", "",
        f"    {command}", "", *lines, ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="stable-diffusion,llm")
    ap.add_argument("--size", default="small")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=None, help="Diffusion steps (default: the preset's).")
    ap.add_argument("--json", type=Path, default=ROOT / "docs" / "results" / "bench-overhead.json")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md",
                    help="Rewrite the overhead section of this file ('' to skip).")
    args = ap.parse_args()
    if args.rounds < 5:
        ap.error("--rounds must be at least 5")
    torch.set_num_threads(args.threads)
    api._quiet_libraries()
    device = torch.device(args.device)
    load_before = os.getloadavg()[0]  # before this script loads the machine itself
    results = []
    for w in args.workloads.split(","):
        extra = {"steps": args.steps} if args.steps and w != "llm" else {}
        results.append(bench(w, args.size, args.rounds, args.warmup, device, extra))
    env = {**store.environment(args.device), "date": time.strftime("%Y-%m-%d"),
           "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} of {os.cpu_count()} cores",
           "threads": torch.get_num_threads(), "load_before": load_before}
    command = "python scripts/bench_overhead.py " + " ".join(sys.argv[1:])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"environment": env, "command": command, "results": results}, indent=2))
    md = to_markdown(results, env, command)
    print(md)
    if args.doc != Path(""):
        replace_section(args.doc, "overhead", md)


def replace_section(doc: Path, name: str, body: str) -> None:
    """Rewrite the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in doc (appended if absent)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = doc.read_text() if doc.exists() else ""
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    doc.write_text(text)


if __name__ == "__main__":
    main()
