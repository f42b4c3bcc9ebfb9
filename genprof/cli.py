"""The `genprof` command line: parses, calls the API, prints. Nothing else.

User errors (unknown workload, size, option; a corrupt run directory) print
one line and exit with 2; a run that fails is stored as failed, its reason is
printed and the exit code is 1; `--debug` shows tracebacks.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from genprof.errors import GenprofError, unknown_choice

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Characterize the inference of generative models: where the time goes.")
# Wide when not a terminal, so piped output is never cut to 80 columns.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks.")) -> None:
    _state["debug"] = debug


@app.command("list")
def list_cmd() -> None:
    """List the workloads, the stand-in model behind each, and their sizes."""
    from genprof import workloads

    t = Table(title="workloads")
    for col in ("name", "kind", "stand-in", "phases", "sizes"):
        t.add_column(col)
    for name in workloads.names():
        d = workloads.get(name).describe()
        t.add_row(d["name"], d["kind"], d["stand_in"], ", ".join(d["phases"]), ", ".join(d["sizes"]))
    out.print(t)


@app.command("run")
def run_cmd(
    workload: str = typer.Argument(..., help="Workload name (see `genprof list`)."),
    size: str = typer.Option("tiny", help="tiny | small | paper"),
    batch: int = typer.Option(1, help="Prompts per batch."),
    steps: Optional[int] = typer.Option(None, help="Denoising steps (diffusion workloads)."),
    tokens: Optional[int] = typer.Option(None, help="Tokens to decode (LLM workloads)."),
    repeats: int = typer.Option(3, help="Measured repeats (after warm-up)."),
    warmup: int = typer.Option(1, help="Warm-up runs, not measured."),
    mode: str = typer.Option("trace", help="timing (phase times only, lowest overhead) | trace (op table)"),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N"),
    dtype: str = typer.Option("float32", help="float32 | float16 | bfloat16"),
    opt: List[str] = typer.Option([], "--opt", help="Optimization NAME[:key=value,...]; repeatable."),
    set_: List[str] = typer.Option([], "--set", help="Override a size-preset value: key=value (e.g. latent=48)."),
    weights: Optional[Path] = typer.Option(None, help="Local directory with real weights (safetensors)."),
    trace_file: bool = typer.Option(False, "--trace-file", help="Keep the gzip Chrome trace (trace mode)."),
    seed: int = typer.Option(0, help="Seed for weights and inputs."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: torch's choice)."),
    out_dir: Path = typer.Option(Path("runs"), "--out", help="Folder for run directories."),
    project_hw: Optional[str] = typer.Option(None, "--project", help="Then project the run on hardware: "
                                             "a100 | h100 | h200 | local."),
) -> None:
    """Run one workload, measure it, store the run and print its breakdown."""
    from genprof import api

    spec = api.make_spec(workload, size=size, batch=batch, steps=steps, tokens=tokens, repeats=repeats,
                         warmup=warmup, mode=mode, device=device, dtype=dtype, optimizations=opt, params=set_,
                         weights=str(weights) if weights else None, record_trace=trace_file, seed=seed, threads=threads)
    api.validate(spec)
    if project_hw is not None:
        from genprof.roofline.hardware import canonical_name

        canonical_name(project_hw)  # an unknown name fails before the run
        if mode != "trace":
            raise GenprofError("--project needs the op table: use --mode trace")
    total = warmup + repeats + (1 if mode == "trace" else 0)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task(f"{workload} ({size}): building", total=total)

        def progress(what: str) -> None:
            bar.update(task, advance=1, description=f"{workload} ({size}): {what}")

        res = api.run(spec, out=out_dir, progress=progress)
    out.print(f"run: {res.path}")
    if not res.ok:
        print(f"run failed: {res.meta['reason']} (recorded in {res.path / 'run.json'})", file=sys.stderr)
        if _state["debug"]:
            err.print(res.meta.get("traceback", ""))
        raise typer.Exit(1)
    _print_run(res.meta, res.ops)
    if project_hw is not None:
        _project(res.path, project_hw, None, None, None, None, threads)


@app.command("project")
def project_cmd(
    run_dir: Path = typer.Argument(..., help="A trace-mode run directory."),
    hw: str = typer.Option(..., "--hw", help="a100 | h100 | h200 | local (this machine, measured once)."),
    eff_compute: Optional[float] = typer.Option(None, "--eff-compute", help="Fraction of peak FLOP/s reached "
                                                "(default: the profile's)."),
    eff_memory: Optional[float] = typer.Option(None, "--eff-memory", help="Fraction of peak bandwidth reached "
                                               "(default: the profile's)."),
    precision: Optional[str] = typer.Option(None, help="fp32 | tf32 | bf16 (default: from the run's dtype)."),
    out_proj: Optional[Path] = typer.Option(None, "--out", help="Folder to write projection.parquet and "
                                            "roofline.png/.svg into (nothing is written without it)."),
    threads: Optional[int] = typer.Option(None, help="Threads for measuring the local profile (default: "
                                          "the run's)."),
) -> None:
    """Predict the run's time on a hardware profile: roofline per op, summed per family and phase."""
    _project(run_dir, hw, eff_compute, eff_memory, precision, out_proj, threads)


