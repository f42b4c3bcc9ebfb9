"""The run orchestration: the one place that sees workloads, optimizations, profiler and store.

`run(spec)` validates the spec (unknown workload, size or option: a
GenprofError before anything is written), builds the workload (cached within
the process), applies the optimizations, measures in timing or trace mode, and
writes the run directory atomically. A run that raises is stored as failed with
its reason and traceback; the caller decides how loud to be.
"""

from __future__ import annotations

import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

from genprof import optimizations, store, workloads
from genprof.errors import GenprofError
from genprof.profiler import measure_timing, measure_trace
from genprof.profiler.scopes import NO_STEP
from genprof.profiler.stats import summarize
from genprof.reports.breakdown import breakdown
from genprof.spec import OptSpec, RunSpec, parse_params
from genprof.workloads.base import Built

_CACHE: "OrderedDict[tuple, Built]" = OrderedDict()
_CACHE_SIZE = 3


@dataclass
class RunResult:
    path: Path
    meta: dict[str, Any]
    ops: pd.DataFrame | None = field(repr=False)
    phases: pd.DataFrame | None = field(repr=False)
    output: Any = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.meta["status"] == "ok"


def make_spec(workload: str, **kwargs: Any) -> RunSpec:
    """A RunSpec from keyword arguments; `optimizations` may be strings like 'attn=flash'."""
    opts = kwargs.pop("optimizations", ()) or ()
    kwargs["optimizations"] = tuple(o if isinstance(o, OptSpec) else OptSpec.parse(o) for o in opts)
    params = kwargs.pop("params", ()) or ()
    if isinstance(params, dict):
        params = tuple(params.items())
    kwargs["params"] = parse_params(params) if params and isinstance(params[0], str) else tuple(params)
    return RunSpec(workload=workload, **kwargs)


def validate(spec: RunSpec) -> tuple[Any, list[Any]]:
    """The workload and optimizations of a spec, or a one-line GenprofError."""
    wl = workloads.get(spec.workload)
    wl.check(spec)
    opts = optimizations.resolve(spec.optimizations, spec)
    if spec.device == "meta" and spec.mode != "trace":
        raise GenprofError("--device meta counts FLOPs and bytes without running anything; use --mode trace")
    if spec.device.startswith("cuda") and not torch.cuda.is_available():
        raise GenprofError(f"device {spec.device!r} requested but CUDA is not available here; use --device cpu")
    return wl, opts


def build(spec: RunSpec) -> Built:
    """Build the workload of a spec and apply its optimizations.

    The plain build is cached within the process (keyed by everything that
    shapes the model and inputs); optimizations wrap it without changing it,
    except those that declare `mutates`, which get a fresh build.
    """
    wl, opts = validate(spec)
    if any(o.mutates for o in opts):
        built = _build_plain(wl, spec)
    else:
        key = (spec.workload, spec.size, spec.batch, spec.steps, spec.tokens, spec.dtype, spec.device,
               spec.seed, spec.weights, repr(spec.params))
        if key not in _CACHE:
            _CACHE[key] = _build_plain(wl, spec)
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        _CACHE.move_to_end(key)
        built = _CACHE[key]
    for o in opts:
        built = o.apply(built)
    return built


def _build_plain(wl: Any, spec: RunSpec) -> Built:
    _quiet_libraries()
    if spec.device == "meta":  # no weights allocated: build every parameter on the meta device
        with torch.device("meta"):
            return wl.build(spec)
    return wl.build(spec)


def _quiet_libraries() -> None:
    """diffusers and transformers warn about random-weight configs we build on purpose."""
    for name in ("diffusers", "transformers"):
        try:
            __import__(name).utils.logging.set_verbosity_error()
        except Exception:
            pass


def run(spec: RunSpec | str, out: str | Path = "runs", progress: Callable[[str], None] | None = None,
        **kwargs: Any) -> RunResult:
    """Run and measure one spec (or a workload name plus RunSpec fields) and store it under `out`."""
    if isinstance(spec, str):
        spec = make_spec(spec, **kwargs)
    wl, _ = validate(spec)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    run_id = store.new_run_id(spec.workload, spec.size, spec.opt_label)
    writer = store.RunWriter(out, run_id)
    meta: dict[str, Any] = {
        "run_id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "spec": spec.to_dict(), "environment": store.environment(spec.device), "workload": wl.describe(),
    }
    ops = phases = output = None
    try:
        t0 = time.perf_counter()
        built = build(spec)
        meta["build_s"] = time.perf_counter() - t0
        meta["info"] = built.info
        device = torch.device(spec.device)
        repeats, warmup = spec.repeats, spec.warmup
        if spec.device == "meta":  # counts are deterministic and times meaningless: one pass
            repeats, warmup = 1, 0
            meta["note"] = "meta device: FLOPs, bytes and shapes only; times are not meaningful"
        if spec.mode == "timing":
            m = measure_timing(built, device, repeats, warmup, progress)
        else:
            labels = {"run_id": run_id, "workload": spec.workload, "size": spec.size,
                      "optimizations": spec.opt_label}
            trace_to = writer.path(store.TRACE) if spec.record_trace else None
            m = measure_trace(built, device, repeats, warmup, labels, trace_to, progress)
        ops, phases, output = m.ops, m.phase_times, m.output
        writer.write_table(store.PHASES, phases)
        if ops is not None:
            writer.write_table(store.OPS, ops)
        meta["summary"] = summarize_run(m, wl, built.info)
        if built.quality is not None and spec.device != "meta":  # lossy optimization: quality beside speed
            meta["summary"]["quality"] = built.quality(output)
        meta["status"] = "ok"
    except KeyboardInterrupt:
        writer.abort()
        raise
    except Exception as e:  # recorded, not raised: a failed run is a result too
        meta["status"] = "failed"
        meta["reason"] = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        meta["traceback"] = traceback.format_exc()
    path = writer.commit(meta)
    return RunResult(path=path, meta=meta, ops=ops, phases=phases, output=output)


