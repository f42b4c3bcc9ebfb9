"""Project an op table onto a hardware profile: predicted time per op, family and phase.

The efficiency model, per call of an op with F FLOPs and B bytes moved, on a
profile with datasheet peak P (for the run's precision), bandwidth W and
efficiencies e_c, e_m:

    t_compute = F / (P * e_c)          t_memory = B / (W * e_m)
    t_op      = max(t_compute, t_memory)              (roofline: the op is bound by the larger)
    + CPU:    t_op += op_overhead_s                   (dispatch, paid in series with every op)
    + GPU:    per step, launch-bound excess = max(0, n_kernels * launch_s - sum t_op),
              reported as an `Overhead` row `[launch]`  (kernel issue overlaps execution)

An op is compute-bound when t_compute >= t_memory, i.e. when its intensity
F / B is at or above the ridge P*e_c / (W*e_m); ops with 0 FLOPs and 0 bytes
(views, allocation) launch no kernel: bound `none`, time = the dispatch term
on a CPU and nothing on a GPU. genprof's own `[overhead]` rows (Python between
ops) are not projected. The precision comes from the run's dtype (float32 ->
fp32, bfloat16/float16 -> bf16) unless given.

What it does not model: caches (bytes are one pass over each tensor), kernel
fusion, GEMM efficiency falling with small shapes, tails and wave quantization,
threading, and overlap between ops beyond the launch term. Those are what the
validation in docs/roofline.md measures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from genprof.errors import GenprofError, unknown_choice
from genprof.roofline.hardware import DTYPE_PRECISION, PRECISIONS, HardwareProfile

KEEP = ["run_id", "workload", "size", "optimizations", "repeat", "phase", "step", "part", "module", "op", "family",
        "attention_kind", "calls", "flops", "bytes", "seq_q", "seq_kv", "batch_heads", "head_dim"]
LAUNCH_OP = "[launch]"
# Ops that run a kernel although their bytes count 0: the profiler does not record a tensor list's shapes
# (cat), and ops that fill new memory have no input tensor to count (full, arange)
LIST_KERNELS = ("aten::cat", "aten::concat", "aten::concatenate", "aten::stack", "aten::full", "aten::full_like",
                "aten::zeros", "aten::zeros_like", "aten::ones", "aten::ones_like", "aten::arange", "aten::fill_",
                "aten::zero_", "aten::randn", "aten::rand", "aten::randn_like", "aten::linspace")


def precision_of(dtype: str | None, precision: str | None = None) -> str:
    if precision:
        if precision not in PRECISIONS:
            raise unknown_choice("precision", precision, PRECISIONS)
        return precision
    return DTYPE_PRECISION.get(dtype or "float32", "fp32")


def project(ops: pd.DataFrame, hw: HardwareProfile, dtype: str | None = "float32",
            precision: str | None = None) -> pd.DataFrame:
    """One row per op row of `ops` (overhead rows dropped) with the predicted time on `hw`.

    Added columns: flops_per_call, bytes_per_call, intensity (FLOP/byte), t_compute_s, t_memory_s (per
    call), time_s (predicted, all calls of the row), bound (compute | memory | none), measured_s (the
    row's measured total_time_s), hw, precision. On a GPU profile, `[launch]` rows (family Overhead,
    bound `launch`) carry the launch-bound excess of each step.
    """
    if ops is None or ops.empty:
        raise GenprofError("no op table to project: projection needs a trace-mode run (--mode trace)")
    prec = precision_of(dtype, precision)
    peak, bw = hw.flops(prec), hw.bandwidth
    real = ops[ops["family"] != "Overhead"]
    out = real[[c for c in KEEP if c in real.columns]].copy()
    out["measured_s"] = real["total_time_s"].to_numpy()
    calls = out["calls"].clip(lower=1).astype(float)
    f, b = out["flops"].astype(float) / calls, out["bytes"].astype(float) / calls
    if "input_shapes" in real and (real["op"] == "aten::embedding").any():  # runs counted the whole table
        emb = real["op"] == "aten::embedding"
        b[emb] = np.minimum(b[emb], real.loc[emb, "input_shapes"].map(lambda s: _embedding_bytes(s, prec)))
        out["bytes"] = (b * calls).round().astype("int64")
    out["flops_per_call"], out["bytes_per_call"] = f, b
    out["intensity"] = (f / b.where(b > 0)).astype(float)
    out["t_compute_s"], out["t_memory_s"] = f / peak, b / bw
    kernel = (f > 0) | (b > 0) | out["op"].isin(LIST_KERNELS)
    per_call = np.maximum(out["t_compute_s"], out["t_memory_s"])
    if hw.kind == "cpu":
        per_call = per_call + hw.op_overhead_s
    out["time_s"] = per_call * out["calls"]
    out["bound"] = np.where((f <= 0) & (b <= 0), "none",
                            np.where(out["t_compute_s"] >= out["t_memory_s"], "compute", "memory"))
    out["kernels"] = np.where(kernel, out["calls"], 0)
    if hw.kind == "gpu" and hw.launch_s > 0 and len(out):
        out = pd.concat([out, _launch_rows(out, hw.launch_s)], ignore_index=True)
    out["hw"], out["precision"] = hw.name, prec
    return out


def _embedding_bytes(shapes: str, prec: str) -> float:
    """Bytes of an embedding lookup: indices + gathered rows + output (not the whole table)."""
    import ast
    import math

    try:
        w, idx = ast.literal_eval(shapes)[:2]
        n = math.prod(idx)
        return float(8 * n + 2 * n * w[-1] * (4 if prec == "fp32" else 2))
    except (ValueError, SyntaxError, TypeError, IndexError):
        return float("inf")


def _launch_rows(proj: pd.DataFrame, launch_s: float) -> pd.DataFrame:
    keys = [k for k in ("run_id", "workload", "size", "optimizations", "repeat", "phase", "step") if k in proj]
    g = proj.groupby(keys, dropna=False, observed=True).agg(exec_s=("time_s", "sum"), kernels=("kernels", "sum"))
    g = g.reset_index()
    g["time_s"] = (g["kernels"] * launch_s - g["exec_s"]).clip(lower=0.0)
    g = g[g["time_s"] > 0].drop(columns=["exec_s"])
    g = g.assign(part="", module="", op=LAUNCH_OP, family="Overhead", attention_kind="", calls=0, flops=0, bytes=0,
                 measured_s=0.0, flops_per_call=0.0, bytes_per_call=0.0, intensity=np.nan, t_compute_s=0.0,
                 t_memory_s=0.0, bound="launch", kernels=0)
    return g


def read_projectable(run_dir: str | Path) -> tuple[dict, pd.DataFrame]:
    """(run.json, op table) of a stored successful trace-mode run, or a one-line GenprofError."""
    from genprof import store

    meta = store.read_run(run_dir)
    if meta["status"] != "ok":
        raise GenprofError(f"{run_dir} is a failed run ({meta.get('reason', '')}); project a successful run")
    ops = store.read_table(run_dir, store.OPS)
    if ops is None:
        raise GenprofError(f"{run_dir} is a timing-mode run: it has no op table; rerun with --mode trace")
    return meta, ops


def project_run(run_dir: str | Path, hw: HardwareProfile, precision: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Project one stored trace-mode run; returns (projection, run.json)."""
    meta, ops = read_projectable(run_dir)
    return project(ops, hw, meta.get("spec", {}).get("dtype"), precision), meta


