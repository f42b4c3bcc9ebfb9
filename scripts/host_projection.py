"""Host time of eager PyTorch: check the host profile on this CPU and set Llama-2-7B decode beside published rates.

Writes the "Host time" section of docs/roofline.md (between its markers; the
rest of the page is scripts/validate_roofline.py's):

1. on this CPU, without the profiler: the decode step of the llm at tiny widths
   and depths the profile was not fitted at (2 and 8 layers; it was fitted at
   32), its plain thread CPU time against the profile's prediction from the
   same run's op table;
2. the kernels of one Llama-2-7B decode step (paper size, meta device) counted
   by a TorchDispatchMode (ops that return new memory), against the table's;
3. what a real A100 host spends per launch, per op and per kernel, read from a
   torch.profiler trace recorded elsewhere (shared/traces/a100-ddp-train.json.gz);
4. Llama-2-7B decode (bf16, batch 1) projected on every GPU profile in every
   regime, beside the published eager and compiled + CUDA-graph rates on an
   A100, with how the A100 numbers move when the stated constants move.

    python scripts/host_projection.py                 # counts Llama-2-7B on the meta device (about a minute)
    python scripts/host_projection.py --paper-runs runs/paper/count-paper   # reuse `genprof paper`'s count
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from genprof import api, store  # noqa: E402
from genprof.reports.markdown import to_markdown  # noqa: E402
from genprof.roofline import PROFILES  # noqa: E402
from genprof.roofline import overlap  # noqa: E402
from genprof.roofline.hardware import GPU_NAMES  # noqa: E402
from genprof.roofline.host import load_host  # noqa: E402

BEGIN, END = "<!-- host-time:begin -->", "<!-- host-time:end -->"
# PyTorch blog "Accelerating Generative AI with PyTorch II: GPT, Fast" (2023-11-30): Llama-2-7B, batch 1,
# A100-80GB power-limited to 330 W. gpt-fast README: "peak bandwidth is about 1700 GB/s" on that GPU.
PUBLISHED = {"eager": 25.5, "graphs+fused-norm": 107.0}
GPT_FAST_BANDWIDTH = 1700e9


def depth_check(host, depths=(2, 8, 32)) -> pd.DataFrame:
    """Plain CPU time of the tiny-width llm's decode step at several depths, against the profile."""
    import torch

    from genprof.roofline.hardware import measure_local
    from genprof.study import host as H

    torch.set_num_threads(1)
    local = measure_local(threads=1)
    costs = pd.Series(host.op_s)
    rows = []
    for layers in depths:
        plain, ops = H.measure_workload("llm", repeats=7, params={"config": {"num_hidden_layers": layers}})
        u = H.units(H.host_rows(ops, local), plain, costs, host.default_op_s)
        u = u[(u["phase"] == "decode") & (u["step"] >= 0)]
        pred = H.predict(u, host.python_s, host.default_python_s)
        rows.append({"layers": layers, "fitted": layers == 32, "ops/step": float(u["ops"].median()),
                     "module calls/step": float(u["modules"].median()),
                     "measured ms/step": 1e3 * float(u["cpu_s"].median()),
                     "predicted ms/step": 1e3 * float(pred.median()),
                     "error": float(pred.median() / u["cpu_s"].median() - 1)})
    return pd.DataFrame(rows)


def count_llm(paper_runs: Path | None, out: Path) -> tuple[pd.DataFrame, dict]:
    """The Llama-2-7B count (meta device, bf16, 3 decode tokens): from `paper_runs` or made now."""
    if paper_runs:
        for d in store.run_dirs(paper_runs):
            meta = store.read_run(d)
            if meta["status"] == "ok" and meta["spec"]["workload"] == "llm" and meta["spec"]["device"] == "meta" \
                    and meta["spec"]["size"] == "paper":
                return store.read_table(d, store.OPS), meta
    res = api.run(api.make_spec("llm", size="paper", device="meta", dtype="bfloat16", repeats=1, warmup=0, tokens=3),
                  out=out)
    if not res.ok:
        raise SystemExit(f"counting Llama-2-7B failed: {res.meta.get('reason')}")
    return res.ops, res.meta