def ops_from_trace(path: str | Path, module_types: dict[str, str] | None = None,
                   attention_kinds: dict[str, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(op table, phase times) of a Chrome/Kineto trace file (.json or .json.gz), e.g. one written by
    `genprof run --trace-file` or by any torch.profiler `export_chrome_trace`.

    genprof's phase/step/repeat/module ranges are used when present; without
    `module_types` (module name -> class name) ops are classified by name only,
    so attention computed as separate matmul/softmax ops is not found.
    """
    from genprof.profiler import events, optable

    return optable.build(events.from_chrome_trace(path), module_types or {}, attention_kinds or {})


def summarize_run(m: Any, wl: Any, info: dict[str, Any]) -> dict[str, Any]:
    """Summary metrics for run.json: phase statistics, steps, memory, family shares."""
    times = m.phase_times
    whole = times[times["step"] == NO_STEP].groupby(["phase", "repeat"])["time_s"].sum()
    phase_stats = {str(ph): summarize(g.to_numpy()) for ph, g in whole.groupby(level=0)}
    steps = times[times["step"] != NO_STEP]
    step_stats = {str(ph): {"steps_per_repeat": int(g.groupby("repeat").size().median()),
                            "step": summarize(g["time_s"].to_numpy())}
                  for ph, g in steps.groupby("phase")}
    summary: dict[str, Any] = {
        "timer": m.timer, "mode": m.mode, "total": phase_stats.pop("total", {}),
        "phases": phase_stats, "steps": step_stats, "memory": m.memory,
        "derived": wl.derived_metrics(phase_stats, info),
    }
    if m.profiler:  # trace mode: how many events, and what collecting and analysing them cost
        summary["profiler"] = m.profiler
    if m.ops is not None and not m.ops.empty:
        fam = breakdown(m.ops, "family")
        summary["family_share"] = dict(zip(fam["family"], fam["share"].round(6)))
        summary["family_time_s"] = dict(zip(fam["family"], fam["time_s"]))
        n = max(int(m.ops["repeat"].nunique()), 1)
        summary["flops_per_repeat"] = float(m.ops["flops"].sum() / n)
        summary["bytes_per_repeat"] = float(m.ops["bytes"].sum() / n)
        att = m.ops[(m.ops["family"] == "Attention") & (m.ops["repeat"] == m.ops["repeat"].min())]
        kernels = att.assign(k=att["kernel"].where(att["kernel"] != "", att["op"])).groupby("k")["calls"].sum()
        summary["attention_kernels"] = {str(k): int(v) for k, v in kernels.items()}  # what actually ran
        summary["unclassified_ops"] = sorted(m.ops.loc[m.ops["family"] == "Other", "op"].unique().tolist())
    return summary


# The study's suite: eight TTI/TTV models, then the LLM (prefill and decode are its two entries).
SUITE = ("imagen", "stable-diffusion", "prod-image", "muse", "parti", "cm3leon", "make-a-video", "phenaki", "llm")
# Today's generators, asked the study's questions in docs/modern.md: diffusion transformers (DiT, MMDiT) for
# images and full-attention transformers for video.
MODERN_SUITE = ("pixart", "sd3", "flux", "cogvideox", "wan")
SUITES = {"study": SUITE, "modern": MODERN_SUITE}


@dataclass
class SuiteEntry:
    workload: str
    status: str  # ok | failed
    reason: str = ""
    path: Path | None = None
    seconds: float = 0.0


def suite(size: str = "small", out: str | Path = "runs", workloads: tuple[str, ...] = SUITE,
          on_start: Callable[[str], None] | None = None, progress: Callable[[str], None] | None = None,
          **kwargs: Any) -> list[SuiteEntry]:
    """Run every workload of the suite at one size; a failed workload is recorded and the rest go on."""
    entries = []
    for name in workloads:
        if on_start:
            on_start(name)
        t0 = time.perf_counter()
        try:
            res = run(make_spec(name, size=size, **kwargs), out=out, progress=progress)
            entries.append(SuiteEntry(name, res.meta["status"], res.meta.get("reason", ""), res.path,
                                      time.perf_counter() - t0))
        except GenprofError as e:
            entries.append(SuiteEntry(name, "failed", str(e), None, time.perf_counter() - t0))
    return entries
