"""One self-contained HTML report over one or more run folders.

`write_report(roots, out)` reads every run below the roots (ops, phases and
run.json), draws the figures of `genprof.reports.figures` as embedded PNGs
(base64 data URLs), and renders one HTML file with an inline stylesheet and a
small inline table sorter: no server, no network, no URL of any kind. A
Content-Security-Policy in the page forbids every external load and every
script but the sorter (by hash), and jinja2 autoescaping turns every string
that comes from a run (workload, module and op names, reasons) into text.

The page itself (template, stylesheet, sorter): `genprof.reports.page`.

Sections: summary, environment and provenance, figures, family breakdown,
GPU time (when a run has device time: by family, by kernel, summed against busy
time per stream; `genprof.reports.gpu`), phase statistics, top ops, sequence-length profile, optimizations (speedup
against the baseline run of the same workload / size / batch, with quality
metrics from `summary.quality`), failed runs, and notes (corrupt runs skipped,
figures that the data does not support). When projection data is present (a
`projection.parquet` in a run directory, written by `genprof project --out`,
or the `roofline=` section that `genprof paper` passes), a roofline section:
the headline table, the roofline figure and the projected family breakdown.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from genprof import store
from genprof.errors import GenprofError
from genprof.profiler.stats import summarize
from genprof.reports import figures as F
from genprof.reports.breakdown import counts, seq_profile
from genprof.reports.compare import verdict
from genprof.reports.page import CSS, SECTIONS, SORTER_JS, TEMPLATE, env

TOP_OPS = 15
MEMORY_LABELS = {"peak_device_bytes": "peak device memory, allocator (MiB)",
                 "peak_rss_bytes": "peak RSS of the process (MiB)",
                 "peak_rss_growth_bytes": "RSS growth during the measured repeats (MiB)"}
RUN_COLUMNS = ["run_id", "path", "status", "reason", "workload", "size", "batch", "mode", "device", "dtype",
               "optimizations", "total_median_s", "total_stdev_s", "repeats", "created"]

# ---------------------------------------------------------------------------------------------- loading


def _load(roots: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """runs / ops / phases over every root (each run once), run.json per run, and the skip notes."""
    runs_f, ops_f, ph_f, notes = [], [], [], []
    seen: set[str] = set()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for root in roots:
            runs = store.load_runs(root, "runs")
            if runs.empty:
                continue
            dup = runs[runs.duplicated("run_id", keep=False)]
            for rid, g in dup.groupby("run_id"):
                notes.append(f"run id {rid} appears in several directories ({', '.join(g['path'])}); "
                             "they are shown as one run")
            new = set(runs["run_id"]) - seen
            runs = runs[runs["run_id"].isin(new)].drop_duplicates("run_id")
            seen |= new
            runs_f.append(runs)
            for table, frames in (("ops", ops_f), ("phases", ph_f)):
                df = store.load_runs(root, table)
                if not df.empty:
                    frames.append(df[df["run_id"].isin(new)])
    for w in caught:
        msg = str(w.message)
        if msg not in notes:
            notes.append(msg)
    runs = pd.concat(runs_f, ignore_index=True) if runs_f else pd.DataFrame(columns=RUN_COLUMNS)
    ops = pd.concat(ops_f, ignore_index=True) if ops_f else pd.DataFrame()
    phases = pd.concat(ph_f, ignore_index=True) if ph_f else pd.DataFrame()
    metas = {}
    for r in runs.itertuples():
        try:
            metas[r.run_id] = store.read_run(r.path)
        except GenprofError as e:  # changed under our feet
            notes.append(f"skipped: {e}")
    return {"runs": runs, "ops": ops, "phases": phases, "metas": metas, "notes": notes}


# ---------------------------------------------------------------------------------------------- formatting


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _fmt(x: Any, digits: int = 4) -> str:
    v = _num(x)
    if v is None:
        return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else str(x)
    if v == int(v) and abs(v) < 1e15 and not isinstance(x, float):
        return str(int(v))
    return f"{v:.{digits}g}"


def cell(text: Any, sort: Any = None) -> dict[str, Any]:
    """A table cell: displayed text and a numeric sort key (`sort`, or the text when it is a number)."""
    key = _num(sort) if sort is not None else (None if isinstance(text, str) else _num(text))
    return {"text": "—" if text is None else str(text), "sort": "" if key is None else repr(key)}


def num(x: Any, digits: int = 4, scale: float = 1.0, suffix: str = "") -> dict[str, Any]:
    v = _num(x)
    if v is None:
        return cell("—")
    return {"text": _fmt(v * scale, digits) + suffix, "sort": repr(v)}


def pct(x: Any) -> dict[str, Any]:
    v = _num(x)
    return cell("—") if v is None else {"text": f"{100 * v:.1f}%", "sort": repr(v)}


def table(tid: str, columns: list[str], rows: list[list[dict[str, Any]]], caption: str = "",
          empty: str = "no rows") -> dict[str, Any]:
    return {"id": tid, "columns": columns, "rows": rows, "caption": caption, "empty": empty}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------------------------------------- sections


def _command(spec: dict[str, Any]) -> str:
    """The `genprof run` command line that reproduces a spec (`genprof import` for an imported trace)."""
    if spec.get("imported_from"):
        return f"genprof import {spec['imported_from']}"
    parts = ["genprof", "run", str(spec.get("workload", "?"))]
    defaults = {"size": "tiny", "batch": 1, "steps": None, "tokens": None, "repeats": 3, "warmup": 1,
                "mode": "trace", "device": "cpu", "dtype": "float32", "seed": 0, "weights": None}
    for key, default in defaults.items():
        v = spec.get(key, default)
        if v is not None and v != default:
            parts += [f"--{key}", str(v)]
    for o in spec.get("optimizations", []) or []:
        parts += ["--opt", str(o)]
    if spec.get("record_trace"):
        parts.append("--trace-file")
    return " ".join(parts)


def _flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix or "quality": value}


def _quality(meta: dict[str, Any]) -> dict[str, Any]:
    q = (meta.get("summary") or {}).get("quality")
    return {} if q is None else _flatten("", q) if isinstance(q, dict) else {"quality": q}


def _top_family(rid: str, ops: pd.DataFrame, meta: dict[str, Any]) -> tuple[str, float | None]:
    shares = (meta.get("summary") or {}).get("family_share") or {}
    run = ops[ops["run_id"] == rid] if not ops.empty else ops
    if not run.empty:
        t = run.groupby(["family", "repeat"])["total_time_s"].sum().groupby("family").mean()
        shares = (t / t.sum()).to_dict()
    shares = {k: v for k, v in shares.items() if k != "Overhead" and _num(v) is not None}
    if not shares:
        return "—", None
    fam = max(shares, key=shares.get)
    return fam, float(shares[fam])


def _summary(d: dict[str, Any], order: list[str], labels: dict[str, str]) -> dict[str, Any]:
    runs = d["runs"].set_index("run_id")
    rows = []
    for rid in order:
        r, meta = runs.loc[rid], d["metas"].get(rid, {})
        timed = bool(r.get("measured", True))
        fam, share = _top_family(rid, d["ops"], meta) if timed else ("—", None)
        med = _num(r.get("total_median_s"))
        lo, hi = _num(r.get("total_ci_low_s")), _num(r.get("total_ci_high_s"))
        total = ("counted, not timed" if not timed else "—" if med is None else
                 f"{med:.4g} s" + (f" [{lo:.4g}, {hi:.4g}]" if lo is not None and hi is not None else ""))
        status = str(r.get("status")) + (" · UNSTABLE" if r.get("stability") == "unstable" else "")
        reasons = "; ".join(((meta.get("summary") or {}).get("stability") or {}).get("reasons", []))
        rows.append([cell(labels[rid]), cell(r.get("workload")), cell(r.get("size")), num(r.get("batch")),
                     cell(r.get("mode")), cell(r.get("device")), cell(r.get("dtype")), cell(r.get("optimizations")),
                     cell(status), cell(total, med if timed else None), num(r.get("repeats") if timed else None),
                     cell(fam if share is None else f"{fam} ({100 * share:.0f}%)", share),
                     cell(reasons or ("—" if timed else "meta device")), cell(rid)])
    cols = ["run", "workload", "size", "batch", "mode", "device", "dtype", "optimizations", "status",
            "total: median [95% CI]", "repeats", "top family (excl. overhead)", "timing notes", "run id"]
    return table("table-summary", cols, rows,
                 "One row per run. Total: whole-inference wall time, median over repeats, with the confidence "
                 "interval of the median (95% from six repeats; [min, max] below). UNSTABLE: the repeats break "
                 "the stability bounds (timing notes say which); its times are not to be trusted. Meta-device "
                 "runs count FLOPs and bytes and time nothing: they appear under Counted runs only.",
                 empty="no runs found")


def _environment(d: dict[str, Any], order: list[str], labels: dict[str, str]) -> tuple[dict, list[dict]]:
    rows, prov = [], []
    paths = d["runs"].set_index("run_id")["path"]
    for rid in order:
        meta = d["metas"].get(rid, {})
        env, spec = meta.get("environment") or {}, meta.get("spec") or {}
        rows.append([cell(labels[rid]), cell(meta.get("created")), cell(spec.get("device")),
                     cell(env.get("device_name")), cell(env.get("cuda")), cell(env.get("torch")),
                     cell(env.get("python")), cell(env.get("diffusers")), cell(env.get("transformers")),
                     cell(env.get("genprof_git")), cell(env.get("platform")),
                     cell(f"{env.get('cpu_count', '—')} / {env.get('torch_threads', '—')}"),
                     num(meta.get("build_s"), 3)])
        wl = meta.get("workload") or {}
        prov.append({"label": labels[rid], "run_id": rid, "command": _command(spec),
                     "stand_in": wl.get("stand_in", ""), "kind": wl.get("kind", ""),
                     "spec": json.dumps(spec, indent=1, sort_keys=True, default=str),
                     "info": json.dumps(meta.get("info") or {}, indent=1, sort_keys=True, default=str),
                     "note": meta.get("note", ""), "path": str(paths.loc[rid])})
    cols = ["run", "created (UTC)", "device", "device name", "CUDA", "torch", "python", "diffusers",
            "transformers", "genprof git", "platform", "CPUs / torch threads", "build s"]
    return table("table-environment", cols, rows, "Versions and machine of each run (from run.json)."), prov


def _family_table(ops: pd.DataFrame) -> dict[str, Any]:
    rows = []
    if not ops.empty:
        fs = F.family_shares(ops)
        for r in fs.itertuples():
            rows.append([cell(r.bar), cell(r.family), num(r.time_s), num(r.time_stdev_s, 2), pct(r.share),
                         num(r.flops, 4, 1e-9), num(r.bytes, 4, 1e-6)])
    return table("table-family", ["bar", "family", "time s (mean)", "stdev s", "share", "GFLOP", "MB moved"], rows,
                 "Time per operator family, mean over repeats; LLM runs split into prefill and decode.",
                 empty="no op tables: the family breakdown needs trace-mode runs (--mode trace)")


def _phase_table(phases: pd.DataFrame, labels: dict[str, str], order: list[str]) -> dict[str, Any]:
    rows = []
    if not phases.empty:
        rank = {rid: i for i, rid in enumerate(order)}
        for rid in sorted(phases["run_id"].unique(), key=lambda r: rank.get(r, 1e9)):
            run = phases[phases["run_id"] == rid]
            whole = run[run["step"] < 0]
            names = list(dict.fromkeys(whole["phase"]))
            names = [n for n in names if n != "total"] + (["total"] if "total" in names else [])
            for ph in names:
                s = summarize(whole.loc[whole["phase"] == ph].groupby("repeat")["time_s"].sum().to_numpy())
                steps = run[(run["phase"] == ph) & (run["step"] >= 0)]
                per = int(steps.groupby("repeat").size().median()) if len(steps) else None
                rows.append(_stat_row(labels.get(rid, rid), ph, s, per))
                if len(steps):
                    rows.append(_stat_row(labels.get(rid, rid), f"{ph} (per step)",
                                          summarize(steps["time_s"].to_numpy()), None))
    return table("table-phases", ["run", "phase", "median s", "p10 s", "p90 s", "stdev s", "n", "steps / repeat"],
                 rows, "Wall time per phase over the measured repeats (n = repeats; per step: all steps pooled).",
                 empty="no phase tables")


def _stat_row(label: str, phase: str, s: dict[str, Any], steps: int | None) -> list[dict[str, Any]]:
    return [cell(label), cell(phase), num(s.get("median_s")), num(s.get("p10_s")), num(s.get("p90_s")),
            num(s.get("stdev_s"), 2), num(s.get("n")), num(steps) if steps else cell("—")]


def _derived_table(d: dict[str, Any], order: list[str], labels: dict[str, str]) -> dict[str, Any]:
    rows = []
    for rid in order:
        summ = d["metas"].get(rid, {}).get("summary") or {}
        for k, v in (summ.get("derived") or {}).items():
            rows.append([cell(labels[rid]), cell(k), num(v, 5)])
        mem = summ.get("memory") or {}
        for k, name in MEMORY_LABELS.items():
            if _num(mem.get(k)) is not None:
                rows.append([cell(labels[rid]), cell(name), num(mem[k], 5, 1 / 2**20)])
    return table("table-derived", ["run", "metric", "value"], rows,
                 "Workload metrics (time to first token, time per output token, ...) and memory over the measured "
                 "repeats (after warm-up).", empty="no derived metrics")


def _top_ops_table(ops: pd.DataFrame, labels: dict[str, str], order: list[str]) -> dict[str, Any]:
    rows = []
    if not ops.empty:
        present = set(ops["run_id"])
        for rid in [r for r in order if r in present]:
            run = ops[ops["run_id"] == rid]
            n_rep = max(run["repeat"].nunique(), 1)
            total = run["total_time_s"].sum() / n_rep
            real = run[run["family"] != "Overhead"]
            g = real.groupby(["op", "family"], dropna=False).agg(
                time_s=("total_time_s", "sum"), calls=("calls", "sum"), flops=("flops", "sum"),
                bytes=("bytes", "sum")).reset_index()
            g[["time_s", "calls", "flops", "bytes"]] = g[["time_s", "calls", "flops", "bytes"]] / n_rep
            for r in g.sort_values("time_s", ascending=False).head(TOP_OPS).itertuples():
                ai = r.flops / r.bytes if r.bytes else None
                rows.append([cell(labels[rid]), cell(r.op), cell(r.family), num(r.calls, 6), num(r.time_s),
                             pct(r.time_s / total if total else None), num(r.flops, 4, 1e-9), num(r.bytes, 4, 1e-6),
                             num(ai, 3)])
    return table("table-top-ops", ["run", "op", "family", "calls / repeat", "time s / repeat", "share of run",
                                   "GFLOP", "MB moved", "FLOP / byte"], rows,
                 f"The {TOP_OPS} most expensive ops of each run (overhead excluded), per repeat.",
                 empty="no op tables: top ops need trace-mode runs (--mode trace)")


def _seq_table(ops: pd.DataFrame, labels: dict[str, str], order: list[str]) -> dict[str, Any]:
    rows = []
    if not ops.empty:
        present = set(ops["run_id"])
        for rid in [r for r in order if r in present]:
            p = seq_profile(ops[ops["run_id"] == rid])
            for r in p.itertuples():
                rng = lambda a, b: cell(_fmt(a) if a == b else f"{_fmt(a)}–{_fmt(b)}", b)
                rows.append([cell(labels[rid]), cell(r.phase), cell(r.block), cell(r.attention_kind),
                             rng(r.seq_q_min, r.seq_q_max), rng(r.seq_kv_min, r.seq_kv_max), num(r.batch_heads),
                             num(r.head_dim), num(r.steps), num(r.calls), num(r.flops, 4, 1e-9), num(r.time_s)])
    return table("table-seq", ["run", "phase", "block", "attention kind", "seq_q", "seq_kv", "batch × heads",
                               "head dim", "steps", "calls", "GFLOP", "time s"], rows,
                 "Attention calls per phase, block and kind (first repeat); ranges over steps.",
                 empty="no attention calls in the op tables (or only timing-mode runs)")


def _optimizations(d: dict[str, Any], order: list[str], labels: dict[str, str]) -> tuple[dict, pd.DataFrame]:
    runs = d["runs"]
    base = runs[(runs["optimizations"] == "baseline") & (runs["status"] == "ok")]
    recs, rows, qkeys = [], [], []
    by_id = runs.set_index("run_id")
    for rid in order:
        r = by_id.loc[rid]
        if r["optimizations"] == "baseline":
            continue
        same = base[(base["workload"] == r["workload"]) & (base["size"] == r["size"]) & (base["batch"] == r["batch"])]
        b = None
        if len(same):  # prefer the same mode, device and dtype, then the newest
            score = sum((same[c] == r[c]).astype(int) for c in ("mode", "device", "dtype"))
            same = same.assign(_score=score).sort_values(["_score", "created"], ascending=[False, False])
            b = same.iloc[0]
        q = _quality(d["metas"].get(rid, {}))
        qkeys += [k for k in q if k not in qkeys]
        med = _num(r.get("total_median_s")) if r["status"] == "ok" else None
        bmed = _num(b["total_median_s"]) if b is not None else None
        sp = bmed / med if med and bmed else None
        sig = verdict(_ci(r), _ci(b)) if sp is not None else "—"
        recs.append({"run_id": rid, "workload": r["workload"], "size": r["size"], "optimization": r["optimizations"],
                     "speedup": sp, **q})
        note = ("" if r["status"] == "ok" else f"run {r['status']}") if b is not None else "no baseline run"
        if sp is not None and sp < 1:
            note = "slower than its baseline" + ("" if sig == "yes" else " (within the noise)")
        rows.append((rid, r, b, med, bmed, sp, sig, q, note))
    out_rows = [[cell(labels[rid]), cell(r["workload"]), cell(r["size"]), num(r["batch"]), cell(r["optimizations"]),
                 cell(labels.get(b["run_id"]) if b is not None else "—"), num(bmed), num(med),
                 num(sp, 3, suffix="×"), cell(sig), *[cell(_fmt(q[k]), q[k]) if k in q else cell("—") for k in qkeys],
                 cell(note)]
                for rid, r, b, med, bmed, sp, sig, q, note in rows]
    cols = ["run", "workload", "size", "batch", "optimizations", "baseline run", "baseline median s", "median s",
            "speedup", "significant", *[f"quality: {k}" for k in qkeys], "note"]
    t = table("table-optimizations", cols, out_rows,
              "Speedup = baseline total median / optimized total median, against the baseline run of the same "
              "workload, size and batch (same mode, device and dtype preferred); significant: the two medians' "
              "confidence intervals do not overlap (else the speedup is within the noise). Quality from run.json "
              "summary.quality.",
              empty="no optimized runs (every run is a baseline)")
    return t, pd.DataFrame(recs)


def _counted_table(ops: pd.DataFrame, labels: dict[str, str], order: list[str]) -> dict[str, Any]:
    """Meta-device runs: what they counted per operator family (calls, FLOPs, bytes), never a time."""
    rows = []
    if not ops.empty:
        present = set(ops["run_id"])
        for rid in [r for r in order if r in present]:
            for fam, r in counts(ops[ops["run_id"] == rid]).iterrows():
                rows.append([cell(labels[rid]), cell(fam), num(r["calls"], 6), num(r["flops"], 4, 1e-9),
                             num(r["bytes"], 4, 1e-6), num(r["flops"] / r["bytes"] if r["bytes"] else None, 3)])
    return table("table-counted", ["run", "family", "calls", "GFLOP", "MB moved", "FLOP / byte"], rows,
                 "Runs on the meta device: FLOPs, bytes and shapes of one pass, no time (`genprof project RUN --hw "
                 "h100` predicts times from them).", empty="no meta-device runs")


def _ci(r: Any) -> dict[str, Any] | None:
    """The total's median interval of a runs-table row, as genprof.profiler.stats reads it."""
    if r is None:
        return None
    return {"ci_low_s": _num(r.get("total_ci_low_s")), "ci_high_s": _num(r.get("total_ci_high_s")),
            "n": int(_num(r.get("repeats")) or 0)}


