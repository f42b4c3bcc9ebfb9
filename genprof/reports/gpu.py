"""GPU time: per operator family, per kernel, per stream (tables for the CLI and the HTML report).

The op table's `device_time_s` is the time of the kernels, memcpys and memsets
each row launched; `kernels.parquet` (runs imported from a trace) has the
same time per kernel, stream and launching op; run.json's `summary.gpu` has
busy time per device and stream beside the summed time, so overlap between
streams shows. Functions from those tables to tidy tables, and the HTML
section built from them; no plotting of their own (the family figure is
`figures.family_breakdown` over device time).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from genprof.profiler.kernels import short_name

TOP_KERNELS = 25


def device_families(ops: pd.DataFrame) -> pd.DataFrame:
    """Per run and family: device time (mean over repeats), its share of the run's device time, calls."""
    if ops.empty or "device_time_s" not in ops or not (ops["device_time_s"] > 0).any():
        return pd.DataFrame(columns=["run_id", "family", "time_s", "share", "calls"])
    dev = ops[ops["device_time_s"] > 0]
    per = dev.groupby(["run_id", "family", "repeat"]).agg(time_s=("device_time_s", "sum"), calls=("calls", "sum"))
    out = per.groupby(level=[0, 1]).mean().reset_index()
    out["share"] = out["time_s"] / out.groupby("run_id")["time_s"].transform("sum")
    return out.sort_values(["run_id", "time_s"], ascending=[True, False]).reset_index(drop=True)[
        ["run_id", "family", "time_s", "share", "calls"]]


def top_kernels(kernels: pd.DataFrame, n: int = TOP_KERNELS) -> pd.DataFrame:
    """Per run: the n kernels (memcpy, memset) with the most time, summed over streams and repeats (mean per
    repeat), with the op that launched them, their family, share of the run's device time and streams."""
    cols = ["run_id", "kernel", "kind", "op", "family", "streams", "calls", "time_s", "share"]
    if kernels is None or kernels.empty:
        return pd.DataFrame(columns=cols)
    k = kernels.assign(name=[short_name(x) if kind == "kernel" else x for x, kind in
                             zip(kernels["kernel"], kernels["kind"])])
    reps = k.groupby("run_id")["repeat"].nunique().clip(lower=1)
    g = k.groupby(["run_id", "name", "kind", "op", "family"], dropna=False).agg(
        calls=("calls", "sum"), time_s=("time_s", "sum"),
        streams=("stream", lambda s: ", ".join(map(str, sorted(set(s)))))).reset_index()
    g[["calls", "time_s"]] = g[["calls", "time_s"]].div(g["run_id"].map(reps), axis=0)
    g["share"] = g["time_s"] / g.groupby("run_id")["time_s"].transform("sum")
    g = g.sort_values(["run_id", "time_s"], ascending=[True, False]).groupby("run_id").head(n)
    return g.rename(columns={"name": "kernel"}).reset_index(drop=True)[cols]


def streams(metas: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Per run, device and stream (and `all` per device): summed device time, busy time, overlap."""
    rows = []
    for rid, meta in metas.items():
        gpu = (meta.get("summary") or {}).get("gpu") or {}
        for dev, d in (gpu.get("devices") or {}).items():
            for s, v in (d.get("streams") or {}).items():
                rows.append({"run_id": rid, "device": dev, "stream": s, "events": v.get("events"),
                             "sum_s": v.get("sum_s"), "busy_s": v.get("busy_s")})
            rows.append({"run_id": rid, "device": dev, "stream": "all", "events": d.get("events"),
                         "sum_s": d.get("sum_s"), "busy_s": d.get("busy_s")})
    out = pd.DataFrame(rows, columns=["run_id", "device", "stream", "events", "sum_s", "busy_s"])
    out["overlap_s"] = out["sum_s"] - out["busy_s"]
    return out


def html_section(d: dict[str, Any], labels: dict[str, str], order: list[str]) -> dict[str, Any] | None:
    """The report's GPU section (None when no run has device time): tables of GPU time by family, by kernel
    and by stream, and the data of the family figure."""
    from genprof import store
    from genprof.reports import html as H

    ops = d["ops"]
    fam = device_families(ops)
    if fam.empty:
        return None
    frames = []
    for rid, path in zip(d["runs"]["run_id"], d["runs"]["path"]):
        try:
            k = store.read_table(path, store.KERNELS)
        except Exception as e:  # a bad extra table must not cost the report
            d["notes"].append(f"skipped GPU kernels of {path}: {e}")
            continue
        if k is not None and not k.empty:
            frames.append(k.assign(run_id=rid))
    kern = top_kernels(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame())
    rank = {rid: i for i, rid in enumerate(order)}
    by_run = lambda df: df.sort_values("run_id", key=lambda s: s.map(rank), kind="stable")  # noqa: E731
    fam_rows = [[H.cell(labels.get(r.run_id, r.run_id)), H.cell(r.family), H.num(r.time_s), H.pct(r.share),
                 H.num(r.calls, 6)] for r in by_run(fam).itertuples()]
    clip = lambda x: x if len(x) <= 110 else x[:109] + "…"  # noqa: E731  (full names: kernels.parquet)
    ker_rows = [[H.cell(labels.get(r.run_id, r.run_id)), H.cell(clip(r.kernel)), H.cell(r.kind), H.cell(clip(r.op)),
                 H.cell(r.family), H.cell(r.streams), H.num(r.calls, 6), H.num(r.time_s), H.pct(r.share)]
                for r in by_run(kern).itertuples()]
    st = streams({rid: d["metas"][rid] for rid in order if rid in d["metas"]})
    st_rows = [[H.cell(labels.get(r.run_id, r.run_id)), H.cell(r.device), H.cell(r.stream), H.num(r.events),
                H.num(r.sum_s), H.num(r.busy_s), H.num(r.overlap_s)] for r in st.itertuples()]
    return {
        "family": H.table("table-gpu-family", ["run", "family", "GPU time s (mean)", "share", "calls"], fam_rows,
                          "GPU time (kernels, memcpy, memset) by operator family: each device event counted "
                          "once, at the op that launched it (by correlation id) or as a row of its own."),
        "kernels": H.table("table-gpu-kernels", ["run", "kernel", "kind", "op", "family", "streams", "calls",
                                                 "GPU time s", "share"], ker_rows,
                           f"The {TOP_KERNELS} kernels with the most GPU time in each run, and the op they went to "
                           "(names cut at 110 characters; kernels.parquet has them whole).",
                           empty="no per-kernel table (runs imported with `genprof import` have one)"),
        "streams": H.table("table-gpu-streams", ["run", "device", "stream", "events", "summed s", "busy s",
                                                 "overlap s"], st_rows,
                           "Summed device time against busy time (the union of intervals) per stream and device: "
                           "the difference is work that overlapped.", empty="no stream summary in run.json"),
        "ops": ops[ops["device_time_s"] > 0],
    }
