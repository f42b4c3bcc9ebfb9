"""Measure this machine's host profile: the host time of each op kind and of the Python around them.

What eager PyTorch costs the host per op is its dispatch path (Python binding,
dispatcher, the op's wrapper: checks, output allocation) without the kernel's
work, plus the Python of the modules that call the ops. genprof measures both
from its own runs of the suite at `tiny` size on the CPU, one thread, where
the kernels' work is small (the llm at its paper depth, DEPTH):

1. plain runs (no profiler, no module hooks): the thread CPU time of every step
   (and of every phase without steps), the minimum over repeats (CPU time, not
   wall time: a loaded machine preempts the process, which wall time counts);
2. traced runs (genprof's trace mode): per op row the per-call total time (the
   op with the ops it calls, e.g. linear -> addmm), minimum over repeats, minus
   its roofline time on this machine's `local` profile (the kernel's work);
   per op kind the median over calls. The number of module calls of every step
   comes from the same table (its `[overhead]` rows);
3. per workload, a fit over the units of step 1:
   plain CPU time - roofline time = (sum of its ops' kind costs)
                                    + python[workload] * (module calls),
   `python` being the time of the workload's Python per module call, which the
   traced `[overhead]` rows cannot give (they also hold the profiler's cost per
   event, several times larger). Units whose roofline time is more than half
   their time are left out (the kernels' work dominates them and the roofline
   misjudges it on a CPU). The traced op durations are taken as they are:
   `profiler_check` compares them with plain per-call times of the same ops
   (the profiler adds time inside an op for the ops it calls, and leaves out
   the Python binding), which the profile records.

The checks: each workload's
error in the fit, and its error when left out of the fit (predicted with the
others' op costs and the median of their Python per module call), both
against its plain CPU time. Not measured here: the CUDA launch and graph
replay costs (stated in genprof.roofline.host), and the difference between an
op's CPU wrapper and its CUDA wrapper (the CPU path stands in for it).
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from genprof.roofline.host import HostProfile, slug
from genprof.roofline.overlap import MODULE_CALL

UNIT = ["workload", "phase", "step"]
ROW = UNIT + ["module", "op", "input_shapes"]
# Measured at its paper depth with tiny widths: the host time per op grows with the number of layers (more
# Python objects and tensor metadata than the CPU caches hold; about 3.5 us per op at 2 layers, 4.9 at 32 here).
DEPTH: dict[str, dict[str, Any]] = {"llm": {"config": {"num_hidden_layers": 32}}}


class ThreadClock:
    """A timer for TimedPhases: marks are this thread's CPU time (time.thread_time)."""

    kind = "thread_time"

    def mark(self) -> float:
        return time.thread_time()

    @staticmethod
    def elapsed_s(start: float, end: float) -> float:
        return end - start


def _plain(built: Any, name: str, repeats: int) -> pd.DataFrame:
    """Thread CPU time per (phase, step), minimum over `repeats` runs after one warm-up."""
    import torch

    from genprof.phases import NullPhases
    from genprof.profiler.scopes import TimedPhases

    with torch.inference_mode():
        built.run(NullPhases())
    marks = []
    clock = ThreadClock()
    for r in range(repeats):
        ph = TimedPhases(clock, r)
        with torch.inference_mode():
            built.run(ph)
        marks += [(r, p, s, b - a) for r, p, s, a, b in ph.marks]
    df = pd.DataFrame(marks, columns=["repeat", "phase", "step", "cpu_s"])
    return df.groupby(["phase", "step"], as_index=False)["cpu_s"].min().assign(workload=name)