def _project(run_dir: Path, hw_name: str, eff_compute, eff_memory, precision, out_proj, threads) -> None:
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


@app.command("paper")
def paper_cmd(
    out_dir: Path = typer.Option(Path("runs/paper"), "--out", help="Folder for the counted and measured runs "
                                 "and paper.html."),
    doc: Path = typer.Option(Path("docs/paper.md"), "--doc", help="Markdown page to write."),
    size: str = typer.Option("paper", help="Size to count and project (paper; tiny for a quick check)."),
    measure: bool = typer.Option(True, "--measure/--no-measure", help="Measure the small suite on this CPU "
                                 "(skipped when --runs is given)."),
    runs: List[Path] = typer.Option([], "--runs", help="Measured runs to use instead (repeatable; CPU and/or "
                                    "GPU trace-mode runs)."),
    measure_size: str = typer.Option("small", help="Size of the measured suite."),
    only: List[str] = typer.Option([], "--only", help="Only these workloads (repeatable)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for the measured runs."),
    attention_doc: Path = typer.Option(Path("docs/attention-study.md"), help="Measured flash speedups "
                                       "(from scripts/attention_study.py)."),
) -> None:
    """The study's headline claims: projection at paper size beside our measurements (docs + HTML)."""
    import shlex

    from genprof import api
    from genprof.roofline import paper

    names = tuple(only) or api.SUITE
    for n in names:
        if n not in api.SUITE:
            raise GenprofError(f"unknown suite workload {n!r}; valid: {', '.join(api.SUITE)}")
    api.make_spec(names[0], size=size)  # validates the size
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task("paper: counting")
        counted = paper.count_suite(out_dir / f"count-{size}", size=size, names=names,
                                    on_start=lambda n: bar.update(task, description=f"paper: counting {n} ({size}, meta)"))
        roots = list(runs)
        if not roots and measure:
            mroot = out_dir / f"measured-{measure_size}"
            api.suite(size=measure_size, out=mroot, workloads=names, repeats=2, warmup=1, threads=threads,
                      on_start=lambda n: bar.update(task, description=f"paper: measuring {n} ({measure_size}, cpu)"))
            roots = [mroot]
        bar.update(task, description="paper: projecting")
        result = paper.build_paper(counted, roots, attention_doc, size=size)
    cmd = "genprof " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["paper"] else "genprof paper"
    written = paper.write_paper(result, doc, out_dir / "paper.html", [*roots, out_dir / f"count-{size}"], cmd, size)
    _print_df("the study's headline claims", result["headline"])
    for n, r in result["failed"].items():
        out.print(f"not counted: {n}: {r}", markup=False, highlight=False)
    out.print("wrote: " + ", ".join(str(w) for w in written))