def dispatch_count() -> int:
    """Kernels of decode step 1 of Llama-2-7B on the meta device, as a TorchDispatchMode sees them: ops
    that return a new tensor which is not a view of an input (a `to` that changes the dtype is seen as
    `aten::to`, an op that may return its input, and counts when it does not)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        kernels = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            o = next((t for t in (out if isinstance(out, (list, tuple)) else [out]) if isinstance(t, torch.Tensor)), None)
            i = next((a for a in args if isinstance(a, torch.Tensor)), None)
            new = o is not None and all(o is not a for a in args)
            if new and (not func.is_view or (i is not None and (o.dtype, o.device) != (i.dtype, i.device))):
                Count.kernels += 1
            return out

    class StepOne:
        phase_name = ""

        @contextlib.contextmanager
        def phase(self, name):
            self.phase_name = name
            yield

        @contextlib.contextmanager
        def step(self, index):
            with Count() if (self.phase_name, index) == ("decode", 1) else contextlib.nullcontext():
                yield

    built = api.build(api.make_spec("llm", size="paper", device="meta", dtype="bfloat16", tokens=2))
    with torch.inference_mode():
        built.run(StepOne())
    return Count.kernels


def a100_trace(host, path: Path) -> dict:
    """Launch, per-op and per-kernel host and device times of a real A100 trace (torch.profiler, training)."""
    ev = json.load(gzip.open(path))["traceEvents"]
    launches = np.array([e["dur"] for e in ev if e.get("name") == "cudaLaunchKernel" and "dur" in e], float)
    kernels = [e for e in ev if e.get("cat") == "kernel" and "dur" in e]
    kdur = np.array([e["dur"] for e in kernels], float)
    by_thread, lk = defaultdict(list), defaultdict(list)
    for e in ev:
        if e.get("cat") == "cpu_op" and "dur" in e:
            by_thread[(e["pid"], e["tid"])].append(e)
        elif e.get("name") == "cudaLaunchKernel" and "dur" in e:
            lk[(e["pid"], e["tid"])].append(e["ts"])
    extra, in_place = [], []
    for tid, es in by_thread.items():
        es.sort(key=lambda e: (e["ts"], -e["dur"]))
        starts, end = np.sort(lk.get(tid, [])), -1.0
        for e in es:  # top-level ops of the thread that launched exactly one kernel
            if e["ts"] < end:
                continue
            end = e["ts"] + e["dur"]
            n = np.searchsorted(starts, end) - np.searchsorted(starts, e["ts"])
            if n == 1 and e["name"] in host.op_s:
                x = e["dur"] - 1e6 * host.op_s[e["name"]]
                extra.append(x)
                if e["name"].endswith("_"):
                    in_place.append(x)
    corr = {e["args"].get("correlation"): e for e in ev if e.get("name") == "cudaLaunchKernel" and "args" in e}
    gaps, streams = [], defaultdict(list)
    for e in kernels:
        streams[(e["pid"], e["tid"])].append(e)
    for ks in streams.values():
        ks.sort(key=lambda e: e["ts"])
        for a, b in zip(ks, ks[1:]):
            lb = corr.get(b["args"].get("correlation"))
            if lb is not None and lb["ts"] + lb["dur"] < a["ts"]:  # b was queued before a started
                gaps.append(b["ts"] - a["ts"] - a["dur"])
    q = lambda a, p: float(np.percentile(a, p)) if len(a) else float("nan")  # noqa: E731
    return {"launches": len(launches), "launch_p10": q(launches, 10), "launch_median": q(launches, 50),
            "launch_p90": q(launches, 90), "ops": len(extra), "extra_median": q(extra, 50),
            "extra_p25": q(extra, 25), "extra_p75": q(extra, 75), "in_place": len(in_place),
            "in_place_median": q(in_place, 50), "kernels": len(kdur), "kernel_p1": q(kdur, 1),
            "kernel_median": q(kdur, 50), "gaps": len(gaps), "gap_median": q(gaps, 50), "gap_p10": q(gaps, 10)}


def anchor(ops: pd.DataFrame, host, trace: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(Llama-2-7B per profile and regime, A100 beside the published rates with sensitivities)."""
    rows = []
    for name in GPU_NAMES:
        ph = overlap.phases(ops, PROFILES[name], host, "bfloat16")
        for r in ph[ph["phase"].isin(["prefill", "decode"])].itertuples():
            per = r.steps if r.phase == "decode" else 1
            rows.append({"hw": PROFILES[name].label, "phase": r.phase, "regime": r.regime,
                         "kernels/step": r.kernels_per_step, "device ms": 1e3 * r.device_s / per,
                         "busy ms": 1e3 * r.busy_s / per, "host ms": 1e3 * r.host_s / per,
                         "combined ms": 1e3 * r.combined_s / per, "verdict": overlap.describe(r.bound, r.ratio),
                         "tokens/s": per / r.combined_s if r.phase == "decode" else float("nan")})
    table = pd.DataFrame(rows)
    a100 = PROFILES["a100"]
    variants = [("as projected", a100, host),
                (f"launch {trace['in_place_median']:.3g} us (CUDA path of in-place ops in the A100 trace)", a100,
                 host.with_overrides(launch_s=trace["in_place_median"] * 1e-6)),
                (f"kernel floor {trace['kernel_p1']:.3g} us (shortest kernels in the A100 trace)",
                 a100.with_overrides(launch_s=trace["kernel_p1"] * 1e-6), host),
                ("bandwidth 1.7 TB/s (gpt-fast's A100 at 330 W)",
                 a100.with_overrides(eff_memory=GPT_FAST_BANDWIDTH / a100.bandwidth_Bps), host)]
    side = []
    for label, hw, hp in variants:
        ph = overlap.phases(ops, hw, hp, "bfloat16", regimes=tuple(PUBLISHED)).set_index(["phase", "regime"])
        row = {"A100 projection": label}
        for regime, published in PUBLISHED.items():
            r = ph.loc[("decode", regime)]
            rate = r["steps"] / r["combined_s"]
            row[f"{regime} tokens/s"] = rate
            row[f"{regime} / published"] = rate / published
        side.append(row)
    return table, pd.DataFrame(side)


