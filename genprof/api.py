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
from genprof.estimate import check_memory
from genprof.profiler import measure_timing, measure_trace
from genprof.profiler.session import RepeatPolicy
from genprof.profiler.stats import phase_summary, stability
from genprof.reports.breakdown import family_summary
from genprof.spec import DEFAULT_THREADS, OptSpec, RunSpec, parse_params
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


def validate(spec: RunSpec, memory: bool = True) -> tuple[Any, list[Any]]:
    """The workload and optimizations of a spec, or a one-line GenprofError. `memory=False` leaves out the
    memory check: a sweep's worker (its parent checked on the same machine), a Ray driver (the run's
    machine is not this one)."""
    wl = workloads.get(spec.workload)
    wl.check(spec)
    opts = optimizations.resolve(spec.optimizations, spec, wl)
    if spec.device == "meta" and spec.mode != "trace":
        raise GenprofError("--device meta counts FLOPs and bytes without running anything; use --mode trace")
    if spec.device.startswith("cuda") and not torch.cuda.is_available():
        raise GenprofError(f"device {spec.device!r} requested but CUDA is not available here; use --device cpu")
    if memory:
        check_memory(wl, spec)
    return wl, opts


def build(spec: RunSpec) -> Built:
    """Build the workload of a spec and apply its optimizations.

    The plain build is cached within the process (keyed by everything that
    shapes the model and inputs); optimizations configure a copy of it (its
    engine, its contexts) and never change the cached one.
    """
    return _build(spec, *validate(spec))


def _build(spec: RunSpec, wl: Any, opts: list[Any]) -> Built:
    """`build` of a spec already validated (its workload and optimizations)."""
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
        memory: bool = True, **kwargs: Any) -> RunResult:
    """Run and measure one spec (or a workload name plus RunSpec fields) and store it under `out`
    (`memory=False`: no memory check, see `validate`)."""
    if isinstance(spec, str):
        spec = make_spec(spec, **kwargs)
    wl, opts = validate(spec, memory=memory)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(run_threads(spec))
    try:
        return _run(spec, wl, opts, out, progress)
    finally:
        torch.set_num_threads(threads_before)


def run_threads(spec: RunSpec) -> int:
    """The torch threads a run measures with: the spec's, else DEFAULT_THREADS on a CPU (see genprof.spec),
    else torch's own choice (a GPU run's host work)."""
    if spec.threads:
        return spec.threads
    return DEFAULT_THREADS if spec.device in ("cpu", "meta") else torch.get_num_threads()


