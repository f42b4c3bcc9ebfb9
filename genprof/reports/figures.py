"""Figures: functions from tidy tables (op table, phase table) to matplotlib Figures.

Each function builds its own `matplotlib.figure.Figure` on an Agg canvas: no
pyplot, no global figure state, nothing shown, safe in a server, a test or a
notebook (display a figure with `IPython.display.display(fig)` or save it).
`save(fig, path)` writes `path.png` and `path.svg`.

Runs are named by a short label: the workload, plus the size where the table
holds several sizes, plus the optimization where the workload was run with
several (or with a non-baseline one); runs that would share a label get
`#2`, `#3`. A `label` column in the input, when present, is used instead.
A function whose input holds nothing to plot raises `NoData` (a ValueError).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from genprof.profiler.taxonomy import FAMILIES

# Fixed colors per family (the same family has the same color in every figure).
FAMILY_COLORS = {
    "Convolution": "#1f77b4", "Linear": "#ff7f0e", "Attention": "#d62728", "Normalization": "#2ca02c",
    "Activation": "#9467bd", "Elementwise": "#8c564b", "Memory": "#e377c2", "Embedding": "#17becf",
    "Communication": "#393b79", "Compiled": "#637939", "Optimizer": "#843c39",
    "Other": "#bcbd22", "Overhead": "#c7c7c7",
}
OVERHEAD_HATCH = "///"
KIND_COLORS = {
    "self": "#d62728", "cross": "#1f77b4", "spatial-self": "#ff9896", "spatial-cross": "#aec7e8",
    "temporal-self": "#9467bd", "temporal-cross": "#c5b0d5",
}
_SPARE_COLORS = ["#2ca02c", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#98df8a"]
SPLIT_PHASES = ("prefill", "decode")
OUTSIDE = "(outside phases)"


class NoData(ValueError):
    """The table holds nothing this figure can show (e.g. timing-mode runs have no op table)."""


# ---------------------------------------------------------------------------------------------- helpers


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _text(s: object) -> str:
    """A string matplotlib draws literally (no mathtext from `$`)."""
    return str(s).replace("$", r"\$")


def save(fig: Figure, path: str | os.PathLike) -> list[Path]:
    """Write `path.png` (150 dpi) and `path.svg`; a `.png` / `.svg` suffix on `path` is dropped."""
    p = Path(path)
    if p.suffix.lower() in (".png", ".svg"):
        p = p.with_suffix("")
    p.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext, kw in ((".png", {"dpi": 150}), (".svg", {})):
        target = p.with_name(p.name + ext)
        fig.savefig(target, format=ext[1:], **kw)
        out.append(target)
    return out


def run_labels(table: pd.DataFrame) -> dict[str, str]:
    """run_id -> short label, from a table with run_id, workload and optionally size, optimizations,
    batch, mode, dtype, device (the runs table has them all; the op table the first ones).

    The workload, plus the size when the table holds several sizes, the
    optimization when the workload ran with several (or a non-baseline one),
    and batch / mode / dtype / device when they differ between runs of the
    workload; runs still alike get `#2`, `#3`. A `label` column wins.
    """
    cols = [c for c in ("run_id", "workload", "size", "optimizations", "batch", "mode", "dtype", "device", "label")
            if c in table.columns]
    runs = table[cols].drop_duplicates("run_id").copy()
    if "label" in runs.columns:
        return dict(zip(runs["run_id"], runs["label"].astype(str)))
    for c in ("size", "optimizations", "batch", "mode", "dtype", "device"):
        if c not in runs.columns:
            runs[c] = ""
    runs = runs.astype(object).where(runs.notna(), "")
    several_sizes = runs["size"].nunique() > 1
    varies = {c: runs.groupby("workload")[c].nunique() for c in ("optimizations", "batch", "mode", "dtype", "device")}
    labels: dict[str, str] = {}
    for r in runs.sort_values("run_id").to_dict("records"):
        wl = r["workload"]
        parts = [str(wl) or str(r["run_id"])]
        if several_sizes and r["size"]:
            parts.append(str(r["size"]))
        if r["optimizations"] and (r["optimizations"] != "baseline" or varies["optimizations"][wl] > 1):
            parts.append(f"[{r['optimizations']}]")
        extra = [f"{'b' if c == 'batch' else ''}{r[c]}" for c in ("batch", "mode", "dtype", "device")
                 if r[c] != "" and varies[c][wl] > 1]
        if extra:
            parts.append("(" + ", ".join(extra) + ")")
        labels[r["run_id"]] = " ".join(parts)
    seen: dict[str, int] = {}
    status = dict(zip(table["run_id"], table["status"])) if "status" in table.columns else {}
    for rid in sorted(labels, key=lambda r: (status.get(r, "ok") != "ok", r)):
        lab = labels[rid]
        seen[lab] = seen.get(lab, 0) + 1
        if seen[lab] > 1:
            labels[rid] = f"{lab} #{seen[lab]}"
    return labels


def run_order(table: pd.DataFrame) -> list[str]:
    """run_ids ordered by workload, size, baseline first, optimization, run_id."""
    cols = [c for c in ("run_id", "workload", "size", "optimizations") if c in table.columns]
    runs = table[cols].drop_duplicates("run_id").fillna("")
    size_rank = {"tiny": 0, "small": 1, "paper": 2}
    key = lambda r: (str(r.get("workload", "")), size_rank.get(r.get("size", ""), 9), str(r.get("size", "")),
                     r.get("optimizations", "baseline") != "baseline", str(r.get("optimizations", "")),
                     str(r["run_id"]))
    return [r["run_id"] for r in sorted(runs.to_dict("records"), key=key)]


def _require(df: pd.DataFrame | None, cols: Iterable[str], what: str) -> pd.DataFrame:
    if df is None or df.empty:
        raise NoData(f"{what}: the table is empty")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise NoData(f"{what}: missing columns {', '.join(missing)}")
    return df


def _kind_colors(kinds: Sequence[str]) -> dict[str, str]:
    colors, spare = {}, iter(_SPARE_COLORS * 4)
    for k in kinds:
        colors[k] = KIND_COLORS.get(k) or next(spare)
    return colors


# ---------------------------------------------------------------------------------------------- tables


def family_shares(ops: pd.DataFrame, time: str = "total_time_s",
                  split_phases: Sequence[str] = SPLIT_PHASES) -> pd.DataFrame:
    """The data of `family_breakdown`: one row per (bar, family).

    A bar is a run, or for an LLM run (a `prefill` phase, and no phase outside
    `split_phases` but the scheduler's "(outside phases)") one bar per phase
    ("llm prefill", "llm decode"). A model with more phases (CM3leon: prefill,
    decode, vq_decode) stays one bar, so that no phase is left out. Columns: bar,
    run_id, label, phase ("" for a whole run), family, time_s (mean over
    repeats), time_stdev_s, share (of the bar), flops, bytes.
    """
    from genprof.reports.breakdown import breakdown

    _require(ops, ("run_id", "family", "repeat", time), "family breakdown")
    labels = run_labels(ops)
    frames = []
    for rid in run_order(ops):
        run = ops[ops["run_id"] == rid]
        phases = set(run["phase"]) - {OUTSIDE} if "phase" in run.columns else set()
        if split_phases and "prefill" in phases and phases <= set(split_phases):
            parts = [(ph, run[run["phase"] == ph]) for ph in split_phases if ph in phases]
        else:
            parts = [("", run)]
        for ph, sub in parts:
            if sub.empty:
                continue
            b = breakdown(sub, "family", time=time)  # one run: no run_id column
            bar = f"{labels[rid]} {ph}".strip()
            frames.append(b.assign(bar=bar, run_id=rid, label=labels[rid], phase=ph))
    if not frames:
        raise NoData("family breakdown: no op rows")
    out = pd.concat(frames, ignore_index=True)
    return out[["bar", "run_id", "label", "phase", "family", "time_s", "time_stdev_s", "share", "flops", "bytes"]]


def attention_shares(ops: pd.DataFrame, time: str = "total_time_s") -> pd.DataFrame:
    """Attention time per run and attention kind: time_s (mean over repeats), share of the
    run's attention time, and attn_share_of_run (attention time / the run's total time)."""
    _require(ops, ("run_id", "family", "repeat", time), "attention kinds")
    att = ops[ops["family"] == "Attention"]
    if att.empty:
        raise NoData("attention kinds: no Attention rows (timing-mode runs, or no attention ran)")
    labels = run_labels(ops)
    kind = att["attention_kind"].fillna("").replace("", "(unknown)") if "attention_kind" in att else "(unknown)"
    att = att.assign(kind=kind)
    per_rep = att.groupby(["run_id", "kind", "repeat"])[time].sum().reset_index()
    t = per_rep.groupby(["run_id", "kind"])[time].mean().rename("time_s").reset_index()
    t["share"] = t["time_s"] / t.groupby("run_id")["time_s"].transform("sum")
    run_total = ops.groupby(["run_id", "repeat"])[time].sum().groupby("run_id").mean()
    att_total = t.groupby("run_id")["time_s"].sum()
    t["attn_share_of_run"] = t["run_id"].map(att_total / run_total)
    t["label"] = t["run_id"].map(labels)
    order = {rid: i for i, rid in enumerate(run_order(ops))}
    t = t.sort_values(["run_id", "kind"], key=lambda s: s.map(order) if s.name == "run_id" else s)
    return t[["label", "run_id", "kind", "time_s", "share", "attn_share_of_run"]].reset_index(drop=True)


def step_stats(phases: pd.DataFrame) -> pd.DataFrame:
    """Per run, stepped phase and step: median, p10, p90 of the step time over repeats, and n."""
    _require(phases, ("run_id", "phase", "step", "repeat", "time_s"), "step times")
    steps = phases[(phases["step"] >= 0) & (phases["phase"] != "total")]
    if steps.empty:
        raise NoData("step times: no stepped phases (no denoising steps or decode tokens)")
    g = steps.groupby(["run_id", "phase", "step"])["time_s"]
    out = pd.DataFrame({
        "median_s": g.median(), "p10_s": g.quantile(0.10), "p90_s": g.quantile(0.90), "n": g.size(),
    }).reset_index()
    labels = run_labels(phases)
    out["label"] = out["run_id"].map(labels)
    wl = phases.drop_duplicates("run_id").set_index("run_id")["workload"] if "workload" in phases else None
    out["workload"] = out["run_id"].map(wl) if wl is not None else ""
    return out


def _fold_blocks(prof: pd.DataFrame) -> pd.DataFrame:
    """Fold runs of numbered blocks with identical sequence lengths, phase and kind:
    layers.0 .. layers.31 -> layers.0-31 (kept where the first of them appears)."""
    rows: list[dict] = []
    open_: dict[tuple, dict] = {}
    same = ("phase", "attention_kind", "seq_q_min", "seq_q_max", "seq_kv_min", "seq_kv_max")
    for r in prof.to_dict("records"):
        m = re.match(r"^(.*\.)(\d+)$", str(r["block"]))
        if m:
            key = (m.group(1),) + tuple(r[k] for k in same)
            prev = open_.get(key)
            if prev is not None and prev["_last"] == int(m.group(2)) - 1:
                prev["_last"] = int(m.group(2))
                prev["block"] = f"{m.group(1)}{prev['_first']}-{prev['_last']}"
                continue
            r["_first"] = r["_last"] = int(m.group(2))
            open_[key] = r
        rows.append(r)
    return pd.DataFrame(rows).drop(columns=["_first", "_last"], errors="ignore")


# ---------------------------------------------------------------------------------------------- figures


def family_breakdown(ops: pd.DataFrame, time: str = "total_time_s",
                     split_phases: Sequence[str] = SPLIT_PHASES) -> Figure:
    """Share of time by operator family, one stacked bar per workload (run).

    LLM runs (phases prefill and decode) give one bar per phase: "llm prefill",
    "llm decode". Runs of one workload with different optimizations get one bar
    each, labelled with the optimization. Overhead (time no op covers) is its
    own grey hatched segment on top.
    """
    data = family_shares(ops, time=time, split_phases=split_phases)
    bars = list(dict.fromkeys(data["bar"]))
    fams = [f for f in FAMILIES if f in set(data["family"])]
    fams += sorted(set(data["family"]) - set(fams))
    wide = data.pivot_table(index="bar", columns="family", values="share", aggfunc="sum").reindex(bars)
    wide = wide.reindex(columns=fams).fillna(0.0) * 100
    fig = _figure(max(5.5, 1.0 + 0.75 * len(bars)) + 2.2, 5.2)
    ax = fig.add_subplot()
    x = np.arange(len(bars))
    bottom = np.zeros(len(bars))
    for fam in fams:
        vals = wide[fam].to_numpy()
        overhead = fam == "Overhead"
        ax.bar(x, vals, 0.7, bottom=bottom, label=_text(fam), color=FAMILY_COLORS.get(fam, "#7f7f7f"),
               edgecolor="#555555" if overhead else "white", linewidth=0.5,
               hatch=OVERHEAD_HATCH if overhead else None)
        for xi, (v, b) in enumerate(zip(vals, bottom)):
            if v >= 6:
                ax.text(xi, b + v / 2, f"{v:.0f}%", ha="center", va="center", fontsize=7,
                        color="black" if overhead else "white")
        bottom += vals
    ax.set_xticks(x, [_text(b) for b in bars], rotation=30 if len(bars) > 3 else 0,
                  ha="right" if len(bars) > 3 else "center", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("share of time (%)")
    ax.set_title("Time by operator family")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, reverse=True)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def step_times(phases: pd.DataFrame) -> Figure:
    """Time per step (denoising step, decode token) through each stepped phase: median over
    repeats, p10-p90 band. One panel per (workload, phase); one line per run."""
    st = step_stats(phases)
    panels = list(dict.fromkeys(zip(st["workload"], st["phase"])))
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = _figure(4.6 * ncols, 3.3 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    order = {rid: i for i, rid in enumerate(run_order(phases))}
    for ax, (wl, ph) in zip(axes, panels):
        sub = st[(st["workload"] == wl) & (st["phase"] == ph)]
        for rid in sorted(sub["run_id"].unique(), key=lambda r: order.get(r, 0)):
            s = sub[sub["run_id"] == rid].sort_values("step")
            line, = ax.plot(s["step"], s["median_s"] * 1e3, marker="o", markersize=3, linewidth=1.2,
                            label=_text(s["label"].iloc[0]))
            ax.fill_between(s["step"], s["p10_s"] * 1e3, s["p90_s"] * 1e3, color=line.get_color(), alpha=0.2,
                            linewidth=0)
        ax.set_title(_text(f"{wl}: {ph}"), fontsize=10)
        ax.set_xlabel("token" if ph == "decode" and "prefill" in set(phases.loc[phases["workload"] == wl, "phase"])
                      else "step")
        ax.set_ylabel("time per step (ms)")
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(fontsize=7, frameon=False)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Step times (median over repeats, p10-p90 band)", fontsize=11)
    return fig


def seq_lengths(ops: pd.DataFrame) -> Figure:
    """Attention sequence lengths (query and key) per block, phase and attention kind, log scale;
    one panel per run. Ranges (decode tokens growing the KV cache) show as a bar to the maximum
    with a tick at the minimum."""
    from genprof.reports.breakdown import seq_profile

    _require(ops, ("run_id", "family", "op", "module", "repeat", "seq_q", "seq_kv"), "sequence lengths")
    labels = run_labels(ops)
    profs = {}
    for rid in run_order(ops):
        p = seq_profile(ops[ops["run_id"] == rid])
        if not p.empty:
            profs[rid] = _fold_blocks(p)
    runs = list(profs)
    if not runs:
        raise NoData("sequence lengths: no attention calls (timing-mode runs, or no attention ran)")
    heights = [max(1.6, 0.34 * len(p) + 1.0) for p in profs.values()]
    fig = _figure(9.0, sum(heights))
    axes = fig.subplots(len(runs), 1, squeeze=False, height_ratios=heights).ravel()
    for ax, rid in zip(axes, runs):
        p = profs[rid]
        y = np.arange(len(p))
        names = [_text(f"{r.phase} · {r.block} · {r.attention_kind or '?'}") for r in p.itertuples()]
        for off, col, color, name in ((-0.2, "seq_q", "#1f77b4", "query (seq_q)"),
                                      (0.2, "seq_kv", "#ff7f0e", "key (seq_kv)")):
            hi = p[f"{col}_max"].clip(lower=1).to_numpy(dtype=float)
            lo = p[f"{col}_min"].clip(lower=1).to_numpy(dtype=float)
            ax.barh(y + off, hi, 0.38, color=color, label=name)
            ranged = lo < hi
            ax.plot(lo[ranged], y[ranged] + off, "|", color="black", markersize=8)
            for yi, (a, b) in enumerate(zip(lo, hi)):
                txt = f"{a:.0f}-{b:.0f}" if a < b else f"{b:.0f}"
                ax.text(b * 1.08, yi + off, txt, va="center", fontsize=6)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_yticks(y, names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("sequence length (tokens / positions), log scale", fontsize=8)
        ax.set_title(_text(labels[rid]), fontsize=10)
        top = float(max(p["seq_q_max"].max(), p["seq_kv_max"].max(), 1))
        ax.set_xlim(0.7, top * 4)
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.spines[["top", "right"]].set_visible(False)
    return fig


def attention_kinds(ops: pd.DataFrame, time: str = "total_time_s") -> Figure:
    """Attention time split by attention kind (self / cross / spatial-* / temporal-*), one stacked
    bar of shares per run; above each bar, attention's share of the run's whole time."""
    t = attention_shares(ops, time=time)
    bars = list(dict.fromkeys(t["label"]))
    known = [k for k in KIND_COLORS if k in set(t["kind"])]
    kinds = known + sorted(set(t["kind"]) - set(known))
    colors = _kind_colors(kinds)
    wide = t.pivot_table(index="label", columns="kind", values="share", aggfunc="sum").reindex(bars)
    wide = wide.reindex(columns=kinds).fillna(0.0) * 100
    fig = _figure(max(5.0, 1.0 + 0.75 * len(bars)) + 2.0, 4.6)
    ax = fig.add_subplot()
    x = np.arange(len(bars))
    bottom = np.zeros(len(bars))
    for k in kinds:
        vals = wide[k].to_numpy()
        ax.bar(x, vals, 0.65, bottom=bottom, label=_text(k), color=colors[k], edgecolor="white", linewidth=0.5)
        bottom += vals
    of_run = t.drop_duplicates("label").set_index("label")["attn_share_of_run"].reindex(bars)
    for xi, v in enumerate(of_run):
        ax.text(xi, 101, f"{100 * v:.0f}% of run" if np.isfinite(v) else "", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [_text(b) for b in bars], rotation=30 if len(bars) > 3 else 0,
                  ha="right" if len(bars) > 3 else "center", fontsize=8)
    ax.set_ylim(0, 108)
    ax.set_ylabel("share of attention time (%)")
    ax.set_title("Attention time by kind")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, reverse=True)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


SPEEDUP_ID_COLUMNS = ("workload", "optimization", "speedup", "size", "batch", "run_id", "baseline_run_id",
                      "label", "mode", "device", "dtype", "baseline_median_s", "median_s")


def speedups(table: pd.DataFrame, quality: Sequence[str] | None = None) -> Figure:
    """Speedup of each optimization over its baseline, one horizontal bar per (workload, optimization),
    with the quality columns (every column not in SPEEDUP_ID_COLUMNS, or `quality`) written beside it."""
    _require(table, ("workload", "optimization", "speedup"), "speedups")
    t = table.dropna(subset=["speedup"]).reset_index(drop=True)
    if t.empty:
        raise NoData("speedups: no speedup values")
    qcols = list(quality) if quality is not None else [c for c in t.columns if c not in SPEEDUP_ID_COLUMNS]
    names = []
    for r in t.to_dict("records"):
        extra = " ".join(str(r[c]) for c in ("size",) if c in r and r[c] not in (None, ""))
        names.append(_text(f"{r['workload']}{' ' + extra if extra else ''} · {r['optimization']}"))
    fig = _figure(9.0, max(2.2, 0.45 * len(t) + 1.2))
    ax = fig.add_subplot()
    y = np.arange(len(t))
    sp = t["speedup"].astype(float).to_numpy()
    ax.barh(y, sp, 0.6, color=["#2ca02c" if v >= 1 else "#d62728" for v in sp])
    ax.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
    right = max(float(np.nanmax(sp)), 1.0)
    for yi, r in enumerate(t.to_dict("records")):
        q = []
        for c in qcols:
            v = r.get(c)
            if v is None or (isinstance(v, float) and not np.isfinite(v)):
                continue
            q.append(f"{c}={v:.4g}" if isinstance(v, (float, np.floating)) else f"{c}={v}")
        ax.text(sp[yi] + right * 0.02, yi, _text(f"{sp[yi]:.2f}x" + ("   " + ", ".join(q) if q else "")),
                va="center", fontsize=8, bbox=dict(facecolor="white", edgecolor="none", pad=1.0))
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, right * 1.9)
    ax.set_xlabel("speedup over baseline (total median time ratio)")
    ax.set_title("Optimizations: speedup and quality")
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def roofline(proj: pd.DataFrame, profiles: Sequence | None = None, precision: str | None = None,
             max_points: int = 400) -> Figure:
    """Roofline: attainable FLOP/s against arithmetic intensity (log-log), one roof per hardware profile
    (a dotted line at each ridge point), the ops of a projection (`genprof.roofline.project`) as points
    at their intensity and projected FLOP/s, sized by projected time, coloured by family. Ops without
    FLOPs (elementwise, memory) have no point: their time is on the bandwidth roof by construction."""
    from genprof.roofline.hardware import PROFILES

    _require(proj, ("flops_per_call", "bytes_per_call", "time_s", "family", "hw"), "roofline")
    pts = proj[(proj["flops_per_call"] > 0) & (proj["bytes_per_call"] > 0) & (proj["time_s"] > 0)]
    if pts.empty:
        raise NoData("roofline: no op with FLOPs and bytes")
    prec = precision or str(pts["precision"].iloc[0])
    hw_names = list(dict.fromkeys(pts["hw"]))
    if profiles is None:
        profiles = [PROFILES[n] for n in hw_names if n in PROFILES] or list(PROFILES.values())
    pts = pts[pts["hw"] == hw_names[0]]
    pts = pts.groupby(["family", "op", "flops_per_call", "bytes_per_call"], as_index=False).agg(
        time_s=("time_s", "sum"), calls=("calls", "sum"), t_compute_s=("t_compute_s", "first"),
        t_memory_s=("t_memory_s", "first"))
    pts = pts.nlargest(max_points, "time_s")
    x = pts["flops_per_call"] / pts["bytes_per_call"]
    y = pts["flops_per_call"] / np.maximum(pts["t_compute_s"], pts["t_memory_s"])
    fig = _figure(8.2, 5.2)
    ax = fig.add_subplot()
    xs = np.logspace(np.log10(max(x.min() / 3, 1e-2)), np.log10(max(x.max() * 3, 10)), 200)
    styles = ["-", "--", "-.", ":"]
    for i, hw in enumerate(profiles):
        peak, bw = hw.flops(prec), hw.bandwidth
        ax.plot(xs, np.minimum(peak, xs * bw), styles[i % 4], color="#333333", linewidth=1.2,
                label=_text(f"{hw.label}: {peak / 1e12:.3g} TFLOP/s, {bw / 1e12:.3g} TB/s"))
        ax.axvline(peak / bw, color="#999999", linestyle=":", linewidth=0.8)
    size = 15 + 300 * np.sqrt(pts["time_s"] / pts["time_s"].max())
    for fam in [f for f in FAMILIES if f in set(pts["family"])]:
        m = pts["family"] == fam
        ax.scatter(x[m], y[m], s=size[m], color=FAMILY_COLORS.get(fam, "#7f7f7f"), alpha=0.6,
                   edgecolors="white", linewidths=0.5, label=_text(fam))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel(f"attainable FLOP/s ({prec}, effective)")
    ax.set_title(_text(f"Roofline (points projected on {profiles[0].label if profiles else hw_names[0]})"))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


__all__ = ["NoData", "FAMILY_COLORS", "KIND_COLORS", "save", "run_labels", "run_order", "family_shares",
           "attention_shares", "step_stats", "family_breakdown", "step_times", "seq_lengths", "attention_kinds",
           "speedups", "roofline"]
