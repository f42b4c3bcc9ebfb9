"""What the `genprof` command line prints: run breakdowns, tables of DataFrames, projections.

The consoles (`out` for results, wide when piped; `err` for progress and
notes) and the printing helpers of genprof.cli. Parsing, checks and exit codes
are in genprof.cli; nothing here decides an exit code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

# Wide when not a terminal, so piped output is never cut to 80 columns.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)


def project(run_dir: Path, hw_name: str, eff_compute, eff_memory, precision, out_proj, threads) -> None:
    from genprof import store
    from genprof.roofline import get_profile, project_run, summarize
    from genprof.roofline.hardware import canonical_name
    from genprof.roofline.project import comparable

    meta = store.read_run(run_dir)
    if canonical_name(hw_name) == "local" and threads is None:
        threads = (meta.get("environment") or {}).get("torch_threads")
    hw = get_profile(hw_name, threads=threads).with_overrides(eff_compute=eff_compute, eff_memory=eff_memory)
    proj, meta = project_run(run_dir, hw, precision)
    measured = comparable(meta, hw)
    prec = str(proj["precision"].iloc[0]) if len(proj) else "-"
    out.print(f"projection on {hw.label}: {hw.flops(prec) / 1e12:.4g} TFLOP/s ({prec}, eff {hw.eff_compute:.2f}), "
              f"{hw.bandwidth / 1e9:.4g} GB/s (eff {hw.eff_memory:.2f}), ridge {hw.ridge(prec):.3g} FLOP/byte"
              + (f", launch {hw.launch_s * 1e6:.3g} us/kernel" if hw.kind == "gpu" else
                 f", dispatch {hw.op_overhead_s * 1e6:.3g} us/op"))
    for by, title in (("family", "projected time by operator family (per repeat)"),
                      ("phase", "projected time by phase (per repeat)")):
        s = summarize(proj, by)
        t = Table(title=title)
        cols = [by, "projected s", "share", "compute-bound", "GFLOP", "MB moved"] + (
            ["measured s", "error"] if measured else [])
        for c in cols:
            t.add_column(c, justify="left" if c == by else "right")
        for r in s.itertuples():
            row = [str(getattr(r, by)), f"{r.time_s:.4g}", f"{100 * r.share:.1f}%",
                   "—" if r.compute_fraction != r.compute_fraction else f"{100 * r.compute_fraction:.0f}%",
                   f"{r.flops / 1e9:.4g}", f"{r.bytes / 1e6:.4g}"]
            if measured:
                err_ = f"{100 * (r.time_s / r.measured_s - 1):+.0f}%" if r.measured_s > 0 else "—"
                row += [f"{r.measured_s:.4g}", err_]
            t.add_row(*row)
        out.print(t)
    if not measured:
        out.print("(no measured time beside it: the run was not measured on this hardware)")
    if out_proj is not None:
        from genprof.reports import figures as F

        out_proj.mkdir(parents=True, exist_ok=True)
        proj.to_parquet(out_proj / "projection.parquet", index=False)
        written = [out_proj / "projection.parquet"]
        try:
            written += F.save(F.roofline(proj, profiles=[hw]), out_proj / "roofline")
        except F.NoData as e:
            out.print(f"roofline figure not drawn: {e}")
        out.print("wrote: " + ", ".join(str(w) for w in written))


def print_df(title: str, df) -> None:
    t = Table(title=title)
    for c in df.columns:
        t.add_column(str(c), justify="right" if df[c].dtype.kind in "if" else "left")
    for row in df.itertuples(index=False):
        t.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    out.print(t)


def print_run(meta: dict, ops) -> None:
    from genprof.reports import breakdown

    spec, summary = meta["spec"], meta["summary"]
    out.print(f"{spec['workload']} size={spec['size']} batch={spec['batch']} device={spec['device']} "
              f"dtype={spec['dtype']} mode={spec['mode']} opts={'+'.join(spec['optimizations']) or 'baseline'} "
              f"repeats={summary['total'].get('n')}")
    t = Table(title="phases (wall time over repeats)")
    for col in ("phase", "median s", "p10 s", "p90 s", "stdev s", "steps"):
        t.add_column(col, justify="right" if col != "phase" else "left")
    for ph, s in list(summary["phases"].items()) + [("total", summary["total"])]:
        nsteps = summary["steps"].get(ph, {}).get("steps_per_repeat", "")
        t.add_row(ph, f"{s['median_s']:.4f}", f"{s['p10_s']:.4f}", f"{s['p90_s']:.4f}", f"{s['stdev_s']:.4f}",
                  str(nsteps))
    out.print(t)
    for k, v in summary.get("derived", {}).items():
        out.print(f"{k}: {v:.6g}")
    if ops is not None and len(ops):
        fam = breakdown(ops, "family")
        t = Table(title="time by operator family (mean over repeats)")
        for col in ("family", "time s", "share", "GFLOP", "MB moved"):
            t.add_column(col, justify="right" if col != "family" else "left")
        for r in fam.itertuples():
            t.add_row(r.family, f"{r.time_s:.4f}", f"{100 * r.share:.1f}%", f"{r.flops / 1e9:.3f}",
                      f"{r.bytes / 1e6:.1f}")
        out.print(t)
        unknown = summary.get("unclassified_ops") or []
        if unknown:
            out.print(f"unclassified ops (family Other): {', '.join(unknown)}")
    mem = summary.get("memory", {})
    if "peak_device_bytes" in mem:
        out.print(f"peak device memory: {mem['peak_device_bytes'] / 2**20:.1f} MiB")
    out.print(f"peak RSS growth: {mem.get('peak_rss_growth_bytes', 0) / 2**20:.1f} MiB")