def comparable(meta: dict[str, Any], hw: HardwareProfile) -> bool:
    """Whether the run's measured times were taken on the machine the profile describes."""
    spec, env = meta.get("spec") or {}, meta.get("environment") or {}
    device = str(spec.get("device", ""))
    if hw.kind == "cpu":
        return device == "cpu"
    name = str(env.get("device_name", "")).lower()
    return device.startswith("cuda") and hw.name in name.replace(" ", "").replace("-", "")


def step_weights(proj: pd.DataFrame, counts: dict[str, int]) -> pd.Series:
    """Weights that turn counted steps into a full run of `counts[phase]` steps.

    Per phase, the counted steps 0..k-1 are fitted by a straight line in the step
    index (least squares: k = 1 is a constant, diffusion steps have equal shapes;
    decode grows linearly with the KV length) and the line is summed over 0..n-1.
    With k >= 3 the first step keeps weight 1 and the line goes through the
    others only, summed over 1..n-1: a first decode step often does work the
    later ones skip (cross-attention keys/values computed once, cache set-up),
    and a line through it would extrapolate that difference over n^2/2 steps.
    The sum is linear in the counted values, so each row gets a weight; rows
    outside steps (step -1) keep weight 1, and so does every row when all n
    steps were counted. Use weights on sums only: single rows can have negative weights.
    """
    w = pd.Series(1.0, index=proj.index)
    for phase, n in counts.items():
        sel = (proj["phase"] == phase) & (proj["step"] >= 0)
        steps = np.sort(proj.loc[sel, "step"].unique())
        k = len(steps)
        if k == 0 or n <= 0 or (k == n and steps[-1] == n - 1):
            continue
        first = steps[0] if k >= 3 else None
        fit = steps[1:] if first is not None else steps
        start = 1 if first is not None else 0
        m, kf = n - start, len(fit)
        xbar = fit.mean()
        sxx = float(((fit - xbar) ** 2).sum())
        slope_total = (start + n - 1) * m / 2 - m * xbar
        per_step = {s: m / kf + ((s - xbar) / sxx * slope_total if sxx > 0 else 0.0) for s in fit}
        if first is not None:
            per_step[first] = 1.0
        w[sel] = proj.loc[sel, "step"].map(per_step).astype(float)
    return w