def _failed(d: dict[str, Any], order: list[str], labels: dict[str, str]) -> tuple[dict, list[dict]]:
    runs = d["runs"].set_index("run_id")
    rows, tracebacks = [], []
    for rid in order:
        r = runs.loc[rid]
        if r["status"] == "ok":
            continue
        rows.append([cell(labels[rid]), cell(r["workload"]), cell(r["size"]), cell(r["optimizations"]),
                     cell(r["status"]), cell(r.get("reason") or "—"), cell(rid)])
        tb = d["metas"].get(rid, {}).get("traceback")
        if tb:
            tracebacks.append({"label": labels[rid], "traceback": tb})
    t = table("table-failed", ["run", "workload", "size", "optimizations", "status", "reason", "run id"], rows,
              "Runs that did not finish, with the reason stored in run.json.", empty="no failed runs")
    return t, tracebacks


def _figures(d: dict[str, Any], opt_df: pd.DataFrame) -> tuple[list[dict], list[str]]:
    ops, phases = d["ops"], d["phases"]
    specs = [
        ("fig-family-breakdown", "Time by operator family", F.family_breakdown, ops,
         "Share of time per operator family; LLM runs as two bars (prefill, decode); overhead hatched."),
        ("fig-attention-kinds", "Attention time by kind", F.attention_kinds, ops,
         "Attention time split into self / cross / spatial / temporal attention; above: attention's share of the run."),
        ("fig-seq-lengths", "Attention sequence lengths", F.seq_lengths, ops,
         "Query and key lengths per block, phase and kind (log scale); a tick marks the minimum of a range."),
        ("fig-step-times", "Step times", F.step_times, phases,
         "Time per denoising step or decode token: median over repeats, p10–p90 band."),
        ("fig-speedups", "Optimizations", F.speedups, opt_df,
         "Speedup over the baseline run, quality metrics beside each bar."),
    ]
    no_ops = "no op tables: only timing-mode runs (this figure needs --mode trace)"
    empties = {"fig-step-times": "no phase tables", "fig-speedups": "no optimized runs"}
    return _draw([(fid, title, caption, fn, data, empties.get(fid, no_ops))
                  for fid, title, fn, data, caption in specs])


