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

from genprof.errors import GenprofError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Characterize the inference of generative models: where the time goes.")
out = Console()
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
    weights: Optional[Path] = typer.Option(None, help="Local directory with real weights (safetensors)."),
    trace_file: bool = typer.Option(False, "--trace-file", help="Keep the gzip Chrome trace (trace mode)."),
    seed: int = typer.Option(0, help="Seed for weights and inputs."),
    out_dir: Path = typer.Option(Path("runs"), "--out", help="Folder for run directories."),
) -> None:
    """Run one workload, measure it, store the run and print its breakdown."""
    from genprof import api

    spec = api.make_spec(workload, size=size, batch=batch, steps=steps, tokens=tokens, repeats=repeats,
                         warmup=warmup, mode=mode, device=device, dtype=dtype, optimizations=opt,
                         weights=str(weights) if weights else None, record_trace=trace_file, seed=seed)
    api.validate(spec)
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


@app.command("show")
def show_cmd(run_dir: Path = typer.Argument(..., help="A run directory.")) -> None:
    """Print a stored run: status, phases and the breakdown by operator family."""
    from genprof import store

    meta = store.read_run(run_dir)
    out.print(f"run: {run_dir}")
    if meta["status"] != "ok":
        out.print(f"status: {meta['status']}: {meta.get('reason', '')}")
        raise typer.Exit(1)
    _print_run(meta, store.read_table(run_dir, store.OPS))


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
