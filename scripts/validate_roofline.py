"""Validate the roofline projection against measured runs and write docs/roofline.md.

CPU: every trace-mode run below RUNS (default runs/suite-small) is projected on
the `local` profile (this machine, measured by the micro-benchmark with the
runs' thread count; the per-op dispatch time as the profiler records it, since
the runs were traced) and set beside its measured time per family (op time,
genprof's own overhead left out). With `--gpu-runs DIR`, runs measured on a
GPU are projected on `--gpu-hw` (h200 by default) the same way. Then the
paper-size suite is counted on the meta device (or read from `--paper-runs`)
and projected on A100/H100/H200, with the LLM decode check. The page's host-time
section (scripts/host_projection.py) is kept as it is.

    python scripts/validate_roofline.py                     # full: the small suite, then paper counts
    python scripts/validate_roofline.py --only llm --paper-size tiny --doc /tmp/roofline.md   # smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from genprof import store  # noqa: E402
from genprof.reports.markdown import to_markdown  # noqa: E402
from genprof.roofline import PROFILES, get_profile, measure_local, project, summarize  # noqa: E402
from genprof.study import paper  # noqa: E402
from genprof.roofline.hardware import GPU_LAUNCH_S, H200_EFF_COMPUTE, H200_EFF_MEMORY  # noqa: E402


def validate(root: Path, hw_for, only: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per workload and family: measured, projected, error; per workload totals)."""
    runs = store.load_runs(root, "runs")
    runs = runs[(runs["status"] == "ok") & (runs["mode"] == "trace") & (runs["optimizations"] == "baseline")]
    if only:
        runs = runs[runs["workload"].isin(only)]
    fam_rows, tot_rows = [], []
    for r in runs.sort_values("workload").itertuples():
        meta = store.read_run(r.path)
        ops = store.read_table(r.path, store.OPS)
        hw = hw_for(meta)
        p = project(ops, hw, meta["spec"]["dtype"])
        s = summarize(p[p["family"] != "Overhead"], "family")
        for f in s.itertuples():
            fam_rows.append({"workload": r.workload, "family": f.family, "measured_s": f.measured_s,
                             "projected_s": f.time_s,
                             "error": (f.time_s / f.measured_s - 1) if f.measured_s > 0 else float("nan")})
        overhead = ops.loc[ops["family"] == "Overhead", "total_time_s"].sum() / max(ops["repeat"].nunique(), 1)
        m, pr = s["measured_s"].sum(), s["time_s"].sum()
        tot_rows.append({"workload": r.workload, "measured_op_s": m, "projected_op_s": pr, "error": pr / m - 1,
                         "genprof_overhead_s": overhead, "hw": hw.label})
    return pd.DataFrame(fam_rows), pd.DataFrame(tot_rows)


def per_family(fam: pd.DataFrame) -> pd.DataFrame:
    """Pooled over workloads: measured and projected seconds per family, error, and the spread of errors."""
    g = fam.groupby("family").agg(measured_s=("measured_s", "sum"), projected_s=("projected_s", "sum"),
                                  median_error=("error", "median"), min_error=("error", "min"),
                                  max_error=("error", "max"), workloads=("workload", "nunique")).reset_index()
    g.insert(3, "error", g["projected_s"] / g["measured_s"] - 1)
    return g.sort_values("measured_s", ascending=False)