def _draw(specs: Sequence[tuple], warn: bool = True) -> tuple[list[dict], list[str]]:
    """Draw each (id, title, caption, fn, data, empty) as fn(data): the figures drawn, as embedded PNGs,
    and a line per figure not drawn. Empty data (with an `empty` reason) or F.NoData skips a figure;
    any other error skips it too (with a warning when `warn`), so that one figure never costs the report."""
    shown, skipped = [], []
    for fid, title, caption, fn, data, empty in specs:
        try:
            if empty is not None and (data is None or data.empty):
                raise F.NoData(empty)
            fig = fn(data)
        except F.NoData as e:
            skipped.append(f"{title}: not drawn ({e})")
            continue
        except Exception as e:  # a figure bug must not cost the whole report
            if warn:
                warnings.warn(f"figure {title!r} failed: {type(e).__name__}: {e}", stacklevel=4)
            skipped.append(f"{title}: failed ({type(e).__name__}: {e})")
            continue
        shown.append({"id": fid, "title": title, "caption": caption, "png": _png(fig)})
    return shown, skipped


# ---------------------------------------------------------------------------------------------- page

def _df_table(tid: str, title: str, df: pd.DataFrame, caption: str, percent: Sequence[str] = ()) -> dict[str, Any]:
    rows = [[pct(v) if c in percent else (cell(v) if isinstance(v, str) else num(v)) for c, v in zip(df.columns, r)]
            for r in df.itertuples(index=False)]
    return {**table(tid, [str(c) for c in df.columns], rows, caption), "title": title}


