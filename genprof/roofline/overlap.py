"""Host time, device time and their overlap: is a projected phase device-bound or host-bound?

The roofline (genprof.roofline.project) prices each op on the GPU and assumes
the host keeps up. Here the host is priced too, from a host profile
(genprof.roofline.host), and the two are overlapped:

- host time, eager: per op call its dispatch cost on the profiled CPU, plus
  the CUDA launch cost when it runs a kernel; per module call (the op table's
  `[overhead]` rows say how many ran, and where) the Python time of the
  workload's code; with CUDA graphs: nothing per op or module, one
  `graph_replay_s` per step;
- device time: the roofline, as the projection has it (`device_s`, a step's
  `[launch]` row included); in the overlap each kernel occupies the device
  for its roofline time but no less than the profile's `launch_s` (one stream
  runs kernels one after another, and a kernel doing almost nothing still
  takes a few microseconds: `busy_s`, which replaces the per-step `[launch]`
  excess);
- overlap: the host issues the ops in order; the device runs each kernel as
  soon as it has been issued and the previous one has finished (one stream,
  the device runs behind the host); a synchronization at the end of every step
  and of every phase (reading a token) drains the queue. A step takes
  `max(H, max_i (issue_i + sum of the device times from kernel i on))`, H its host time.
  Calls of one table row are consecutive identical ops, so only a row's first
  and last call need checking.

Regimes (what-if rows): `eager` (per-op dispatch, as measured);
`eager+fused-norm` (the kernels of each normalization module call fused into
one: one dispatch and launch, and one pass over the activations on the
device: the largest single pass of the unfused ops); `graphs` (the step
replayed as a CUDA graph: the same kernels, host cost one replay);
`graphs+fused-norm` (both: what compiling with CUDA graphs, at least, buys).

A phase is host-bound when its host time exceeds its device busy time; the
ratio says by how much. Not modelled: launch latency before the first kernel,
multiple streams, the host's own work between steps beyond what the table
shows, and kernels that compilation would fuse other than normalization.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from genprof.errors import unknown_choice
from genprof.roofline.hardware import HardwareProfile
from genprof.roofline.host import HostProfile
from genprof.roofline.project import KEEP, project

REGIMES = ("eager", "eager+fused-norm", "graphs", "graphs+fused-norm")
FUSED_NORM_OP = "[fused norm]"
MODULE_CALL = "[module call]"
FUSED_NORM_PRICE = "aten::layer_norm"  # a fused norm costs the host one call of a fused norm op
_SEG = ("run_id", "workload", "repeat", "phase", "step")


def _keys(proj: pd.DataFrame) -> list[str]:
    return [k for k in _SEG if k in proj.columns]


def fuse_norms(proj: pd.DataFrame) -> pd.DataFrame:
    """The projection with every normalization module call's ops replaced by one fused kernel.

    Per (segment, module) that ran a Normalization op: one row at the first row's place, calls = the
    first row's calls (the module's invocations), time and bytes per call = the largest single pass
    among its kernel rows, FLOPs summed. Other rows are unchanged."""
    keys = _keys(proj) + ["module"]
    p = proj.reset_index(drop=True)
    other = (p["bound"] == "launch") | (p["op"] == MODULE_CALL)
    norm = (p["family"] == "Normalization") & (p["module"].astype(str) != "") & ~other
    if not norm.any():
        return p
    gid = p.groupby(keys, sort=False, dropna=False, observed=True).ngroup()
    in_norm = gid.isin(set(gid[norm])) & ~other
    sub = p[in_norm].assign(_g=gid[in_norm])
    calls = sub["calls"].clip(lower=1).astype(float)
    sub = sub.assign(_t=sub["time_s"] / calls, _b=sub["bytes"] / calls)
    g = sub.groupby("_g", sort=False)
    first = g.head(1).set_index("_g")
    n = first["calls"].clip(lower=1).astype(float)
    t, b = g["_t"].max(), g["_b"].max()
    fused = first.assign(op=FUSED_NORM_OP, family="Normalization", time_s=n * t, bytes=(n * b).round(),
                         flops=g["flops"].sum(), kernels=n.astype("int64"), bound="memory",
                         bytes_per_call=b, flops_per_call=g["flops"].sum() / n)
    fused.index = g.head(1).index  # the first row's place
    return pd.concat([p[~in_norm], fused.drop(columns=["_t", "_b"], errors="ignore")]).sort_index()


def timeline(ops: pd.DataFrame, hw: HardwareProfile, dtype: str | None = "float32",
             precision: str | None = None) -> pd.DataFrame:
    """The projection of `ops` on `hw` with the module calls as rows of their own (op `[module call]`,
    no kernel), every row in the order it ran (`seq`; a step's `[launch]` row last)."""
    proj = project(ops, hw, dtype, precision)
    real = np.flatnonzero((ops["family"] != "Overhead").to_numpy())
    proj = proj.assign(seq=np.r_[real, np.full(len(proj) - len(real), len(ops))].astype(float))
    mods = ops[(ops["family"] == "Overhead") & (ops["module"].astype(str) != "")]
    calls = mods[[c for c in KEEP if c in mods.columns]].assign(
        op=MODULE_CALL, family="Overhead", time_s=0.0, kernels=0, bound="none", flops=0, bytes=0,
        seq=np.flatnonzero(((ops["family"] == "Overhead") & (ops["module"].astype(str) != "")).to_numpy()))
    return pd.concat([proj, calls], ignore_index=True).sort_values("seq", kind="stable").reset_index(drop=True)


def segments(ops: pd.DataFrame, hw: HardwareProfile, host: HostProfile, regime: str = "eager",
             dtype: str | None = "float32", line: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per step (and per phase outside steps): device_s (the roofline, `[launch]` rows included),
    busy_s (the device's time with each kernel at least `hw.launch_s`), host_s, combined_s, kernels, ops.

    `ops` is an op table (counted rows, not weighted to a full run); `line` its `timeline` on `hw`
    when already made."""
    if regime not in REGIMES:
        raise unknown_choice("regime", regime, REGIMES)
    p = line if line is not None else timeline(ops, hw, dtype)
    p = fuse_norms(p) if regime.endswith("fused-norm") else p
    keys = _keys(p)
    launch = (p["bound"] == "launch").to_numpy()
    module = (p["op"] == MODULE_CALL).to_numpy()
    kernel = (p["kernels"].to_numpy() > 0) & ~launch
    n = np.where(launch, 0.0, p["calls"].clip(lower=0).to_numpy(float))
    roof = np.where(kernel, p["time_s"].to_numpy(float) / np.maximum(n, 1.0), 0.0)
    d = np.where(kernel, np.maximum(roof, hw.launch_s), 0.0)  # one stream: no kernel is shorter than the floor
    graphs = regime.startswith("graphs")
    if graphs:
        h = np.zeros(len(p))
    else:
        price = p["op"].map(lambda o: host.op_cost(FUSED_NORM_PRICE if o == FUSED_NORM_OP else o)).to_numpy(float)
        python = p["workload"].map(host.python_cost).to_numpy(float) if "workload" in p else host.default_python_s
        h = np.where(module, python, price + np.where(kernel, host.launch_s, 0.0))
    seg = p.groupby(keys, sort=False, dropna=False, observed=True).ngroup().to_numpy()
    order = np.argsort(seg, kind="stable")  # rows in run order within their step
    seg, n, d, h, kernel, roof = seg[order], n[order], d[order], h[order], kernel[order], roof[order]
    launch_s = p["time_s"].to_numpy(float)[order] * launch[order]
    H, D = n * h, n * d
    first = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
    replay = host.graph_replay_s if graphs else 0.0  # a graph's kernels are all issued once it is launched
    hc = _group_cumsum(H, first) + replay  # host clock at the end of each row
    dsuf = _group_cumsum(D[::-1], _rev_starts(first, len(seg)))[::-1]  # device time of this row and after
    cand = np.full(len(seg), -np.inf)
    first_call = hc - H + h + dsuf  # the row's first call issued, then everything after it
    last_call = hc + d + (dsuf - D)  # the row's last call
    cand[kernel] = np.maximum(first_call, last_call)[kernel]
    end = np.maximum(np.maximum.reduceat(cand, first), np.maximum.reduceat(hc, first))
    out = p.iloc[order[first]][keys].reset_index(drop=True)
    return out.assign(device_s=np.add.reduceat(n * roof + launch_s, first), busy_s=np.add.reduceat(D, first),
                      host_s=np.add.reduceat(H, first) + replay, combined_s=end,
                      kernels=np.add.reduceat(np.where(kernel, n, 0.0), first),
                      ops=np.add.reduceat(np.where(module, 0.0, n), first), regime=regime)


def _group_cumsum(x: np.ndarray, starts: np.ndarray) -> np.ndarray:
    c = np.cumsum(x)
    offset = np.repeat(np.r_[0.0, c[starts[1:] - 1]], np.diff(np.r_[starts, len(x)]))
    return c - offset


def _rev_starts(starts: np.ndarray, n: int) -> np.ndarray:
    """Start indices of the same groups in the reversed array."""
    ends = np.r_[starts[1:], n]  # exclusive ends, in order
    return np.sort(n - ends)


def phases(ops: pd.DataFrame, hw: HardwareProfile, host: HostProfile, dtype: str | None = "float32",
           regimes: Sequence[str] = REGIMES, counts: dict[str, int] | None = None,
           precision: str | None = None) -> pd.DataFrame:
    """Per phase and regime: device_s, busy_s, host_s, combined_s (mean over repeats; with `counts`, the
    counted steps extended to counts[phase] steps as project.step_weights does), steps, kernels per step
    (per phase when it has no steps), bound (device | host: host_s against busy_s) and ratio (the larger
    of the two over the smaller)."""
    from genprof.roofline.project import step_weights

    frames = []
    line = timeline(ops, hw, dtype, precision)
    for regime in regimes:
        s = segments(ops, hw, host, regime, line=line)
        w = step_weights(s, counts or {})
        s = s.assign(**{c: s[c] * w for c in ("device_s", "busy_s", "host_s", "combined_s", "kernels", "ops")},
                     _steps=np.where(s["step"] >= 0, w, 0.0))
        keys = [k for k in ("run_id", "workload") if k in s and s[k].nunique() > 1] + ["phase", "regime"]
        per_rep = s.groupby(keys + ["repeat"], sort=False, observed=True)[
            ["device_s", "busy_s", "host_s", "combined_s", "kernels", "ops", "_steps"]].sum()
        frames.append(per_rep.groupby(level=list(range(len(keys))), sort=False).mean().reset_index())
    out = pd.concat(frames, ignore_index=True).rename(columns={"_steps": "steps"})
    out["kernels"] = out["kernels"] / out["steps"].where(out["steps"] > 0, 1.0)
    out = out.rename(columns={"kernels": "kernels_per_step"}).drop(columns=["ops"])
    return verdict(out)


def verdict(df: pd.DataFrame) -> pd.DataFrame:
    """Add bound (host | device: host_s against busy_s) and ratio (>= 1: how many times the larger exceeds
    the smaller)."""
    host_bound = df["host_s"] > df["busy_s"]
    hi = np.where(host_bound, df["host_s"], df["busy_s"])
    lo = np.where(host_bound, df["busy_s"], df["host_s"])
    return df.assign(bound=np.where(host_bound, "host", "device"),
                     ratio=np.where(lo > 0, hi / np.where(lo > 0, lo, 1.0), np.inf))


def describe(bound: str, ratio: float) -> str:
    """'host-bound 3.2x' / 'device-bound 1.4x'."""
    return f"{bound}-bound {ratio:.3g}×" if np.isfinite(ratio) else f"{bound}-bound"


def report(ops: pd.DataFrame, hw: HardwareProfile, host: HostProfile, dtype: str | None = "float32",
           regimes: Sequence[str] = REGIMES, counts: dict[str, int] | None = None,
           precision: str | None = None) -> pd.DataFrame:
    """`phases` for people: phase, regime, device/busy/host/combined seconds, kernels per step, verdict,
    and the combined time's speedup over eager (phases outside the workload's own left out)."""
    ph = phases(ops, hw, host, dtype, regimes, counts, precision)
    ph = ph[ph["phase"] != "(outside phases)"]
    eager = ph[ph["regime"] == "eager"].set_index("phase")["combined_s"]
    return pd.DataFrame({"phase": ph["phase"], "regime": ph["regime"], "device s": ph["device_s"],
                         "busy s": ph["busy_s"], "host s": ph["host_s"], "combined s": ph["combined_s"],
                         "kernels/step": ph["kernels_per_step"].round(0),
                         "verdict": [describe(b, r) for b, r in zip(ph["bound"], ph["ratio"])],
                         "vs eager": (ph["phase"].map(eager) / ph["combined_s"]).map(lambda v: f"{v:.2f}×")})