def summarize(proj: pd.DataFrame, by: str | Sequence[str] = "family", weights: pd.Series | None = None) -> pd.DataFrame:
    """Projected (and measured) time per group, mean over repeats, with shares and bound fractions.

    Columns: the groups, time_s (projected), share, measured_s (0 where not measured), flops, bytes,
    compute_s / memory_s (projected time of compute- and memory-bound ops), compute_fraction.
    """
    by = [by] if isinstance(by, str) else list(by)
    p = proj.copy()
    w = weights if weights is not None else pd.Series(1.0, index=p.index)
    for c in ("time_s", "measured_s", "flops", "bytes"):
        p[c] = p[c].astype(float) * w
    p["compute_s"] = p["time_s"].where(p["bound"] == "compute", 0.0)
    p["memory_s"] = p["time_s"].where(p["bound"] == "memory", 0.0)
    keys = (["run_id"] if "run_id" in p and p["run_id"].nunique() > 1 else []) + by
    cols = ["time_s", "measured_s", "flops", "bytes", "compute_s", "memory_s"]
    per_rep = p.groupby(keys + ["repeat"], dropna=False, observed=True)[cols].sum()
    out = per_rep.groupby(level=list(range(len(keys))), dropna=False, observed=True).mean().reset_index()
    tot = out.groupby("run_id")["time_s"].transform("sum") if keys[0] == "run_id" and len(keys) > 1 \
        else out["time_s"].sum()
    out["share"] = out["time_s"] / tot
    mtot = out.groupby("run_id")["measured_s"].transform("sum") if keys[0] == "run_id" and len(keys) > 1 \
        else out["measured_s"].sum()
    out["measured_share"] = out["measured_s"] / mtot if np.all(np.asarray(mtot) > 0) else np.nan
    out["compute_fraction"] = out["compute_s"] / out["time_s"].where(out["time_s"] > 0)
    if by == ["family"]:
        from genprof.profiler.taxonomy import FAMILIES

        order = {f: i for i, f in enumerate(FAMILIES)}
        out = out.sort_values(keys[:-1] + ["family"], key=lambda s: s.map(order) if s.name == "family" else s)
    return out.reset_index(drop=True)


def decode_per_token(proj: pd.DataFrame, phase: str = "decode") -> float:
    """Mean projected time of one decode step (mean over repeats and steps), launch excess included."""
    steps = proj[(proj["phase"] == phase) & (proj["step"] >= 0)]
    if steps.empty:
        raise GenprofError(f"no steps in phase {phase!r} to take a time per token from")
    per = steps.groupby(["repeat", "step"])["time_s"].sum()
    return float(per.mean())