def _roofline_section(d: dict[str, Any], roofline: dict[str, Any] | None) -> dict[str, Any] | None:
    """Headline table, roofline figure and projected families, from `roofline=` or projection.parquet files."""
    roofline = dict(roofline or {})
    proj = roofline.get("projection")
    if proj is None:
        frames = []
        for path in d["runs"].get("path", pd.Series(dtype=str)):
            f = Path(path) / "projection.parquet"
            if f.is_file():
                try:
                    frames.append(pd.read_parquet(f))
                except Exception as e:  # a bad extra file must not cost the report
                    d["notes"].append(f"skipped {f}: {type(e).__name__}")
        proj = pd.concat(frames, ignore_index=True) if frames else None
    if proj is None or proj.empty:
        return None
    hw = roofline.get("hw") or str(proj["hw"].iloc[0])
    sec: dict[str, Any] = {"headline": None, "figures": [], "tables": [], "skipped": []}
    if roofline.get("headline") is not None:
        h = roofline["headline"]
        sec["headline"] = table("table-headline", list(h.columns), [[cell(v) for v in r] for r in
                                                                     h.itertuples(index=False)],
                                "Claim, the study's number, our projection at paper size and our measurements.")
    on_hw = proj[proj["hw"] == hw]
    from genprof.roofline.hardware import GPU_NAMES, PROFILES

    profs = [PROFILES[n] for n in GPU_NAMES] if hw in PROFILES else None
    sec["figures"], sec["skipped"] = _draw([
        ("fig-roofline", "Roofline",
         f"Ops at their arithmetic intensity and projected FLOP/s on {hw}; roofs and ridge points per profile; "
         "point area ~ projected time.", lambda p: F.roofline(p, profiles=profs), on_hw, None),
        ("fig-projected-families", "Projected time by operator family",
         f"Share of projected time per family on {hw} (launch-bound excess as Overhead).",
         lambda p: F.family_breakdown(p, time="time_s"), on_hw, None)], warn=False)
    fam = roofline.get("families")
    if fam is not None and not fam.empty:
        sec["tables"].append(_df_table("table-projected-families", "Projected family shares", fam,
                                       f"Share of projected time per family on {hw}, full run.",
                                       percent=[c for c in fam.columns[2:]]))
    hosts = roofline.get("hosts")
    if hosts is not None and not hosts.empty:
        sec["tables"].append(_df_table("table-host-verdicts", "Host-bound or device-bound (eager)", hosts,
                                       f"Per phase on {hw}, full run: device, host and combined time in eager "
                                       "mode, the verdict, and with CUDA graphs (docs/roofline.md)."))
    llm = roofline.get("llm")
    if llm is not None and not llm.empty:
        sec["tables"].append(_df_table("table-llm-check", "LLM decode check", llm,
                                       "Decode time per token: projected and (weights + KV) / bandwidth by hand.",
                                       percent=[c for c in llm.columns if "share" in c or c == "error"]))
    return sec