def _run(spec: RunSpec, wl: Any, opts: list[Any], out: str | Path, progress: Callable[[str], None] | None) -> RunResult:
    run_id = store.new_run_id(spec.workload, spec.size, spec.opt_label)
    writer = store.RunWriter(out, run_id)
    meta: dict[str, Any] = {
        "run_id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "spec": spec.to_dict(), "environment": store.environment(spec.device), "workload": wl.describe(),
    }
    ops = phases = output = None
    try:
        t0 = time.perf_counter()
        built = _build(spec, wl, opts)
        meta["build_s"] = time.perf_counter() - t0
        meta["info"] = built.info
        device = torch.device(spec.device)
        repeats, warmup = RepeatPolicy(spec.repeats, spec.ci_target, spec.budget_s or 120.0), spec.warmup
        if spec.device == "meta":  # counts are deterministic and times meaningless: one pass
            repeats, warmup = RepeatPolicy(1), 0
            meta["note"] = "meta device: FLOPs, bytes and shapes only; nothing is timed"
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
        meta["summary"] = summarize_run(m, wl, built.info, measured=spec.device != "meta")
        check_attention_kernels(built.info.get("attention_backend"), meta["summary"])
        if built.quality is not None and spec.device != "meta":  # lossy optimization: quality beside speed
            with torch.inference_mode():
                meta["summary"]["quality"] = built.measure_quality(output)
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
    `genprof run --trace-file` or by any torch.profiler `export_chrome_trace` (`docs/traces.md`).

    genprof's phase/step/repeat/module ranges are used when present, other tools' scopes
    (ProfilerStep#, annotations, autograd, nn.Module ranges) otherwise; without
    `module_types` (module name -> class name) ops are classified by name only,
    so attention computed as separate matmul/softmax ops is not found.
    `genprof.importer.import_trace` stores the same as a run directory.
    """
    from genprof.profiler import events, optable

    return optable.build(events.from_chrome_trace(path), module_types or {}, attention_kinds or {})


def check_attention_kernels(backend: str | None, summary: dict[str, Any]) -> None:
    """Record which attention backend the trace shows ran, and fail the run when it is not the one asked for:
    a measurement that is not what it says it is must not be stored as one."""
    from genprof.optimizations.attention import backend_of

    kernels = summary.get("attention_kernels")
    if kernels is None:  # timing mode: no trace to check against
        return
    ran = backend_of(kernels)
    summary["attention_backend_ran"] = ran
    if backend and backend != "sdpa" and ran not in (backend, "none"):
        raise GenprofError(f"attn={backend} was asked for but the trace shows {ran} attention "
                           f"({', '.join(sorted(kernels))}): the run would not measure what it says")


def summarize_run(m: Any, wl: Any, info: dict[str, Any], measured: bool = True) -> dict[str, Any]:
    """Summary metrics for run.json: phase statistics, steps, stability, memory, family shares.

    A run that measured nothing (the meta device) keeps its counts (FLOPs, bytes, attention kernels) and
    no time: `measured` is False, and no phase time, share or stability is stored for it."""
    summary: dict[str, Any] = {"timer": m.timer, "mode": m.mode, "measured": measured}
    if measured:
        summary["total"], phase_stats, summary["steps"] = phase_summary(m.phase_times)
        summary["phases"] = phase_stats
        summary["stability"] = {**stability(summary["total"], m.signals), "signals": m.signals}
        summary["memory"] = m.memory
        summary["derived"] = wl.derived_metrics(phase_stats, info)
    else:
        summary.update(total={}, phases={}, steps={}, derived={})
    if m.profiler:  # trace mode: how many events, and what collecting and analysing them cost
        summary["profiler"] = m.profiler
    if m.ops is not None and not m.ops.empty:
        if measured:
            summary.update(family_summary(m.ops))
        n = max(int(m.ops["repeat"].nunique()), 1)
        summary["flops_per_repeat"] = float(m.ops["flops"].sum() / n)
        summary["bytes_per_repeat"] = float(m.ops["bytes"].sum() / n)
        att = m.ops[(m.ops["family"] == "Attention") & (m.ops["repeat"] == m.ops["repeat"].min())]
        if "scope" in att:  # a policy's own scoring (genprof::last_query_scores) is attention work, not a kernel
            att = att[~att["scope"].astype(str).str.startswith("genprof::")]
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
    stability: str = ""  # stable | unstable (measured runs)
    reasons: list[str] = field(default_factory=list)


def suite(size: str = "small", out: str | Path = "runs", workloads: tuple[str, ...] = SUITE,
          on_start: Callable[[str], None] | None = None, progress: Callable[[str], None] | None = None,
          **kwargs: Any) -> list[SuiteEntry]:
    """Run every workload of the suite at one size; a failed workload is recorded and the rest go on.
    Each workload's model is released before the next is built, so the peak memory is one workload's."""
    entries = []
    for name in workloads:
        if on_start:
            on_start(name)
        t0 = time.perf_counter()
        try:
            res = run(make_spec(name, size=size, **kwargs), out=out, progress=progress)
            st = (res.meta.get("summary") or {}).get("stability") or {}
            entries.append(SuiteEntry(name, res.meta["status"], res.meta.get("reason", ""), res.path,
                                      time.perf_counter() - t0, st.get("verdict", ""), st.get("reasons", [])))
            del res
        except GenprofError as e:
            entries.append(SuiteEntry(name, "failed", str(e), None, time.perf_counter() - t0))
        release()
    return entries


def release() -> None:
    """Drop every cached build and collect: the models' memory goes back before the next workload."""
    import gc

    from genprof.profiler.session import trim_memory

    _CACHE.clear()
    gc.collect()
    trim_memory()
