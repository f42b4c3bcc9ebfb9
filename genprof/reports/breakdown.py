"""Breakdowns of the op table: time per family, phase, module, ... with shares.

Functions from a tidy table to a tidy table (no plotting here). Times are
summed within each repeat, then averaged over repeats; the spread across
repeats is kept next to the mean.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from genprof.profiler.taxonomy import FAMILIES


def breakdown(ops: pd.DataFrame, by: str | Sequence[str] = "family", time: str = "total_time_s") -> pd.DataFrame:
    """Time per group: mean over repeats, its stdev, share of the total, calls, FLOPs, bytes.

    Groups also split by run when the table holds several runs.
    """
    by = [by] if isinstance(by, str) else list(by)
    keys = (["run_id"] if ops["run_id"].nunique() > 1 else []) + by
    per_repeat = ops.groupby(keys + ["repeat"], dropna=False, observed=True).agg(
        time_s=(time, "sum"), calls=("calls", "sum"), flops=("flops", "sum"), bytes=("bytes", "sum"))
    g = per_repeat.groupby(keys, dropna=False, observed=True)
    out = g.agg(time_s=("time_s", "mean"), time_stdev_s=("time_s", "std"), calls=("calls", "mean"),
                flops=("flops", "mean"), bytes=("bytes", "mean")).reset_index()
    out["time_stdev_s"] = out["time_stdev_s"].fillna(0.0)
    if keys[0] == "run_id" and len(keys) > 1:
        out["share"] = out["time_s"] / out.groupby("run_id")["time_s"].transform("sum")
    else:
        out["share"] = out["time_s"] / out["time_s"].sum()
    if by == ["family"]:
        order = {f: i for i, f in enumerate(FAMILIES)}
        out = out.sort_values(keys[:-1] + ["family"], key=lambda s: s.map(order) if s.name == "family" else s)
    else:
        out = out.sort_values("time_s", ascending=False)
    return out.reset_index(drop=True)


def top_ops(ops: pd.DataFrame, n: int = 15) -> pd.DataFrame:
    """The n most expensive (op, family) pairs, excluding overhead."""
    real = ops[ops["family"] != "Overhead"]
    return breakdown(real, by=["op", "family"]).head(n)
