"""One operator family's projected time, op by op: which ops, how many launches, how many bytes each.

`family_ops(proj, family, workloads)` reads a projection of the suite
(`paper.project_suite`, rows already weighted to the full run) and, per
workload and op of the family, gives the launches over the whole inference,
the bytes one launch moves, the total bytes, the projected time and its share
of the workload's projected time. `COUNTS_NOTE` says how the counts under
every projection are made and what changed in them. Nothing here counts or
projects anything itself.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

COUNTS_NOTE = """\
FLOPs and bytes come from each op's recorded inputs and its real outputs: the recorded call is
replayed once on the meta device for its output shapes and dtypes, and bytes are inputs read +
outputs written at their element sizes, views 0, in-place ops writing their `self`
(docs/op-table.md). They are checked against an independent count on every workload: a
`TorchDispatchMode` that records the real tensors of every op and torch's FlopCounterMode agree
within 2% per phase (tests/test_count_crosscheck.py; at paper size on the meta device for
stable-diffusion and make-a-video, tests/test_meta_counting.py).

What changed (2026-11-29). Output shapes used to be taken as the broadcast of the input shapes.
For most elementwise ops that is right; for others it is not. `group_norm` on a [2, 320, 64, 64]
input with a [320] weight was counted as writing [2, 320, 64, 320]: 3x its true bytes per call,
and more where the channels outnumber the width (5.5x at [2, 320, 32, 32], 20x at
[2, 640, 16, 16]; make-a-video's [2, 320, 16, 32, 32] 5.5x). Normalization was thus 37%
(stable-diffusion), 46% (imagen), 14% (prod-image) and 59% (make-a-video) of the projected H100
time, and the Convolution shares (24%, 38%, 15%, 11%) were understated. `cat` over a tensor list moved 0 bytes
(the profiler's plain shapes leave tensor lists out), and casts, pooling, upsampling, padding,
`repeat` and reductions had their outputs guessed. Causal attention was counted at the full
Lq x Lk; it is now the unmasked pairs (what a fused kernel computes), which lowers the FLOPs of
causal text encoders and LLM prefill. Every number on this page comes from the new counts.
"""


def family_ops(proj: pd.DataFrame, family: str, workloads: Sequence[str], hw: str) -> pd.DataFrame:
    """Per workload and op of `family` on profile `hw`: launches, bytes per launch, bytes, projected
    seconds, share of the workload's projected time; largest first within each workload."""
    p = proj[(proj["hw"] == hw) & proj["workload"].isin(list(workloads))]
    if p.empty:
        return pd.DataFrame()
    total = p.groupby("workload")["time_s"].sum()
    f = p[p["family"] == family].assign(launches=lambda d: d["calls"].astype(float) * d["weight"])
    g = f.groupby(["workload", "op"]).agg(launches=("launches", "sum"), bytes=("bytes", "sum"),
                                          projected_s=("time_s", "sum")).reset_index()
    g["bytes_per_launch"] = g["bytes"] / g["launches"]
    g["share_of_time"] = g["projected_s"] / g["workload"].map(total)
    order = {w: i for i, w in enumerate(workloads)}
    g = g.sort_values(["workload", "projected_s"], key=lambda s: s.map(order) if s.name == "workload" else -s)
    return g[["workload", "op", "launches", "bytes_per_launch", "bytes", "projected_s", "share_of_time"]]


def summary(table: pd.DataFrame, family: str) -> str:
    """One line per workload: the family's share of projected time and the op that takes most of it."""
    lines = []
    for wl, g in table.groupby("workload", sort=False):
        top = g.iloc[0]
        lines.append(f"- {wl}: {family} {100 * g['share_of_time'].sum():.1f}% of projected time; "
                     f"`{top['op'].split('::')[-1]}` {100 * top['share_of_time']:.1f}%, "
                     f"{top['launches']:,.0f} launches of {top['bytes_per_launch'] / 1e6:.3g} MB")
    return "\n".join(lines)


def markdown(table: pd.DataFrame, family: str = "Normalization") -> str:
    """A line per workload, then the table with readable units: MB per launch, GB in all, ms, %."""
    from genprof.reports.markdown import to_markdown

    if table.empty:
        return "(not counted)"
    t = pd.DataFrame({
        "workload": table["workload"], "op": "`" + table["op"] + "`",
        "launches": table["launches"].round().astype("int64"),
        "MB per launch": (table["bytes_per_launch"] / 1e6).map(lambda v: f"{v:.3g}"),
        "GB in all": (table["bytes"] / 1e9).map(lambda v: f"{v:.3g}"),
        "projected ms": (table["projected_s"] * 1e3).map(lambda v: f"{v:.3g}"),
        "share of time": (100 * table["share_of_time"]).map(lambda v: f"{v:.1f}%"),
    })
    return summary(table, family) + "\n\n" + to_markdown(t)