@app.command("show")
def show_cmd(run_dir: Path = typer.Argument(..., help="A run directory."),
             seq: bool = typer.Option(False, "--seq", help="Show the sequence-length profile of attention."),
             per_step: bool = typer.Option(False, "--per-step", help="With --seq: one row per step.")) -> None:
    """Print a stored run: status, phases and the breakdown by operator family."""
    from genprof import store

    meta = store.read_run(run_dir)
    out.print(f"run: {run_dir}")
    if meta["status"] != "ok":
        out.print(f"status: {meta['status']}: {meta.get('reason', '')}")
        raise typer.Exit(1)
    ops = store.read_table(run_dir, store.OPS)
    if seq:
        if ops is None:
            raise GenprofError(f"{run_dir} is a timing-mode run: it has no op table; rerun with --mode trace")
        from genprof.reports import seq_profile

        _print_df("attention sequence lengths (first repeat)", seq_profile(ops, per_step=per_step))
        return
    _print_run(meta, ops)


@app.command("report")
def report_cmd(roots: List[Path] = typer.Argument(..., help="Run directories or folders of runs."),
               out_file: Path = typer.Option(Path("report.html"), "--out", help="HTML file to write."),
               title: str = typer.Option("genprof report", help="Page title.")) -> None:
    """Write one self-contained HTML report (figures embedded, no network) over every run below ROOTS."""
    from genprof.reports.html import write_report

    out.print(f"report: {write_report(roots, out_file, title=title)}")


@app.command("compare")
def compare_cmd(run_dirs: List[Path] = typer.Argument(..., help="Two or more run directories; the first is the baseline.")) -> None:
    """Compare runs against the first: speedup per operator family, per attention kind, end to end."""
    import pandas as pd

    from genprof import store
    from genprof.reports import compare, end_to_end

    if len(run_dirs) < 2:
        raise GenprofError("compare needs two or more run directories; the first is the baseline")
    metas = [store.read_run(d) for d in run_dirs]
    tables = []
    for d, m in zip(run_dirs, metas):
        t = store.read_table(d, store.OPS)
        if m["status"] != "ok":
            raise GenprofError(f"{d} is a failed run ({m.get('reason', '')}); compare takes successful runs")
        if t is not None:
            tables.append(t)
    e2e = end_to_end(metas)
    _print_df("end to end (median of repeats; speedup = baseline / run)", e2e[
        ["run_id", "optimizations", "mode", "total_median_s", "total_stdev_s", "n", "speedup", "speedup_spread"]])
    if len(tables) >= 2:
        ops = pd.concat(tables, ignore_index=True)
        _print_df("per operator family", compare(ops, "family").drop(columns=["run_id"]))
        att = ops[ops["family"] == "Attention"]
        if att["run_id"].nunique() >= 2:
            _print_df("attention, per kind", compare(att, "attention_kind").drop(columns=["run_id"]))
    else:
        out.print("(per-family comparison needs trace-mode runs)")


def _print_df(title: str, df) -> None:
    t = Table(title=title)
    for c in df.columns:
        t.add_column(str(c), justify="right" if df[c].dtype.kind in "if" else "left")
    for row in df.itertuples(index=False):
        t.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    out.print(t)


