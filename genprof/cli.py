"""The `genprof` command line: parses, calls the API, prints. Nothing else.

Exit codes (docs/reliability.md): 0 done; 2 bad input of any kind, found
before anything runs (an unknown workload, size or option, a value out of
bounds, a run that would not fit in memory, a corrupt run directory, an output
path that cannot be written, incompatible optimizations), as one line
`error: ...` that names the field or file; 1 only for a run that failed while
running (stored as failed, its reason printed); 130 interrupted. `--debug`
shows tracebacks. What it prints is in genprof.cli_output.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from genprof.cli_output import Status, err, out, print_df, print_run, project, warn_unstable
from genprof.errors import GenprofError, unknown_choice

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Characterize the inference of generative models: where the time goes.")
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
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: 1 on a CPU; see README)."),
    ci_target: Optional[float] = typer.Option(None, "--ci-target", help="Repeat until the median's 95%% "
                                              "confidence interval is within this fraction of it (e.g. 0.05); "
                                              "--repeats is then the least number of repeats."),
    budget: Optional[float] = typer.Option(None, help="With --ci-target: stop after this many seconds of "
                                           "measured repeats (default 120)."),
    out_dir: Path = typer.Option(Path("runs"), "--out", help="Folder for run directories."),
    project_hw: Optional[str] = typer.Option(None, "--project", help="Then project the run on hardware: "
                                             "a100 | h100 | h200 | local."),
) -> None:
    """Run one workload, measure it, store the run and print its breakdown."""
    from genprof import api, store

    spec = api.make_spec(workload, size=size, batch=batch, steps=steps, tokens=tokens, repeats=repeats,
                         warmup=warmup, mode=mode, device=device, dtype=dtype, optimizations=opt, params=set_,
                         weights=str(weights) if weights else None, record_trace=trace_file, seed=seed, threads=threads,
                         ci_target=ci_target, budget_s=budget)
    store.check_out(out_dir)
    api.validate(spec)
    if project_hw is not None:
        from genprof.roofline.hardware import canonical_name

        canonical_name(project_hw)  # an unknown name fails before the run
        if mode != "trace":
            raise GenprofError("--project needs the op table: use --mode trace")
    total = None if ci_target else warmup + repeats + (1 if mode == "trace" else 0)
    with Status(f"{workload} ({size}): building", total) as status:
        res = api.run(spec, out=out_dir, progress=lambda what: status.update(f"{workload} ({size}): {what}", True))
    out.print(f"run: {res.path}")
    if not res.ok:
        print(f"run failed: {res.meta['reason']} (recorded in {res.path / 'run.json'})", file=sys.stderr)
        if _state["debug"]:
            err.print(res.meta.get("traceback", ""))
        raise typer.Exit(1)
    print_run(res.meta, res.ops)
    warn_unstable(res.meta)
    if project_hw is not None:
        project(res.path, project_hw, None, None, None, None, threads)


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
    host: Optional[str] = typer.Option(None, "--host", help="Host profile (JSON file or shipped name) for "
                                       "the host time on a GPU (default: this CPU's, else the shipped one)."),
    launch_us: Optional[float] = typer.Option(None, "--launch-us", help="CUDA launch cost per kernel, us "
                                              "(default: the host profile's)."),
) -> None:
    """Predict the run's time on a hardware profile: roofline per op, summed per family and phase; on a
    GPU also host time, combined time and the verdict per phase, eager and what-if."""
    if out_proj is not None:
        from genprof.store import check_out

        check_out(out_proj)
    project(run_dir, hw, eff_compute, eff_memory, precision, out_proj, threads, host, launch_us)


@app.command("host-profile")
def host_profile_cmd(
    out_file: Optional[Path] = typer.Option(None, "--out", help="JSON file to write (default: "
                                            "genprof/assets/hosts/<this CPU>.json)."),
    only: List[str] = typer.Option([], "--only", help="Only these workloads (repeatable; default: the suite)."),
    repeats: int = typer.Option(5, min=1, help="Plain runs per workload (the minimum is kept)."),
) -> None:
    """Measure this CPU's host profile: host time per op kind and Python per module call (tiny suite, 1 thread)."""
    import os

    from genprof import api
    from genprof.roofline.host import HOSTS_DIR, save_host
    from genprof.study import host

    for n in only:
        if n not in api.SUITE:
            raise GenprofError(f"unknown suite workload {n!r}; valid: {', '.join(api.SUITE)}")
    with Status("host profile") as status:
        prof, cal = host.measure_host_profile(tuple(only) or None, repeats=repeats,
                                              command="genprof " + " ".join(sys.argv[1:]),
                                              on_start=lambda n: status.update(f"host profile: measuring {n}"))
    path = save_host(prof, out_file or HOSTS_DIR / f"{prof.name}.json")
    m = prof.measured_on
    out.print(f"{prof.cpu}: {len(prof.op_s)} op kinds, median {prof.default_op_s * 1e6:.3g} us/op, traced/plain "
              f"{prof.calibration['recorded_over_plain']:.2f}; load average {m['load_average_before']} -> {m['load_average_after']} on {os.cpu_count()} "
              f"CPU(s); {m['seconds']} s")
    print_df("checks against plain CPU time (error = predicted / measured - 1)", cal["checks"])
    out.print(f"wrote: {path}")