def section(host, depth: pd.DataFrame, kernels_table: float, kernels_dispatch: int, trace: dict,
            table: pd.DataFrame, side: pd.DataFrame, cmd: str, seconds: float, load: tuple) -> str:
    m = host.measured_on
    checks = pd.DataFrame(host.calibration["checks"])
    prof = pd.DataFrame(host.calibration["profiler"])
    fmt_pct = lambda v: f"{100 * v:+.0f}%" if v == v else "—"  # noqa: E731
    pct = lambda df, cols: df.assign(**{c: df[c].map(fmt_pct) for c in cols})  # noqa: E731
    prof = prof.assign(plain_us=1e6 * prof["plain_s"], recorded_us=1e6 * prof["recorded_s"],
                       profile_us=prof["op"].map(lambda o: 1e6 * host.op_s.get(o, float("nan"))))
    prof = prof[["op", "plain_us", "recorded_us", "profile_us"]]
    checks = checks.assign(python_us_per_module=1e6 * checks["python_per_module_s"])
    checks = checks[["workload", "units", "cpu_s", "roof_share", "python_us_per_module", "fit_error",
                     "fit_worst_unit_error", "left_out_error"]]
    a100 = table[(table["hw"] == PROFILES["a100"].label) & (table["phase"] == "decode")].set_index("regime")
    side_fmt = side.assign(**{c: side[c].map(lambda v: f"{v:.2f}×") for c in side.columns if "/ published" in c})
    return f"""{BEGIN}
## Host time: eager dispatch, CUDA graphs and the verdict

Reproduce: `{cmd}` ({seconds:.0f} s here, load average {load[0]:.1f} on {os.cpu_count()} CPUs; the
host profile itself: `genprof host-profile`, {m.get('seconds')} s, load average
{m.get('load_average_before', ['?'])[0]} when it started). A GPU measurement of the eager decode
rate is still to be made: no GPU was available here, and the rates below are projections.

The roofline prices each op on the GPU as if the host kept up. For eager PyTorch at batch 1 it often
does not: the host runs Python, the dispatcher and the CUDA launch for every op, and the GPU waits.
`genprof project RUN --hw a100|h100|h200` and `genprof paper` therefore also give per phase
(`genprof/roofline/overlap.py`):

- **device time**: the roofline as above (`device s`); in the overlap each kernel occupies the
  device for at least the profile's `launch_s` ({1e6 * PROFILES['a100'].launch_s:.3g} us; the A100 trace below
  has no kernel shorter than {trace['kernel_p1']:.3g} us), which gives the device's **busy time**;
- **host time**, eager: per op its host cost on the host profile's CPU (by op kind) plus, when it
  runs a kernel, the CUDA launch cost ({1e6 * host.launch_s:.3g} us, stated: {host.sources['launch_s']});
  per module call the Python time of the workload's code; with CUDA graphs one replay per step
  ({1e6 * host.graph_replay_s:.3g} us, stated: {host.sources['graph_replay_s']});
- **combined time** from a queue: the host issues the ops in order, the device starts a kernel when
  it has been issued and the previous one is done, and the end of every step (reading a token) drains
  the queue; so a step takes `max(H, max_i(issue_i + device time from kernel i on))`;
- **verdict**: host-bound when the host time exceeds the device's busy time, by their ratio;
- **what-if rows**: `eager+fused-norm` (each normalization module call as one kernel: one dispatch
  and launch, one pass over the activations), `graphs` (the same kernels replayed from a CUDA
  graph), `graphs+fused-norm` (what compiling with CUDA graphs buys at least: compilation also
  fuses the other elementwise chains, which this does not model).

### The host profile ({host.cpu}, measured by genprof on this machine)

`genprof/assets/hosts/{host.name}.json`, made by `genprof host-profile` (`genprof/study/host.py`) on
{host.cpu} (family {m.get('cpu_family', '?')} model {m.get('cpu_model', '?')}, {m.get('cpu_mhz', '?')} MHz, KVM guest),
torch {m.get('torch')}, Python {m.get('python')}, {m.get('threads')} thread, {m.get('measured')}, while the
machine was shared: load average {m.get('load_average_before')} (1, 5, 15 min) on {m.get('cpu_count')} CPUs.
Every host number here comes from that loaded machine; times are thread CPU time where they could be
(a preempted process's wall time counts the preemption), but caches and memory were shared too. Run
`genprof host-profile` on a quiet machine to replace it (about a minute).

Why not the meta device: genprof's meta runs execute the dispatch path without compute, but in this
torch build the Meta kernels of elementwise ops are Python reference implementations
(`torch/_meta_registrations.py`), about 230 us for an add against about 1.3 us for the same add on
the CPU: their self time measures Python, not dispatch. The profile is measured instead from
genprof's own traced runs of the suite at `tiny` size on the CPU (the llm at its paper depth, 32
layers, where the host time per op is higher than at 2 layers), with the kernels' work taken out by
the `local` roofline:

- per op kind, the median over calls of the op's traced time (with the ops it calls: linear ->
  addmm) minus its roofline time: {len(host.op_s)} kinds, median {1e6 * host.default_op_s:.3g} us;
- per workload, the Python per module call, fitted so that ops + Python match the plain (unprofiled)
  thread CPU time of every step. The traced `[overhead]` rows are not used for it: besides Python
  they hold the profiler's own cost of recording each event, several times the Python.

What the profiler does to an op's own time (plain: a loop of calls, no profiler, Python binding
included; recorded: the duration the profiler records; profile: the cost the profile holds, from
the workloads, colder caches and other shapes):

{to_markdown(prof, floatfmt=".3g")}

Ops that call other ops (linear, mean, attention, embedding) are recorded longer than they run
plain (the profiler records their children inside them); leaf ops shorter (the Python binding is
outside the recorded range). The fit against plain CPU time puts the total right per workload; the
split between op costs and Python per module call carries this error, so the `fused-norm` what-if,
which removes ops, may overstate its gain where the removed ops are composite (`mean`).

Checks against plain CPU time on this CPU (error = predicted / measured - 1): in the fit (every
workload's total, and its worst step or phase), and left out of the fit (its op costs from the other
workloads, its Python per module call their median, as for a workload the profile has never seen):

{to_markdown(pct(checks, ['fit_error', 'fit_worst_unit_error', 'left_out_error']), floatfmt=".3g")}

The Python per module call differs by an order of magnitude between code bases (the decoder engine
calls modules with little Python; diffusers' blocks run much more), so a workload the profile has
not seen is predicted only to within tens of percent.

Independent checks:

- **Depth** (the llm at tiny widths, plain decode steps measured now; the profile was fitted at
  32 layers only, in its own run): the host time per op grows with depth on this CPU (more
  objects than the caches hold), which the profile, fitted at the paper depth, does not follow
  down to shallow models:

{to_markdown(pct(depth, ['error']), floatfmt=".3g")}

- **Kernel count**: one Llama-2-7B decode step (paper size, bfloat16, meta device) launches
  {kernels_table:.0f} kernels by the op table (the projection's count); a TorchDispatchMode counting
  the ops that return new memory sees {kernels_dispatch}.

### What a real A100 host spends (a trace recorded elsewhere)

`shared/traces/a100-ddp-train.json.gz` (HolisticTraceAnalysis test data: an A100 training step
under torch.profiler): cudaLaunchKernel takes {trace['launch_median']:.3g} us (median of {trace['launches']}; p10
{trace['launch_p10']:.3g}, p90 {trace['launch_p90']:.3g}), the launch cost used here. A top-level op that launches one
kernel takes {trace['extra_median']:.3g} us more than this CPU's cost for its kind (median of {trace['ops']}; p25
{trace['extra_p25']:.3g}, p75 {trace['extra_p75']:.3g}): the launch, the CUDA wrapper (allocator, guards), and in that
trace autograd and the profiler; for in-place ops (no autograd node) {trace['in_place_median']:.3g} us ({trace['in_place']} calls).
The device: kernels take at least {trace['kernel_p1']:.3g} us (p1 of {trace['kernels']}), and a queued kernel starts
{trace['gap_median']:.3g} us (median; p10 {trace['gap_p10']:.3g}) after the previous one ends. A CPU stands in for that host
here; the difference is the largest uncertainty of the eager projection.

### Llama-2-7B decode (bfloat16, batch 1, 512-token prompt) against the published rates

Per token (decode) or per prompt (prefill), each profile and regime, on the host profile above:

{to_markdown(table, floatfmt=".4g")}

Beside the PyTorch "GPT, Fast" blog post (2023-11-30: Llama-2-7B at batch 1 on an A100-80GB
power-limited to 330 W): plain eager PyTorch {PUBLISHED['eager']} tokens/s; torch.compile
(mode="reduce-overhead", CUDA graphs, a static KV cache) {PUBLISHED['graphs+fused-norm']} tokens/s. The compiled
rate is compared with `graphs+fused-norm`. Each row changes one stated constant:

{to_markdown(side_fmt, floatfmt=".4g")}

Eager is host-bound on every profile ({a100.loc['eager', 'verdict'] if 'eager' in a100.index else ''} on the A100):
the projection says the A100 would wait for this CPU. The projected eager rate,
{side.iloc[0]['eager tokens/s']:.3g} tokens/s, is {side.iloc[0]['eager / published']:.2f}× the published {PUBLISHED['eager']}: the
projection is too fast by more than a factor 2 with the launch cost alone, and by
{side.iloc[1]['eager / published']:.2f}× with the whole CUDA path of an in-place op from the A100 trace. What it misses: this CPU's dispatch
path stands in for the CUDA one, which the A100 trace shows costs more per kernel than the launch
(the CUDA wrapper, allocator and guards); and the published baseline ran another implementation
(gpt-fast's own model and sampling) under 2023 PyTorch on another host CPU. With CUDA graphs the
host disappears and the rate is the device's ({side.iloc[0]['graphs+fused-norm tokens/s']:.3g} tokens/s,
{side.iloc[0]['graphs+fused-norm / published']:.2f}× the published {PUBLISHED['graphs+fused-norm']}): its error is the
roofline's (bandwidth efficiency assumed from an H200 copy; gpt-fast reports about 1.7 TB/s on its
power-limited A100), plus the kernel floor of the many small kernels that compilation would fuse.

Not modelled: the CPU-side difference between a CUDA op and a CPU op beyond the launch; the latency
from a launch to the kernel's start; kernels that run concurrently; a host that runs ahead across
steps without a synchronization (the engine keeps tokens on the device; the model synchronizes at
each step, which only matters when host and device times are close); torch.compile's fusion
beyond normalization; the Python of a serving loop.
{END}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default=None, help="host profile (default: this CPU's, else the shipped one)")
    ap.add_argument("--paper-runs", type=Path, default=None, help="meta counts from an earlier `genprof paper`")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "host-projection")
    ap.add_argument("--trace", type=Path, default=ROOT.parent / "shared" / "traces" / "a100-ddp-train.json.gz")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "roofline.md")
    args = ap.parse_args()
    t0, load = time.time(), os.getloadavg()
    api._quiet_libraries()
    host = load_host(args.host)
    print("checking the profile across depths", flush=True)
    depth = depth_check(host)
    print("counting Llama-2-7B (meta)", flush=True)
    ops, _ = count_llm(args.paper_runs, args.out)
    line = overlap.segments(ops, PROFILES["a100"], host, dtype="bfloat16")
    kernels_table = float(line.loc[(line["phase"] == "decode") & (line["step"] == 1), "kernels"].iloc[0])
    kernels_dispatch = dispatch_count()
    trace = a100_trace(host, args.trace)
    table, side = anchor(ops, host, trace)
    cmd = "python scripts/host_projection.py " + " ".join(sys.argv[1:])
    text = section(host, depth, kernels_table, kernels_dispatch, trace, table, side, cmd.strip(),
                   time.time() - t0, load)
    doc = args.doc.read_text() if args.doc.is_file() else ""
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + text.strip() + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip() + "\n\n" + text.strip() + "\n"
    args.doc.write_text(doc)
    print(side.to_string())
    print(f"wrote {args.doc} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
