"""Statistics of repeated measurements: median and spread, never one sample; and whether a run is stable.

`summarize(samples)`: median, p10/p25/p75/p90, IQR, MAD, stdev, min, max, n,
outliers (beyond the median by more than OUTLIER_MADS scaled MADs and
OUTLIER_MIN_REL of the median, or, with fewer than 5 samples, above
OUTLIER_RATIO x the smallest), and a
distribution-free confidence interval of the median from order statistics
(the ranks j, k with binomial coverage P(j <= rank of the median <= k); with n
samples the widest interval [min, max] covers with probability 1 - 2 / 2^n, so
95% needs n >= 6, and `ci_level` says what the interval covers).

`stability(total, signals)`: the verdict of a run against stated bounds:
- spread: the relative MAD (MAD / median) above MAX_REL_MAD with n >= 3, or
  the two samples differing by more than MAX_REL_RANGE_2 of their median;
- outliers: any sample counted as one above;
- starved repeats: a repeat whose process CPU time per wall second and thread
  is below STARVED x the best repeat's (the process waited for a CPU: other
  work ran), when the best repeat kept its threads busy (>= BUSY);
and the interference signals beside it, reported as warnings: machine load
(1-minute load average) above the CPUs available at the start or end, more
torch threads than available CPUs.
`significant(a, b)`: whether two medians differ beyond their confidence
intervals (non-overlapping intervals).
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Sequence

import numpy as np

MAX_REL_MAD = 0.10
MAX_REL_RANGE_2 = 0.20
OUTLIER_MADS = 5.0
OUTLIER_MIN_REL = 0.10  # ...and by more than this fraction of the median (a tiny MAD makes any blip "far")
OUTLIER_RATIO = 1.5
STARVED = 0.6
BUSY = 0.25
MAD_SCALE = 1.4826  # MAD x this estimates the standard deviation of normal samples
BOUNDS = {"max_rel_mad": MAX_REL_MAD, "max_rel_range_of_2": MAX_REL_RANGE_2, "outlier_mads": OUTLIER_MADS,
          "outlier_min_rel": OUTLIER_MIN_REL,
          "outlier_ratio_small_n": OUTLIER_RATIO, "starved_cpu_fraction": STARVED, "busy_cpu_fraction": BUSY}


def median_ci(xs: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(low, high, coverage) of the median: the narrowest symmetric order-statistic interval with coverage
    >= `level`, or [min, max] with its coverage when n is too small for `level`."""
    s = np.sort(np.asarray(list(xs), dtype=float))
    n = s.size
    if n == 0:
        return math.nan, math.nan, 0.0
    if n == 1:
        return float(s[0]), float(s[0]), 0.0
    pmf = [math.comb(n, i) / 2 ** n for i in range(n + 1)]
    best = (0, n - 1, 1 - 2 * pmf[0])  # ranks 0-based: P(s[j] <= median <= s[k]) = P(j < B <= k), B ~ Bin(n, 1/2)
    tail = 0.0
    for j in range(n // 2):
        tail += pmf[j]
        cover = 1 - 2 * tail
        if cover < level:
            break
        best = (j, n - 1 - j, cover)
    j, k, cover = best
    return float(s[j]), float(s[k]), float(cover)


def summarize(samples_s: Sequence[float]) -> dict[str, float]:
    """median, percentiles, IQR, MAD, stdev, min, max, n, outliers and the median's CI (seconds)."""
    xs = np.asarray(list(samples_s), dtype=float)
    if xs.size == 0:
        return {"n": 0}
    med = float(np.median(xs))
    mad = float(np.median(np.abs(xs - med)))
    lo, hi, level = median_ci(xs)
    p10, p25, p75, p90 = (float(v) for v in np.percentile(xs, [10, 25, 75, 90]))
    return {
        "median_s": med,
        "p10_s": p10,
        "p25_s": p25,
        "p75_s": p75,
        "p90_s": p90,
        "iqr_s": p75 - p25,
        "mad_s": mad,
        "stdev_s": float(statistics.stdev(xs)) if xs.size > 1 else 0.0,
        "min_s": float(xs.min()),
        "max_s": float(xs.max()),
        "ci_low_s": lo, "ci_high_s": hi, "ci_level": level,
        "outliers": outliers(xs),
        "n": int(xs.size),
    }


def outliers(xs: Sequence[float]) -> int:
    """How many samples lie beyond the median by more than OUTLIER_MADS scaled MADs and OUTLIER_MIN_REL of the
    median (n >= 5), or, with fewer samples (where a MAD cannot tell), above OUTLIER_RATIO x the smallest."""
    a = np.asarray(list(xs), dtype=float)
    if a.size < 2:
        return 0
    if a.size < 5:
        return int((a > OUTLIER_RATIO * a.min()).sum()) if a.min() > 0 else 0
    med = np.median(a)
    mad = np.median(np.abs(a - med)) * MAD_SCALE
    return int((np.abs(a - med) > max(OUTLIER_MADS * mad, OUTLIER_MIN_REL * abs(med))).sum())


def stability(total: dict[str, Any], signals: dict[str, Any]) -> dict[str, Any]:
    """The run's verdict (`stable` / `unstable`) and why, from the total's statistics and the per-repeat
    signals (`wall_s`, `cpu_s` per repeat; `threads`, `cpus`, `load_start`, `load_end`)."""
    reasons, warnings = [], []
    n, med = int(total.get("n") or 0), total.get("median_s") or 0.0
    rel_mad = total.get("mad_s", 0.0) / med if med > 0 else 0.0
    if n >= 3 and rel_mad > MAX_REL_MAD:
        reasons.append(f"spread: MAD is {100 * rel_mad:.0f}% of the median (bound {100 * MAX_REL_MAD:.0f}%)")
    if n == 2 and med > 0 and (total["max_s"] - total["min_s"]) / med > MAX_REL_RANGE_2:
        reasons.append(f"spread: the two repeats differ by {100 * (total['max_s'] - total['min_s']) / med:.0f}% "
                       f"of their median (bound {100 * MAX_REL_RANGE_2:.0f}%)")
    if total.get("outliers"):
        reasons.append(f"outliers: {total['outliers']} of {n} repeats far from the others "
                       f"({total['min_s']:.4g} s to {total['max_s']:.4g} s)")
    util = cpu_utilization(signals)
    if util and max(util) >= BUSY:
        starved = [i for i, u in enumerate(util) if u < STARVED * max(util)]
        if starved:
            reasons.append(f"starved: repeat {', '.join(map(str, starved))} got "
                           f"{100 * min(util[i] for i in starved) / max(util):.0f}% of the CPU time per second "
                           f"the best repeat got (other work ran)")
    cpus, threads = signals.get("cpus"), signals.get("threads")
    for when in ("load_start", "load_end"):
        load = signals.get(when)
        if load is not None and cpus and load > cpus:
            warnings.append(f"busy machine: load average {load:.1f} at the {when[5:]} on {cpus} CPUs")
    if cpus and threads and threads > cpus:
        warnings.append(f"{threads} torch threads on {cpus} available CPUs")
    return {"verdict": "unstable" if reasons else "stable", "reasons": reasons, "warnings": warnings,
            "rel_mad": rel_mad, "cpu_utilization": util, "bounds": BOUNDS}


def cpu_utilization(signals: dict[str, Any]) -> list[float]:
    """Per repeat: process CPU seconds per wall second per torch thread (1.0: every thread busy throughout)."""
    wall, cpu, threads = signals.get("wall_s") or [], signals.get("cpu_s") or [], signals.get("threads") or 1
    return [c / (w * threads) if w > 0 else 0.0 for w, c in zip(wall, cpu)]


# The smallest difference of medians called significant: a run's interval sees only the noise within it,
# not the drift between runs of the same thing (two runs of one 50 ms sleep, one after the other, have been
# measured 0.1% apart with intervals 0.2% wide).
MIN_EFFECT = 0.01


def significant(a: dict[str, Any], b: dict[str, Any]) -> bool | None:
    """Whether two medians differ: their confidence intervals do not overlap and the medians are more than
    MIN_EFFECT apart (None: no interval known)."""
    keys = ("ci_low_s", "ci_high_s")
    if not all(isinstance(d.get(k), (int, float)) and math.isfinite(d[k]) for d in (a, b) for k in keys):
        return None
    apart = a["ci_high_s"] < b["ci_low_s"] or b["ci_high_s"] < a["ci_low_s"]
    ma, mb = a.get("median_s"), b.get("median_s")
    if apart and isinstance(ma, (int, float)) and isinstance(mb, (int, float)):
        return abs(ma - mb) > MIN_EFFECT * min(abs(ma), abs(mb))
    return apart


def phase_summary(times: Any) -> tuple[dict[str, Any], dict[str, dict[str, float]], dict[str, Any]]:
    """(total, phases, steps) of a phase-times table (phase, step, repeat, time_s): `summarize` of each phase's
    whole time per repeat (`total` is the phase named so), and per stepped phase its steps per repeat and the
    statistics of one step."""
    from genprof.profiler.scopes import NO_STEP

    whole = times[times["step"] == NO_STEP].groupby(["phase", "repeat"])["time_s"].sum()
    phases = {str(ph): summarize(g.to_numpy()) for ph, g in whole.groupby(level=0)}
    stepped = times[times["step"] != NO_STEP]
    steps = {str(ph): {"steps_per_repeat": int(g.groupby("repeat").size().median()),
                       "step": summarize(g["time_s"].to_numpy())} for ph, g in stepped.groupby("phase")}
    return phases.pop("total", {}), phases, steps