@app.command("paper")
def paper_cmd(
    out_dir: Path = typer.Option(Path("runs"), "--out", help="Folder for the counted and measured runs, "
                                 "paper.md and paper.html; suite runs already there are reused."),
    doc: Optional[Path] = typer.Option(None, "--doc", help="Markdown page to write (default: OUT/paper.md; "
                                       "docs/paper.md in a checkout is regenerated with --doc docs/paper.md)."),
    size: str = typer.Option("paper", help="Size to count and project (paper; tiny for a quick check)."),
    measure: bool = typer.Option(True, "--measure/--no-measure", help="Measure the small suite on this CPU "
                                 "(skipped when --runs is given)."),
    runs: List[Path] = typer.Option([], "--runs", help="Measured runs to use instead (repeatable; CPU and/or "
                                    "GPU trace-mode runs)."),
    measure_size: str = typer.Option("small", help="Size of the measured suite."),
    only: List[str] = typer.Option([], "--only", help="Only these workloads (repeatable)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for the measured runs (default: 1)."),
    attention_doc: Path = typer.Option(Path("docs/attention-study.md"), help="Measured flash speedups "
                                       "(from scripts/attention_study.py)."),
) -> None:
    """The study's headline claims: projection at paper size beside our measurements (markdown + HTML)."""
    import shlex

    from genprof import api
    from genprof.study import paper

    names = tuple(only) or api.SUITE
    for n in names:
        if n not in api.SUITE:
            raise GenprofError(f"unknown suite workload {n!r}; valid: {', '.join(api.SUITE)}")
    api.make_spec(names[0], size=size)  # validates the size
    doc = doc or out_dir / "paper.md"
    from genprof.store import check_out

    check_out(out_dir)
    check_out(doc, "--doc", folder=False)
    with Status("paper: counting") as status:
        counted = paper.count_suite(out_dir / f"count-{size}", size=size, names=names,
                                    on_start=lambda n: status.update(f"paper: counting {n} ({size}, meta)"))
        roots = list(runs)
        if not roots and measure:
            found = paper.find_suite_runs(out_dir, measure_size, names)
            for n, path in found.items():
                status.update(f"paper: reusing the measured {n} ({measure_size}) in {path}")
            missing = tuple(n for n in names if n not in found)
            if missing:
                entries = api.suite(size=measure_size, out=out_dir, workloads=missing, repeats=2, warmup=1,
                                    threads=threads,
                                    on_start=lambda n: status.update(f"paper: measuring {n} ({measure_size}, cpu)"),
                                    progress=lambda what: status.update(f"paper: measuring: {what}"))
                found.update({e.workload: e.path for e in entries if e.status == "ok"})
            roots = list(found.values())
        status.update("paper: projecting")
        result = paper.build_paper(counted, roots, attention_doc, size=size)
    cmd = "genprof " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["paper"] else "genprof paper"
    written = paper.write_paper(result, doc, out_dir / "paper.html", [*roots, out_dir / f"count-{size}"], cmd, size)
    print_df("the study's headline claims", result["headline"])
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

        print_df("attention sequence lengths (first repeat)", seq_profile(ops, per_step=per_step))
        return
    print_run(meta, ops)


@app.command("import")
def import_cmd(traces: List[Path] = typer.Argument(..., help="Trace files (.json or .json.gz, from torch.profiler "
                                                  "or any Kineto producer) or folders of them: one run per file."),
               out_dir: Path = typer.Option(Path("runs"), "--out", help="Folder for run directories."),
               name: Optional[str] = typer.Option(None, help="Workload label of the runs (default: file name).")) -> None:
    """Store traces recorded anywhere as runs that show, report, compare and project read."""
    from genprof.importer import import_traces

    done = import_traces(traces, out_dir, name)
    for res in done:
        out.print(f"run: {res.path}")
        if len(done) == 1:
            print_run(res.meta, res.ops)


