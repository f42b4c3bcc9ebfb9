"""Comparisons of runs: time per group in each run against a baseline run.

A function from the op table of several runs (and their run.json summaries) to
a tidy table: per run and group (family, attention kind, phase, ...), the mean
time over repeats, its stdev, the baseline's, the delta and the speedup
(baseline / run, > 1 is faster). End-to-end speedups come from the runs'
measured totals (median over repeats), with a spread from the repeats.

Significance: a speedup counts only where the 95% confidence intervals of the
two medians (genprof.profiler.stats.median_ci, over the repeats) do not
overlap and the medians differ by more than 1% (stats.MIN_EFFECT: the drift
between runs of the same thing, which no run's interval sees); otherwise it is
"not significant", whatever its size. With fewer
than six repeats the intervals are [min, max] (they cover less than 95%, and
say so in `ci_level`). Each run's stability verdict (run.json) stands beside it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd

from genprof.errors import GenprofError
from genprof.profiler.stats import significant, summarize
from genprof.reports.breakdown import breakdown


def compare(ops: pd.DataFrame, by: str | Sequence[str] = "family", baseline: str | None = None) -> pd.DataFrame:
    """Per run and group: time_s, base_time_s, delta_s, speedup. baseline = a run_id (default: the first)."""
    run_ids = list(dict.fromkeys(ops["run_id"]))
    if len(run_ids) < 2:
        raise GenprofError("compare needs at least two runs with op tables (trace mode)")
    baseline = baseline or run_ids[0]
    if baseline not in run_ids:
        raise GenprofError(f"baseline {baseline!r} is not among the runs: {', '.join(run_ids)}")
    by = [by] if isinstance(by, str) else list(by)
    parts = []
    for rid in run_ids:
        b = breakdown(ops[ops["run_id"] == rid], by)
        b.insert(0, "run_id", rid)
        parts.append(b)
    table = pd.concat(parts, ignore_index=True)
    base = table[table["run_id"] == baseline].set_index(by)["time_s"].rename("base_time_s")
    out = table.join(base, on=by)
    out["base_time_s"] = out["base_time_s"].fillna(0.0)
    out["delta_s"] = out["time_s"] - out["base_time_s"]
    out["speedup"] = out["base_time_s"] / out["time_s"].where(out["time_s"] > 0)
    labels = ops.drop_duplicates("run_id").set_index("run_id")
    out.insert(1, "label", out["run_id"].map(lambda r: f"{labels.loc[r, 'workload']} {labels.loc[r, 'optimizations']}"))
    per_repeat = ops.groupby(["run_id", *by, "repeat"], dropna=False, observed=True)["total_time_s"].sum()
    cis = {k: summarize(g.to_numpy()) for k, g in per_repeat.groupby(level=list(range(len(by) + 1)))}
    out["significant"] = [verdict(cis.get((rid, *_key(row, by))), cis.get((baseline, *_key(row, by))))
                          if rid != baseline else "baseline" for rid, row in zip(out["run_id"], out.itertuples())]
    return out[["run_id", "label", *by, "time_s", "time_stdev_s", "base_time_s", "delta_s", "speedup", "significant",
                "share"]]


def _key(row: Any, by: list[str]) -> tuple:
    return tuple(getattr(row, b) for b in by)


def verdict(run: dict[str, Any] | None, base: dict[str, Any] | None) -> str:
    """`yes` when the two medians' confidence intervals do not overlap, `not significant` when they do, `—`
    when either has no interval (one repeat, or a group missing from one run)."""
    sig = significant(run, base) if run and base and run.get("n", 0) > 1 and base.get("n", 0) > 1 else None
    return "—" if sig is None else ("yes" if sig else "not significant")


def end_to_end(metas: Sequence[dict[str, Any]], baseline: str | None = None) -> pd.DataFrame:
    """Per run: total median, stdev, n and speedup against the baseline's median (from run.json).

    `speedup_spread` is the relative spread of the ratio, sqrt((sa/a)^2 + (sb/b)^2) x speedup,
    from the stdevs of the repeats.
    """
    rows, totals = [], {}
    for m in metas:
        tot = m.get("summary", {}).get("total", {})
        totals[m["run_id"]] = tot
        rows.append({"run_id": m["run_id"], "workload": m["spec"]["workload"],
                     "optimizations": "+".join(m["spec"].get("optimizations", [])) or "baseline",
                     "mode": m["spec"]["mode"], "total_median_s": tot.get("median_s"),
                     "total_stdev_s": tot.get("stdev_s"), "ci_low_s": tot.get("ci_low_s"),
                     "ci_high_s": tot.get("ci_high_s"), "n": tot.get("n"),
                     "stability": (m.get("summary", {}).get("stability") or {}).get("verdict", "—")})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    baseline = baseline or df["run_id"].iloc[0]
    df["significant"] = [verdict(totals[r], totals[baseline]) if r != baseline else "baseline" for r in df["run_id"]]
    b = df.set_index("run_id").loc[baseline]
    df["speedup"] = b["total_median_s"] / df["total_median_s"]
    rel = lambda s, m: (s / m) ** 2 if m else 0.0  # noqa: E731
    df["speedup_spread"] = [sp * math.sqrt(rel(s, m) + rel(b["total_stdev_s"], b["total_median_s"]))
                            for sp, s, m in zip(df["speedup"], df["total_stdev_s"], df["total_median_s"])]
    return df