def render_report(roots: Iterable[str | os.PathLike] | str | os.PathLike, title: str = "genprof report",
                  roofline: dict[str, Any] | None = None) -> str:
    """The report as an HTML string (see `write_report`)."""
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    roots = [Path(r) for r in roots]
    d = _load(roots)
    runs = d["runs"]
    if runs.empty:  # an empty page would look like a report of nothing measured
        where = ", ".join(map(str, roots))
        raise GenprofError(f"no readable genprof run below {where}" + (f" ({d['notes'][0]})" if d["notes"] else ""))
    labels, order = F.run_labels(runs), F.run_order(runs)
    for key in ("ops", "phases"):
        if not d[key].empty:
            d[key] = d[key].assign(label=d[key]["run_id"].map(labels))
    counted_ids = set(runs.loc[~runs["measured"].astype(bool), "run_id"]) if "measured" in runs else set()
    counted_ops = d["ops"][d["ops"]["run_id"].isin(counted_ids)] if not d["ops"].empty else d["ops"]
    timed = {**d, "runs": runs[~runs["run_id"].isin(counted_ids)],
             **{k: d[k][~d[k]["run_id"].isin(counted_ids)] if not d[k].empty else d[k] for k in ("ops", "phases")}}
    env_table, provenance = _environment(d, order, labels)
    opt_table, opt_df = _optimizations(timed, [r for r in order if r not in counted_ids], labels)
    failed_table, tracebacks = _failed(d, order, labels)
    figures, skipped = _figures(timed, opt_df)
    roofline_section = _roofline_section(d, roofline)
    gpu = _gpu_section(d, labels, order)
    toc = SECTIONS if roofline_section is None else SECTIONS[:-1] + [("roofline", "Roofline")] + SECTIONS[-1:]
    if gpu:
        toc = toc[:4] + [("gpu-time", "GPU time")] + toc[4:]
    from genprof import __version__

    script = SORTER_JS
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return env().from_string(TEMPLATE).render(
        title=title, css=_markup(CSS),
        script=_markup(script), script_hash=f"sha256-{digest}",
        generated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), version=__version__,
        roots=[str(r) for r in roots], n_runs=len(order), notes=d["notes"], roofline=roofline_section,
        toc=toc, gpu=gpu,
        summary=_summary(d, order, labels), environment=env_table, provenance=provenance,
        figures=figures, skipped_figures=skipped, family=_family_table(timed["ops"]),
        phase_stats=_phase_table(timed["phases"], labels, order), derived=_derived_table(timed, order, labels),
        top_ops=_top_ops_table(timed["ops"], labels, order), seq=_seq_table(d["ops"], labels, order),
        counted=_counted_table(counted_ops, labels, order),
        optimizations=opt_table, failed=failed_table, tracebacks=tracebacks)