def pct_cols(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(**{c: df[c].map(lambda v: f"{100 * v:+.0f}%" if v == v else "—")
                        for c in df.columns if "error" in c})


def profiles_md() -> str:
    """The GPU profiles' datasheet peaks, as the doc lists them."""
    parts = []
    for i, name in enumerate(paper.GPU_NAMES):
        hw = PROFILES[name]
        tf = [f"{hw.peak_flops[k] / 1e12:.3g}" for k in ("fp32", "tf32", "bf16")]
        peaks = ", ".join(f"{k} {v}" for k, v in zip(("fp32", "tf32", "bf16"), tf)) if i == 0 else " / ".join(tf)
        parts.append(f"{hw.label} ({peaks} TFLOP/s; {hw.bandwidth_Bps / 1e12:.3g} TB/s)")
    return ", ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "suite-small")
    ap.add_argument("--gpu-runs", type=Path, default=None)
    ap.add_argument("--gpu-hw", default="h200")
    ap.add_argument("--paper-runs", type=Path, default=None, help="meta counts from an earlier `genprof paper`")
    ap.add_argument("--paper-size", default="paper")
    ap.add_argument("--count-out", type=Path, default=ROOT / "runs" / "paper" / "count-paper")
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "roofline.md")
    args = ap.parse_args()
    t0 = time.time()

    local_cache: dict[int, object] = {}
    plain_overhead: dict[int, float] = {}  # the plain (untraced) dispatch time, for the doc

    def local_for(meta):
        threads = int((meta.get("environment") or {}).get("torch_threads") or 1)
        if threads not in local_cache:
            prof = measure_local(threads=threads)
            traced = prof.measured_on.get("op_overhead_traced_s")
            local_cache[threads] = prof.with_overrides(op_overhead_s=traced)
            plain_overhead[threads] = prof.op_overhead_s
        return local_cache[threads]

    fam, tot = validate(args.runs, local_for, args.only)
    first = next(iter(local_cache), None)
    local = local_cache[first] if first is not None else None
    gpu_md = "No GPU runs were given (`--gpu-runs DIR`, runs with `--device cuda`): not validated on a GPU yet."
    if args.gpu_runs:
        gfam, gtot = validate(args.gpu_runs, lambda meta: get_profile(args.gpu_hw), args.only)
        if not gfam.empty:
            gpu_md = (f"Projected on {PROFILES[args.gpu_hw].label} against runs in `{args.gpu_runs}`.\n\n"
                      + to_markdown(pct_cols(per_family(gfam))) + "\n\n" + to_markdown(pct_cols(gtot)))

    if args.paper_runs:
        counted = {}
        for d in store.run_dirs(args.paper_runs):
            meta = store.read_run(d)
            if meta["status"] != "ok" or meta["spec"]["device"] != "meta":
                continue
            w = meta["spec"]["workload"]
            if args.only and w not in args.only:
                continue
            ops = store.read_table(d, store.OPS)
            counted[w] = {"path": d, "ops": ops, "meta": meta,
                          "counts": paper.full_counts(w, meta["spec"]["size"], ops)}
    else:
        counted = paper.count_suite(args.count_out, size=args.paper_size, names=args.only or None,
                                    on_start=lambda n: print(f"counting {n} ({args.paper_size}, meta)", flush=True))
    proj = paper.project_suite(counted)
    fam_tables = "\n\n".join(
        f"### {PROFILES[h].label}\n\n" + to_markdown(
            (lambda t: t.assign(**{c: t[c].map(lambda v: f"{100 * v:.0f}%") for c in t.columns[2:]}))(
                paper.family_table(proj, h))) for h in paper.GPU_NAMES) if not proj.empty else "(not counted)"
    llm = paper.llm_check(counted, proj) if not proj.empty else pd.DataFrame()
    llm_md = to_markdown(pct_cols(llm), floatfmt=".4g") \
        if not llm.empty else "(the llm workload was not counted)"
    cmd = "python scripts/validate_roofline.py " + " ".join(sys.argv[1:])
    h200 = PROFILES["h200"]
    launch_us = f"{GPU_LAUNCH_S * 1e6:.3g} us"
    hw_line = (f"{local.label}: float32 GEMM {local.peak_flops['fp32'] / 1e9:.3g} GFLOP/s, copy "
               f"{local.bandwidth_Bps / 1e9:.3g} GB/s, dispatch {local.op_overhead_s * 1e6:.3g} us/op as traced "
               f"(plain {plain_overhead[first] * 1e6:.3g} us), torch "
               f"{local.measured_on.get('torch')}, measured {local.measured_on.get('measured')}") if local else "—"
    text = f"""# The roofline projection, validated

Reproduce: `{cmd.strip()}` ({time.time() - t0:.0f} s here).

`genprof project RUN_DIR --hw a100|h100|h200|local` predicts the time of every op of a run from its
FLOPs and bytes (`genprof/roofline/project.py`):

- per call, `t = max(F / (P * e_c), B / (W * e_m))`, P the datasheet peak for the run's precision
  (float32 -> fp32, bfloat16/float16 -> bf16), W the memory bandwidth, e_c and e_m the fractions
  of them a large GEMM and a device copy reach (`--eff-compute`, `--eff-memory` override them);
- on a CPU every op also pays a dispatch time, in series; ops with neither FLOPs nor bytes
  (views) cost only that;
- on a GPU kernels are issued asynchronously: per step, when issuing the kernels takes longer
  than running them (`n_kernels x {launch_us}` for graph-captured or compiled execution), the
  difference is an `Overhead` row `[launch]`;
- an op is compute-bound when its intensity F/B is at or above the ridge `P e_c / (W e_m)`;
- genprof's own `[overhead]` rows (Python between ops) are not projected.

Profiles (datasheet, dense): {profiles_md()}.
The efficiencies come from figures reported from an earlier H200 run, not reproduced by this
repository yet (`scripts/gpu_check.py` measures them on a GPU): a bf16 8192³ matmul at about
{h200.measured_flops["bf16"] / 1e12:.3g} TFLOP/s and a device copy at about {h200.measured_bandwidth_Bps / 1e12:.3g} TB/s, so e_c = {H200_EFF_COMPUTE:.2f} and e_m = {H200_EFF_MEMORY:.2f}, which A100 and
H100 take too (no measurement of theirs). `local` is this machine measured in a few seconds
(cached under ~/.cache/genprof): {hw_line}.

## Validation on the CPU (size small, local profile)

Every baseline trace-mode run in `{args.runs.relative_to(ROOT) if args.runs.is_relative_to(ROOT) else args.runs}`,
projected on the local profile and compared with its measured op time per family (mean over
repeats; genprof's overhead rows left out on both sides). Error = projected / measured - 1.

Per family, pooled over workloads (median, min, max: over the workloads' own errors):

{to_markdown(pct_cols(per_family(fam))) if not fam.empty else "(no runs)"}

Per workload (op time; genprof's overhead beside it):

{to_markdown(pct_cols(tot)) if not tot.empty else "(no runs)"}

Per workload and family:

{to_markdown(pct_cols(fam)) if not fam.empty else "(no runs)"}

## Validation on a GPU

{gpu_md}

## What the model does not capture

- **Small GEMMs.** One compute peak per machine, from a large GEMM. At `small` sizes many
  matmuls are too small to reach it (the projection is then optimistic for Linear, Attention and
  Convolution); on the CPU some reach more than the benchmark did (packed weights, better
  blocking), and the measured peak varies with the load from other processes.
- **Caches.** Bytes are one pass over each input and the output (docs/op-table.md). On a CPU,
  small tensors live in cache and elementwise ops run faster than DRAM bandwidth; large ones can
  be read more than once (convolution im2col, attention tiles). GPU L2 reuse is not modelled.
- **Per-op dispatch and framework time.** The CPU dispatch time is one number from a tiny
  `add`; ops with more arguments (norms, convolutions with their layout conversion, `to`,
  indexing) cost more before they start. Normalization and Memory ops are the ones it misses
  most: their work is small and their time is mostly dispatch and layout.
- **Threading.** The benchmark uses the runs' thread count; ops that do not parallelize (or
  parallelize badly at small shapes) run slower than the measured peak.
- **Ops counted with 0 FLOPs.** Elementwise, norm and softmax arithmetic counts as bytes only;
  fine on a GPU, visible on a CPU where e.g. `exp` and `erf` are compute-heavy.
- **What a trace does not say.** Bytes come from each op's recorded inputs and its outputs
  replayed on the meta device (docs/op-table.md). A tensor list's dtype is not recorded (taken
  as the run's float dtype), nor are `index`'s indices, data-dependent outputs (`nonzero`) or the
  device of `to(device)` (host-to-device copies count 0); runs counted before embedding lookups
  were counted by rows have their embedding bytes recomputed from the shapes.
- **GPU specifics.** Kernel fusion, tensor-core shape alignment, wave quantization, tails,
  launch gaps other than the fixed {launch_us}, clocks and power limits, and concurrency between
  streams. Causal attention is counted at its unmasked (query, key) pairs, the work of a fused
  kernel; the kernel computes its diagonal blocks in full, a little more.

## Projected operator-family breakdown at {args.paper_size} size (bfloat16, batch 1)

Counted on the meta device (1 step or 3 tokens, extended to the full run: equal steps for
diffusion and MaskGIT, linear growth for decode), share of projected time per family.

{fam_tables}

## LLM decode per token: projection against weights + KV cache over bandwidth

By hand: (parameters x 2 bytes + K and V of every layer at the first decode step's KV length)
/ effective bandwidth. Prefill and decode compute-bound shares are of projected op time.

{llm_md}
"""
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    old = args.doc.read_text() if args.doc.is_file() else ""
    begin, end = "<!-- host-time:begin -->", "<!-- host-time:end -->"
    if begin in old and end in old:  # the host-time section is scripts/host_projection.py's: keep it
        text = text.rstrip() + "\n\n" + old[old.index(begin):old.index(end) + len(end)] + "\n"
    args.doc.write_text(text)
    print(f"wrote {args.doc} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
