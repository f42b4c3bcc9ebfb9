"""What the `genprof` command line prints: progress, run breakdowns, tables of DataFrames, projections.

The consoles (`out` for results, wide when piped; `err` for progress and
notes), the progress of long commands (`Status`) and the printing helpers of
genprof.cli. Parsing, checks and exit codes are in genprof.cli; nothing here
decides an exit code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from genprof.errors import GenprofError

# Wide when not a terminal, so piped output is never cut to 80 columns.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)


class Status:
    """Progress of a long command: a live bar on stderr when stdout is a terminal; otherwise (a log, a pipe)
    one plain line per event on stdout, with the seconds since the start, so a log shows where a run is."""

    def __init__(self, title: str, total: int | None = None):
        self.title, self.total, self.live = title, total, sys.stdout.isatty()
        self.t0 = 0.0

    def __enter__(self) -> "Status":
        import time

        self.t0 = time.perf_counter()
        if self.live:
            columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
            if self.total:
                columns.append(TextColumn("{task.completed}/{task.total}"))
            self.bar = Progress(*columns, TimeElapsedColumn(), console=err, transient=True)
            self.bar.__enter__()
            self.task = self.bar.add_task(self.title, total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.bar.__exit__(*exc)

    def update(self, description: str, advance: bool = False) -> None:
        import time

        if self.live:
            self.bar.update(self.task, advance=1 if advance else 0, description=description)
        else:
            print(f"[{time.perf_counter() - self.t0:7.1f} s] {description}", flush=True)


def warn_unstable(meta: dict) -> None:
    """One warning line on stderr for a run outside the stability bounds (and one per interference sign)."""
    st = (meta.get("summary") or {}).get("stability") or {}
    name = f"{meta.get('run_id', '')}: "
    if st.get("verdict") == "unstable":
        print(f"warning: {name}unstable timing: {'; '.join(st.get('reasons', []))}", file=sys.stderr)
    for w in st.get("warnings", []):
        print(f"warning: {name}{w}", file=sys.stderr)


def project(run_dir: Path, hw_name: str, eff_compute, eff_memory, precision, out_proj, threads,
             host_name=None, launch_us=None) -> None:
    from genprof.roofline import get_profile, project as project_ops, summarize
    from genprof.roofline.hardware import canonical_name
    from genprof.roofline.project import comparable, read_projectable

    meta, ops = read_projectable(run_dir)
    if canonical_name(hw_name) == "local" and threads is None:
        threads = (meta.get("environment") or {}).get("torch_threads")
    hw = get_profile(hw_name, threads=threads).with_overrides(eff_compute=eff_compute, eff_memory=eff_memory)
    proj = project_ops(ops, hw, meta.get("spec", {}).get("dtype"), precision)
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
    if hw.kind == "gpu":
        from genprof.roofline import host as H, overlap

        if launch_us is not None and not 0 <= launch_us < 1e6:
            raise GenprofError(f"--launch-us must be in [0, 1000000) microseconds, got {launch_us:g}")
        hp = H.load_host(host_name).with_overrides(launch_s=None if launch_us is None else launch_us * 1e-6)
        print_df(f"host and device per phase ({hp.label}, launch {hp.launch_s * 1e6:.3g} us/kernel; "
                  "docs/roofline.md)", overlap.report(ops, hw, hp, meta["spec"].get("dtype"), precision=precision))
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
    from genprof import store

    spec, summary = meta["spec"], meta["summary"]
    measured = store.measured(meta)
    out.print(f"{spec['workload']} size={spec['size']} batch={spec['batch']} device={spec['device']} "
              f"dtype={spec['dtype']} mode={spec['mode']} opts={'+'.join(spec['optimizations']) or 'baseline'} "
              + (f"repeats={summary['total'].get('n')} threads={(meta.get('environment') or {}).get('torch_threads')}"
                 if measured else "(counted, not timed)"))
    if not measured:
        print_counts(ops)
        return
    t = Table(title="phases (wall time over repeats)")
    for col in ("phase", "median s", "95% CI of the median", "p10 s", "p90 s", "MAD s", "steps"):
        t.add_column(col, justify="right" if col != "phase" else "left")
    for ph, s in list(summary["phases"].items()) + [("total", summary["total"])]:
        nsteps = summary["steps"].get(ph, {}).get("steps_per_repeat", "")
        ci = f"{s['ci_low_s']:.4f}–{s['ci_high_s']:.4f} ({100 * s['ci_level']:.0f}%)" if "ci_low_s" in s else "—"
        t.add_row(ph, f"{s['median_s']:.4f}", ci, f"{s['p10_s']:.4f}", f"{s['p90_s']:.4f}",
                  f"{s.get('mad_s', s['stdev_s']):.4f}", str(nsteps))
    out.print(t)
    st = summary.get("stability")
    if st:
        util = st.get("cpu_utilization") or []
        detail = f"MAD {100 * st['rel_mad']:.1f}% of the median" + (
            f", CPU busy {100 * min(util):.0f}-{100 * max(util):.0f}% per thread" if util else "")
        out.print(f"timing: {st['verdict']} ({detail})" if st["verdict"] == "stable" else
                  f"timing: UNSTABLE: {'; '.join(st['reasons'])}", markup=False, highlight=False)
    for k, v in summary.get("derived", {}).items():
        out.print(f"{k}: {v:.6g}")
    if ops is not None and len(ops):
        from genprof.reports import breakdown

        fam = breakdown(ops, "family")
        t = Table(title="time by operator family (mean over repeats)")
        for col in ("family", "time s", "share", "GFLOP", "MB moved"):
            t.add_column(col, justify="right" if col != "family" else "left")
        for r in fam.itertuples():
            t.add_row(r.family, f"{r.time_s:.4f}", f"{100 * r.share:.1f}%", f"{r.flops / 1e9:.3f}",
                      f"{r.bytes / 1e6:.1f}")
        out.print(t)
        print_gpu(ops, summary.get("gpu") or {})
        print_unclassified(summary)
    mem = summary.get("memory", {})
    if "peak_device_bytes" in mem:
        out.print(f"peak device memory: {mem['peak_device_bytes'] / 2**20:.1f} MiB")
    if "peak_rss_bytes" in mem:
        out.print(f"peak RSS of the process (measured repeats): {mem['peak_rss_bytes'] / 2**20:.1f} MiB")
    if "peak_rss_growth_bytes" in mem:  # imported traces measured no memory
        out.print(f"RSS growth during the measured repeats: {mem['peak_rss_growth_bytes'] / 2**20:.1f} MiB")


def print_counts(ops) -> None:
    """A meta-device run: what it counted (FLOPs, bytes, calls), never a time."""
    out.print("meta device: FLOPs, bytes and shapes counted; nothing timed "
              "(`genprof project RUN --hw h100` predicts times from these counts)")
    if ops is None or not len(ops):
        return
    from genprof.reports.breakdown import counts

    for by in ("family", "phase"):
        t = Table(title=f"counts by {by} (one pass)")
        for col in (by, "calls", "GFLOP", "MB moved", "FLOP/byte"):
            t.add_column(col, justify="right" if col != by else "left")
        for name, r in counts(ops, by).iterrows():
            t.add_row(str(name), f"{int(r.calls)}", f"{r.flops / 1e9:.4g}", f"{r.bytes / 1e6:.4g}",
                      f"{r.flops / r.bytes:.3g}" if r.bytes else "—")
        out.print(t)


def print_unclassified(summary: dict) -> None:
    unknown = summary.get("unclassified_ops") or []
    if unknown:
        out.print(f"unclassified ops (family Other): {', '.join(unknown)}")


def print_gpu(ops, gpu: dict) -> None:
    """GPU time by family (from the op table) and busy time per device (from run.json), when there is any."""
    from genprof.reports.gpu import device_families

    fam = device_families(ops)
    if fam.empty:
        return
    print_df("GPU time by operator family (kernels, memcpy, memset; mean over repeats)",
              fam.drop(columns=["run_id"]).rename(columns={"time_s": "GPU s"}))
    for dev, d in (gpu.get("devices") or {}).items():
        out.print(f"device {dev}: {d['sum_s']:.4g} s summed over {len(d.get('streams', {}))} stream(s), "
                  f"busy {d['busy_s']:.4g} s (overlap {d['overlap_s']:.4g} s)")