def _gpu_section(d: dict[str, Any], labels: dict[str, str], order: list[str]) -> dict[str, Any] | None:
    """GPU time by family (figure and table), by kernel and by stream, when any run has device time."""
    from genprof.reports.gpu import html_section

    sec = html_section(d, labels, order)
    if sec is not None:
        sec["figures"], skipped = _draw([
            ("fig-gpu-families", "GPU time by operator family",
             "Share of GPU time (kernels, memcpy, memset) per operator family.",
             lambda o: F.family_breakdown(o, time="device_time_s"), sec.pop("ops"), None)])
        d["notes"].extend(skipped)
    return sec


def _markup(s: str):
    from markupsafe import Markup

    return Markup(s)


def write_report(roots: Iterable[str | os.PathLike] | str | os.PathLike, out: str | os.PathLike,
                 title: str = "genprof report", roofline: dict[str, Any] | None = None) -> Path:
    """Write one self-contained HTML report over every run below `roots`; returns its path.

    Corrupt runs are skipped with a visible note naming the file; failed runs
    are listed with their reasons; timing-mode runs (no op table) contribute
    their phase statistics. Raises GenprofError when a root does not exist or holds no readable run.
    """
    html = render_report(roots, title=title, roofline=roofline)
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        out = out / "report.html" if out.is_dir() else out.with_suffix(".html")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    return out


__all__ = ["write_report", "render_report"]