@app.command("suite")
def suite_cmd(
    size: str = typer.Option("small", help="tiny | small | paper"),
    out_dir: Path = typer.Option(Path("runs"), "--out", help="Folder for run directories."),
    report: Path = typer.Option(None, help="HTML report to write at the end (default: OUT/report.html)."),
    repeats: int = typer.Option(2, help="Measured repeats per workload."),
    warmup: int = typer.Option(1, help="Warm-up runs per workload."),
    mode: str = typer.Option("trace", help="timing | trace"),
    device: str = typer.Option("cpu", help="cpu | cuda | meta (counting only)"),
    only: List[str] = typer.Option([], "--only", help="Run only these workloads of the suite (repeatable)."),
    suite_name: str = typer.Option("study", "--suite", help="study (the 2023 study's 8 TTI/TTV workloads + the "
                                   "LLM) | modern (pixart, sd3, flux, cogvideox, wan)"),
) -> None:
    """Characterize a suite (by default the study's: 8 TTI/TTV workloads + the LLM), one workload after another."""
    from genprof import api

    if suite_name not in api.SUITES:
        raise unknown_choice("suite", suite_name, tuple(api.SUITES))
    members = api.SUITES[suite_name]
    names = tuple(only) or members
    for n in names:
        if n not in members:
            raise GenprofError(f"unknown suite workload {n!r} in --suite {suite_name}; valid: {', '.join(members)}")
    api.make_spec(names[0], size=size, repeats=repeats, warmup=warmup, mode=mode, device=device)  # validate
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("suite", total=len(names))
        current = {"name": ""}

        def on_start(name: str) -> None:
            if current["name"]:
                bar.advance(task)
            current["name"] = name
            bar.update(task, description=f"suite {size}: {name}")

        def progress(what: str) -> None:
            bar.update(task, description=f"suite {size}: {current['name']}: {what}")

        entries = api.suite(size=size, out=out_dir, workloads=names, on_start=on_start, progress=progress,
                            repeats=repeats, warmup=warmup, mode=mode, device=device)
    t = Table(title=f"suite at size {size}")
    for col in ("workload", "status", "seconds", "run / reason"):
        t.add_column(col)
    for e in entries:
        t.add_row(e.workload, e.status, f"{e.seconds:.1f}", str(e.path) if e.status == "ok" else e.reason)
    out.print(t)
    from genprof.reports.html import write_report

    paths = [e.path for e in entries if e.path is not None]
    if paths:
        title = f"genprof {suite_name} suite ({size})"
        out.print(f"report: {write_report(paths, report or out_dir / 'report.html', title=title)}")
    failed = [e for e in entries if e.status != "ok"]
    if failed:
        raise typer.Exit(1)