@app.command("report")
def report_cmd(roots: List[Path] = typer.Argument(..., help="Run directories or folders of runs."),
               out_file: Path = typer.Option(Path("report.html"), "--out", help="HTML file to write."),
               title: str = typer.Option("genprof report", help="Page title.")) -> None:
    """Write one self-contained HTML report (figures embedded, no network) over every run below ROOTS."""
    from genprof.reports.html import write_report
    from genprof.store import check_out

    check_out(out_file, folder=False)
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
    seen: dict[str, Path] = {}
    for d, m in zip(run_dirs, metas):
        if m["run_id"] in seen:
            raise GenprofError(f"{seen[m['run_id']]} and {d} are the same run ({m['run_id']}); "
                               "compare needs different runs")
        seen[m["run_id"]] = d
    tables = []
    for d, m in zip(run_dirs, metas):
        t = store.read_table(d, store.OPS)
        if m["status"] != "ok":
            raise GenprofError(f"{d} is a failed run ({m.get('reason', '')}); compare takes successful runs")
        if not store.measured(m):
            raise GenprofError(f"{d} ran on the meta device: it counted FLOPs and bytes and timed nothing; "
                               f"compare compares measured times (`genprof project` predicts them)")
        if t is not None:
            tables.append(t)
    e2e = end_to_end(metas)
    print_df("end to end (median of repeats; speedup = baseline / run; significant = the medians' 95% "
              "intervals do not overlap)", e2e[["run_id", "optimizations", "mode", "total_median_s", "ci_low_s",
                                                "ci_high_s", "n", "speedup", "significant", "stability"]])
    for m in metas:
        warn_unstable(m)
    for r in e2e.itertuples():
        if r.significant == "yes" and r.speedup < 1:
            print(f"note: {r.run_id} ({r.optimizations}) is slower than the baseline: {r.speedup:.3g}x",
                  file=sys.stderr)
    if len(tables) >= 2:
        ops = pd.concat(tables, ignore_index=True)
        print_df("per operator family", compare(ops, "family").drop(columns=["run_id"]))
        att = ops[ops["family"] == "Attention"]
        if att["run_id"].nunique() >= 2:
            print_df("attention, per kind", compare(att, "attention_kind").drop(columns=["run_id"]))
    else:
        out.print("(per-family comparison needs trace-mode runs)")


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
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: 1 on a CPU; see README)."),
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
    from genprof.store import check_out

    check_out(out_dir)
    if report is not None:
        check_out(report, "--report", folder=False)
    for n in names:  # every check before anything runs: a refusal is one line, not a row of failed runs
        try:
            api.validate(api.make_spec(n, size=size, repeats=repeats, warmup=warmup, mode=mode, device=device,
                                       threads=threads))
        except GenprofError as e:
            raise GenprofError(f"suite: {n}: {e}") from None
    with Status("suite", len(names)) as status:
        current = {"name": "", "i": 0}

        def on_start(name: str) -> None:
            current["i"] += 1
            status.update(f"suite {size}: {name} ({current['i']}/{len(names)})", advance=current["i"] > 1)
            current["name"] = name

        def progress(what: str) -> None:
            status.update(f"suite {size}: {current['name']}: {what}")

        entries = api.suite(size=size, out=out_dir, workloads=names, on_start=on_start, progress=progress,
                            repeats=repeats, warmup=warmup, mode=mode, device=device, threads=threads)
    t = Table(title=f"suite at size {size}")
    for col in ("workload", "status", "timing", "seconds", "run / reason"):
        t.add_column(col)
    for e in entries:
        t.add_row(e.workload, e.status, e.stability or "—", f"{e.seconds:.1f}",
                  str(e.path) if e.status == "ok" else e.reason)
    out.print(t)
    for e in entries:
        if e.stability == "unstable":
            print(f"warning: {e.workload}: unstable timing: {'; '.join(e.reasons)}", file=sys.stderr)
    from genprof.reports.html import write_report

    paths = [e.path for e in entries if e.path is not None]
    if paths:
        title = f"genprof {suite_name} suite ({size})"
        out.print(f"report: {write_report(paths, report or out_dir / 'report.html', title=title)}")
    failed = [e for e in entries if e.status != "ok"]
    for e in failed:
        print(f"run failed: {e.workload}: {e.reason}", file=sys.stderr)
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
    sw.check_timeout(timeout)
    from genprof.store import check_out

    check_out(out_dir)
    if report is not None and not no_report:
        check_out(report, "--report", folder=False)
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
    with Status("sweep", len(plan.specs)) as status:
        done = {"n": 0}

        def on_event(kind: str, e) -> None:
            if kind == "start":
                status.update(f"sweep ({done['n'] + 1}/{len(plan.specs)}): {e.label}")
            else:
                done["n"] += 1
                status.update(f"sweep ({done['n']}/{len(plan.specs)}): {e.label}: {e.status}", advance=True)

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


def main(argv: list[str] | None = None) -> None:
    try:
        rc = app(args=argv, standalone_mode=False)  # click returns the code of a typer.Exit here
        sys.exit(rc if isinstance(rc, int) else 0)
    except GenprofError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # a path the user gave (a run's own errors are recorded in its run directory)
        if _state["debug"]:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
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
