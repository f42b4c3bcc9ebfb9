"""Summary statistics of repeated measurements: median and spread, never one sample."""

from __future__ import annotations

import statistics
from typing import Sequence

import numpy as np


def summarize(samples_s: Sequence[float]) -> dict[str, float]:
    """median, p10, p90, stdev, min, max (seconds) and n of a list of samples."""
    xs = np.asarray(list(samples_s), dtype=float)
    if xs.size == 0:
        return {"n": 0}
    return {
        "median_s": float(np.median(xs)),
        "p10_s": float(np.percentile(xs, 10)),
        "p90_s": float(np.percentile(xs, 90)),
        "stdev_s": float(statistics.stdev(xs)) if xs.size > 1 else 0.0,
        "min_s": float(xs.min()),
        "max_s": float(xs.max()),
        "n": int(xs.size),
    }