@app.command("sweep")
def sweep_cmd(
    workload: List[str] = typer.Option([], "--workload", help="Workload (repeatable: one axis value each)."),
    size: List[str] = typer.Option([], "--size", help="tiny | small | paper (repeatable)."),
    opt: List[str] = typer.Option([], "--opt", help="Optimizations of one axis value: baseline | NAME[=V] | A+B "
                                  "(repeatable)."),
    batch: List[int] = typer.Option([], "--batch", help="Prompts per batch (repeatable)."),
    steps: List[int] = typer.Option([], "--steps", help="Denoising steps (repeatable)."),
    tokens: List[int] = typer.Option([], "--tokens", help="Tokens to decode, LLM (repeatable)."),
    dtype: List[str] = typer.Option([], "--dtype", help="float32 | float16 | bfloat16 (repeatable)."),
    device: List[str] = typer.Option([], "--device", help="cpu | cuda | cuda:N | meta (repeatable)."),
    mode: List[str] = typer.Option([], "--mode", help="timing | trace (repeatable)."),
    repeats: Optional[int] = typer.Option(None, help="Measured repeats of every run."),
    warmup: Optional[int] = typer.Option(None, help="Warm-up runs of every run."),
    set_: List[str] = typer.Option([], "--set", help="Preset override for every run: key=value (repeatable)."),
    file: Optional[Path] = typer.Option(None, "--file", help="Sweep file (TOML, or YAML with pyyaml); options "
                                        "given here replace the file's axis or field of the same name."),
    out_dir: Path = typer.Option(Path("runs"), "--out", help="Folder for run directories (the run store)."),
    executor: str = typer.Option("local", help="local (one process per run) | ray (one Ray task per run)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run again the runs that failed before."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Leave out combinations a workload refuses "
                                      "(instead of exit 2)."),
    timeout: Optional[float] = typer.Option(None, help="Seconds one run may take (local; ray: with no run "
                                            "finishing); then it is recorded as failed."),
    report: Optional[Path] = typer.Option(None, help="HTML report to write at the end (default OUT/report.html)."),
    no_report: bool = typer.Option(False, "--no-report", help="Write no HTML report."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster to use (default: RAY_ADDRESS, else a "
                                              "local instance)."),
    cpus_per_run: Optional[float] = typer.Option(None, help="Ray: CPUs one run asks for (default: its threads "
                                                 "or 1)."),
) -> None:
    """Run the product of workloads x sizes x optimizations x batches (x ...) and resume where it stopped."""
    import signal

    from rich.text import Text

    from genprof import sweep as sw

    if executor not in ("local", "ray"):
        raise GenprofError(f"unknown executor {executor!r}; valid: local, ray")
    if timeout is not None and timeout <= 0:
        raise GenprofError(f"--timeout must be > 0 seconds, got {timeout:g}")
    cfg = sw.load_file(file) if file else {"base": {}, "axes": {}, "workload": {}, "skip_invalid": False}
    base, axes = dict(cfg["base"]), dict(cfg["axes"])
    for name, values in (("workload", workload), ("size", size), ("optimizations", opt), ("batch", batch),
                         ("steps", steps), ("tokens", tokens), ("dtype", dtype), ("device", device), ("mode", mode)):
        if values:
            axes = {k: v for k, v in axes.items() if sw.ALIASES.get(k, k) != name}
            base = {k: v for k, v in base.items() if sw.ALIASES.get(k, k) != name}
            axes[name] = list(values)
    for name, value in (("repeats", repeats), ("warmup", warmup)):
        if value is not None:
            axes = {k: v for k, v in axes.items() if sw.ALIASES.get(k, k) != name}
            base[name] = value
    if set_:
        base["params"] = list(set_)
    plan = sw.expand(base, axes, cfg["workload"], skip_invalid=skip_invalid or cfg["skip_invalid"],
                     check_device=executor == "local")
    if not plan.specs:
        raise GenprofError("the sweep has no valid run" + (f" ({len(plan.dropped)} left out)" if plan.dropped else ""))
    for d in plan.dropped:
        err.print(f"left out: {d}", markup=False, highlight=False)

    def _interrupt(signum, frame):  # SIGTERM: stop the current run too, like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task("sweep", total=len(plan.specs))

        def on_event(kind: str, e) -> None:
            if kind == "start":
                bar.update(task, description=f"sweep: {e.label}")
            else:
                bar.advance(task)

        result = sw.run_sweep(plan.specs, out_dir, executor=executor, retry_failed=retry_failed, timeout=timeout,
                              on_event=on_event, report=False if no_report else report, ray_address=ray_address,
                              cpus_per_run=cpus_per_run)
    t = Table(title=f"sweep of {len(result.entries)} runs ({executor})")
    for col in ("#", "run", "status", "seconds", "run directory / reason"):
        t.add_column(col, justify="right" if col in ("#", "seconds") else "left")
    for e in result.entries:
        where = str(e.path) if e.status in ("done", "skipped") else f"{e.reason} ({e.path})"
        t.add_row(str(e.index + 1), Text(e.label), e.status, f"{e.seconds:.1f}" if e.seconds else "", Text(where))
    out.print(t)
    prev = result.count("skipped-failed")
    out.print(f"done: {result.done}  failed: {result.failed}  skipped: {result.skipped}"
              + (f" ({prev} failed before; --retry-failed runs them again)" if prev else ""))
    for n in result.notes:
        out.print(f"note: {n}", markup=False, highlight=False)
    if result.report:
        out.print(f"report: {result.report}")
    if result.any_failed:
        raise typer.Exit(1)


def _print_run(meta: dict, ops) -> None:
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


def main() -> None:
    try:
        rc = app(standalone_mode=False)  # click returns the code of a typer.Exit here
        sys.exit(rc if isinstance(rc, int) else 0)
    except GenprofError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Exception as e:  # click usage errors and the rest
        if hasattr(e, "show") and hasattr(e, "exit_code"):  # click's usage errors (exit 2)
            e.show()
            sys.exit(e.exit_code)
        if _state["debug"]:
            raise
        print(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