def measure_workload(name: str, repeats: int = 5, trace_repeats: int = 3,
                     params: dict[str, Any] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(plain CPU time per unit, traced op table) of one workload at `tiny` on this CPU (with `params`
    overriding the preset; by default DEPTH's)."""
    import torch

    from genprof import api
    from genprof.profiler import session

    params = DEPTH.get(name, {}) if params is None else params
    spec = api.make_spec(name, size="tiny", device="cpu", dtype="float32", mode="trace", params=params)
    built = api.build(spec)
    plain = _plain(built, name, repeats)
    labels = {"run_id": name, "workload": name, "size": "tiny", "optimizations": "baseline"}
    m = session.measure_trace(built, torch.device("cpu"), trace_repeats, 0, labels)
    return plain, m.ops


def host_rows(ops: pd.DataFrame, local: Any) -> pd.DataFrame:
    """Per op row (repeats folded): calls, per-call time (min over repeats), roofline time per call on
    `local`, and traced host time per call = per-call time - roofline time (not below 0)."""
    from genprof.roofline import project

    real = ops[ops["family"] != "Overhead"]
    roof = project(real, local.with_overrides(op_overhead_s=0.0), "float32")
    per = real.assign(_per=real["total_time_s"] / real["calls"].clip(lower=1),
                      _roof=(roof["time_s"] / roof["calls"].clip(lower=1)).to_numpy())
    g = per.groupby(ROW, sort=False, dropna=False).agg(calls=("calls", "first"), per_call_s=("_per", "min"),
                                                       roof_s=("_roof", "first")).reset_index()
    g = g.assign(host_s=(g["per_call_s"] - g["roof_s"]).clip(lower=0.0))
    return pd.concat([g, module_calls(ops)], ignore_index=True)


def module_calls(ops: pd.DataFrame) -> pd.DataFrame:
    """One `[module call]` row per unit and module: how many times its module range ran (one repeat)."""
    mods = ops[(ops["family"] == "Overhead") & (ops["module"].astype(str) != "")]
    m = mods.groupby(ROW[:-2] + ["repeat"], sort=False, dropna=False)["calls"].sum()
    m = m.groupby(level=ROW[:-2], sort=False, dropna=False).first().reset_index()
    return m.assign(op=MODULE_CALL, input_shapes="", per_call_s=0.0, roof_s=0.0, host_s=0.0)


def kind_costs(rows: pd.DataFrame) -> pd.Series:
    """Per op kind: the median over calls of the traced host time per call."""
    def wmedian(g: pd.DataFrame) -> float:
        return float(np.median(np.repeat(g["host_s"].to_numpy(), g["calls"].clip(lower=1).to_numpy())))

    return pd.Series({op: wmedian(g) for op, g in rows.groupby("op", sort=True) if op != MODULE_CALL}, dtype=float)


def units(rows: pd.DataFrame, plain: pd.DataFrame, costs: pd.Series, default: float) -> pd.DataFrame:
    """Per unit (a step, or a phase without steps): cpu_s (plain), roof_s, ops, modules (module calls)
    and x_s (the sum of its ops' kind costs)."""
    r = rows.assign(_x=rows["op"].map(costs).fillna(default) * rows["calls"],
                    _r=np.minimum(rows["roof_s"], rows["per_call_s"]) * rows["calls"],
                    _o=np.where(rows["op"] == MODULE_CALL, 0, rows["calls"]),
                    _m=np.where(rows["op"] == MODULE_CALL, rows["calls"], 0))
    r = r.assign(_x=np.where(r["op"] == MODULE_CALL, 0.0, r["_x"]), _r=np.where(r["op"] == MODULE_CALL, 0.0, r["_r"]))
    u = r.groupby(UNIT, sort=False).agg(ops=("_o", "sum"), modules=("_m", "sum"), x_s=("_x", "sum"),
                                        roof_s=("_r", "sum")).reset_index()
    u = u.merge(plain, on=UNIT, how="inner")
    stepped = set(map(tuple, rows.loc[rows["step"] >= 0, ["workload", "phase"]].drop_duplicates().to_numpy()))
    keep = (u["step"] >= 0) | ~pd.Series([(w, p) in stepped for w, p in zip(u["workload"], u["phase"])], index=u.index)
    return u[keep & (u["phase"] != "(outside phases)")].reset_index(drop=True)


def fit(u: pd.DataFrame) -> dict[str, float]:
    """Python seconds per module call per workload: the least relative error of
    cpu_s - roof_s = x_s + python[workload] * modules over the workload's units whose roofline time is at
    most half their CPU time; not below 0 (a workload whose ops alone take its time has none left)."""
    u = u[(u["roof_s"] <= 0.5 * u["cpu_s"]) & (u["modules"] > 0)]
    out = {}
    for wl, g in u.groupby("workload", sort=False):
        y = (g["cpu_s"] - g["roof_s"]).to_numpy()
        m, r = g["modules"].to_numpy() / y, (y - g["x_s"].to_numpy()) / y
        out[str(wl)] = max(float(np.sum(m * r) / np.sum(m * m)), 0.0)
    return out


def predict(u: pd.DataFrame, python: dict[str, float], default: float) -> pd.Series:
    """Predicted host time of each unit (roofline time added back: what the plain run measured)."""
    return u["x_s"] + u["workload"].map(python).fillna(default) * u["modules"] + u["roof_s"]


def _default_python(python: dict[str, float]) -> float:
    return float(np.median(list(python.values()))) if python else 0.0


def calibrate(rows: pd.DataFrame, plain: pd.DataFrame) -> dict[str, Any]:
    """Kind costs, the fit, each workload's error in the fit and when left out of it (its Python per
    module call then the median of the others')."""
    def fitted(r: pd.DataFrame):
        ops = r[r["op"] != MODULE_CALL]
        costs = kind_costs(ops)
        default = float(np.median(np.repeat(ops["host_s"], ops["calls"].clip(lower=1))))
        u = units(r, plain, costs, default)
        return costs, default, u, fit(u)

    costs, default, u, python = fitted(rows)
    u = u.assign(predicted_s=predict(u, python, _default_python(python)), used=u["roof_s"] <= 0.5 * u["cpu_s"])
    checks = []
    for wl in u["workload"].unique():
        left_out = float("nan")
        if u["workload"].nunique() > 1:
            c_o, d_o, _, p_o = fitted(rows[rows["workload"] != wl])
            mine = units(rows[rows["workload"] == wl], plain, c_o, d_o)
            left_out = float(predict(mine, {}, _default_python(p_o)).sum() / mine["cpu_s"].sum() - 1)
        else:
            mine = units(rows[rows["workload"] == wl], plain, costs, default)
        ins = u[u["workload"] == wl]
        checks.append({"workload": wl, "units": int(len(mine)), "cpu_s": float(mine["cpu_s"].sum()),
                       "roof_share": float(mine["roof_s"].sum() / mine["cpu_s"].sum()),
                       "python_per_module_s": python.get(wl, float("nan")),
                       "fit_error": float(ins["predicted_s"].sum() / ins["cpu_s"].sum() - 1),
                       "fit_worst_unit_error": float((ins["predicted_s"] / ins["cpu_s"] - 1).abs().max()),
                       "left_out_error": left_out})
    return {"costs": costs, "default": default, "python": python, "default_python": _default_python(python),
            "units": u, "checks": pd.DataFrame(checks)}


def profiler_check(seconds: float = 0.1) -> pd.DataFrame:
    """Per op: its plain per-call time (a loop of calls, no profiler; the Python binding included) and
    the duration the profiler records for it (what the op costs are made of): how far the profiler moves
    an op's own time. Tiny CPU tensors, one thread."""
    import torch
    import torch.nn.functional as F

    from genprof.profiler.session import _quiet_stderr
    from genprof.roofline.hardware import _timed

    x, w, v = torch.randn(1, 1, 64), torch.randn(64, 64), torch.randn(64)
    q, k = torch.randn(1, 4, 1, 16), torch.randn(1, 4, 33, 16)
    ids = torch.tensor([[3]])
    cases = {"aten::add": lambda: x + x, "aten::mul": lambda: x * x, "aten::linear": lambda: F.linear(x, w),
             "aten::layer_norm": lambda: F.layer_norm(x, (64,), v, v), "aten::softmax": lambda: x.softmax(-1),
             "aten::to": lambda: x.to(torch.float64), "aten::cat": lambda: torch.cat([x, x], 1),
             "aten::silu": lambda: F.silu(x), "aten::mean": lambda: x.mean(-1, keepdim=True),
             "aten::pow": lambda: x.pow(2), "aten::rsqrt": lambda: x.rsqrt(), "aten::view": lambda: x.view(64),
             "aten::transpose": lambda: x.transpose(1, 2), "aten::embedding": lambda: F.embedding(ids, w),
             "aten::scaled_dot_product_attention": lambda: F.scaled_dot_product_attention(q, k, k)}
    rows = []
    for name, fn in cases.items():
        plain = _timed(lambda: [fn() for _ in range(100)], seconds) / 100
        prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True)
        with _quiet_stderr():
            prof.start()
        try:
            for _ in range(20):
                fn()
        finally:
            with _quiet_stderr():
                prof.stop()
        rec = [e.cpu_time_total for e in prof.events() if e.name == name]
        rows.append({"op": name, "plain_s": plain, "recorded_s": float(np.median(rec)) / 1e6 if rec else np.nan})
    return pd.DataFrame(rows)


def _machine() -> dict[str, Any]:
    import torch

    from genprof.store import _cpu_name

    info: dict[str, Any] = {"cpu": _cpu_name(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
                            "torch": torch.__version__, "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            first = f.read().split("\n\n")[0]
        fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in first.splitlines() if ":" in line)}
        info.update({k: fields[f] for k, f in (("cpu_family", "cpu family"), ("cpu_model", "model"),
                                                ("cpu_mhz", "cpu MHz")) if f in fields})
    except OSError:
        pass
    return info


def measure_host_profile(names: Sequence[str] | None = None, repeats: int = 5, trace_repeats: int = 3,
                         command: str = "genprof host-profile",
                         on_start: Callable[[str], None] | None = None) -> tuple[HostProfile, dict[str, Any]]:
    """Measure this machine (one thread): returns (profile, calibration with its units and checks)."""
    import torch

    from genprof import api
    from genprof.roofline.hardware import measure_local

    api._quiet_libraries()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    t0, load0 = time.time(), os.getloadavg()
    try:
        local = measure_local(threads=1)
        plains, rows = [], []
        for name in names or api.SUITE:
            if on_start:
                on_start(name)
            plain, ops = measure_workload(name, repeats, trace_repeats)
            plains.append(plain)
            rows.append(host_rows(ops, local))
        check = profiler_check()
    finally:
        torch.set_num_threads(before)
    cal = calibrate(pd.concat(rows, ignore_index=True), pd.concat(plains, ignore_index=True))
    cal["profiler"] = check
    machine = _machine()
    measured_on = {**machine, "threads": 1, "load_average_before": [round(x, 2) for x in load0],
                   "load_average_after": [round(x, 2) for x in os.getloadavg()],
                   "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   "seconds": round(time.time() - t0, 1), "command": command,
                   "workloads": list(names or api.SUITE), "size": "tiny", "repeats": repeats,
                   "trace_repeats": trace_repeats, "local_profile": local.label}
    checks = cal["checks"]
    calibration = {"units": int(len(cal["units"])), "units_fitted": int(cal["units"]["used"].sum()),
                   "checks": checks.round(9).to_dict(orient="records"),
                   "profiler": check.round(9).to_dict(orient="records"),
                   "recorded_over_plain": float(check["recorded_s"].sum() / check["plain_s"].sum())}
    prof = HostProfile(name=slug(machine["cpu"]), cpu=machine["cpu"],
                       op_s={k: float(v) for k, v in cal["costs"].round(9).items()},
                       default_op_s=float(cal["default"]),
                       python_s={k: round(v, 9) for k, v in cal["python"].items()},
                       default_python_s=round(cal["default_python"], 9),
                       measured_on=measured_on, calibration=calibration)
    return prof, cal
