"""The study's headline claims beside our projection at `paper` size and our measurements.

`count_suite()` counts every workload of the suite on the meta device (a few
steps or tokens; steps have equal shapes and decode grows linearly, so
`project.step_weights` extends them to the full run). `project_suite()` projects
the counts on the GPU profiles. `measured_claims()` reads the same quantities
from measured trace-mode runs (a CPU at `small`, or a GPU), and
`headline_table()` sets claim, study, projection and measurements side by
side. `write_paper()` writes the markdown page and the HTML report. It does
not time anything itself: measurements are runs (given, or made by the CLI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from genprof.profiler.taxonomy import FUSED_ATTENTION
from genprof.roofline.hardware import GPU_NAMES, PROFILES, HardwareProfile
from genprof.roofline.project import decode_per_token, precision_of, project, step_weights
from genprof.study import family_ops as fops
from genprof.study.family_ops import family_ops

HEADLINE_HW = "h100"
KINDS = {"imagen": "diffusion-tti", "stable-diffusion": "diffusion-tti", "prod-image": "diffusion-tti",
         "muse": "transformer-tti", "parti": "transformer-tti", "cm3leon": "transformer-tti",
         "make-a-video": "ttv", "phenaki": "ttv", "llm": "llm"}
NEEDS_GPU = "needs a GPU run (`genprof paper --runs DIR` with runs on a GPU)"


# ---------------------------------------------------------------------------------------------- counting


def full_counts(workload: str, size: str, ops: pd.DataFrame) -> dict[str, int]:
    """Steps per stepped phase of a full run at `size` (the preset's steps / tokens)."""
    from genprof import workloads

    wl = workloads.get(workload)
    p = wl.preset(size)
    counts = {}
    for phase in ops.loc[ops["step"] >= 0, "phase"].unique():
        if phase == "super_resolution" and "sr_steps" in p:
            counts[phase] = int(p["sr_steps"])
        elif wl.counted_by == "steps":
            counts[phase] = int(p["steps"])
        else:
            counts[phase] = int(p.get("tokens") or p["grid"] ** 2)
    return counts


def count_suite(out: str | Path, size: str = "paper", names: Sequence[str] | None = None, dtype: str = "bfloat16",
                on_start: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Count each workload on the meta device with 1 step (diffusion, MaskGIT) or 3 tokens (decode).

    Returns workload -> {"path", "ops", "meta", "counts" (full steps per phase)}; a failed count is
    recorded with its reason.
    """
    from genprof import api, workloads

    result: dict[str, dict[str, Any]] = {}
    for name in names or api.SUITE:
        if on_start:
            on_start(name)
        wl = workloads.get(name)
        kw = {"steps": 1} if wl.counted_by == "steps" else {"tokens": 3}  # see project.step_weights
        res = api.run(api.make_spec(name, size=size, device="meta", dtype=dtype, repeats=1, warmup=0, **kw), out=out)
        if not res.ok:
            result[name] = {"path": res.path, "error": res.meta.get("reason", "failed")}
            continue
        result[name] = {"path": res.path, "ops": res.ops, "meta": res.meta,
                        "counts": full_counts(name, size, res.ops)}
    return result


def project_suite(counted: dict[str, dict[str, Any]], profiles: Sequence[HardwareProfile] | None = None) -> pd.DataFrame:
    """Projection of every counted workload on every profile, rows weighted to the full run.

    One row per projected op row (time_s, flops, bytes already multiplied by the step weights),
    plus `weight`, `hw`, `kind` and `time_once_s` (time_s of the counted row, before weighting).
    """
    profiles = list(profiles or [PROFILES[n] for n in GPU_NAMES])
    frames = []
    for name, c in counted.items():
        if "ops" not in c:
            continue
        dtype = c["meta"]["spec"]["dtype"]
        for hw in profiles:
            p = project(c["ops"], hw, dtype)
            w = step_weights(p, c["counts"])
            p = p.assign(weight=w, kind=KINDS.get(name, ""), time_once_s=p["time_s"].astype(float))
            for col in ("time_s", "flops", "bytes"):
                p[col] = p[col].astype(float) * w
            frames.append(p)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def unfused_attention_s(proj: pd.DataFrame, hw: HardwareProfile) -> float:
    """Projected attention time without a fused kernel: the Lq x Lk scores are written by QK^T,
    read and written by softmax and read by PV (4 passes), on top of the fused kernel's traffic."""
    att = proj[(proj["family"] == "Attention") & proj["op"].isin(FUSED_ATTENTION) & (proj["seq_kv"] > 0)]
    if att.empty:
        return 0.0
    elem = 4 if att["precision"].iloc[0] == "fp32" else 2
    scores = att["batch_heads"].astype(float) * att["seq_q"] * att["seq_kv"] * elem
    t_mem = (att["bytes_per_call"] + 4 * scores) / hw.bandwidth
    per_call = np.maximum(att["t_compute_s"], t_mem)
    return float((per_call * att["calls"] * att.get("weight", 1.0)).sum())


# ---------------------------------------------------------------------------------------------- claims


def _fam_share(proj_or_ops: pd.DataFrame, family: str, time: str) -> float:
    t = proj_or_ops[proj_or_ops["family"] != "Overhead"]
    total = t[time].sum()
    return float(t.loc[t["family"] == family, time].sum() / total) if total else float("nan")


def _temporal_share(df: pd.DataFrame, time: str) -> float:
    att = df[df["family"] == "Attention"]
    total = att[time].sum()
    return float(att.loc[att["attention_kind"].str.startswith("temporal"), time].sum() / total) if total else float("nan")


def _seq_ratio(df: pd.DataFrame) -> float:
    """Largest ratio between self-attention query lengths of the same stepped phase (UNet levels)."""
    att = df[(df["family"] == "Attention") & (df["seq_q"] > 0) & (df["attention_kind"].isin(["self", "self+cross"]))
             & (df["step"] >= 0)]
    best = float("nan")
    for _, g in att.groupby("phase"):
        q = g["seq_q"]
        if len(q):
            r = q.max() / max(q.min(), 1)
            best = r if np.isnan(best) else max(best, r)
    return best


def projected_claims(proj: pd.DataFrame, hw_name: str = HEADLINE_HW) -> dict[str, dict[str, float]]:
    """Per workload, on one profile: conv/linear shares, temporal share, flash speedup, compute-bound share."""
    hw = PROFILES[hw_name]
    out: dict[str, dict[str, float]] = {}
    for wl, p in proj[proj["hw"] == hw_name].groupby("workload"):
        total = p["time_s"].sum()
        fused_att = p.loc[(p["family"] == "Attention") & p["op"].isin(FUSED_ATTENTION), "time_s"].sum()
        unfused = unfused_attention_s(p, hw)
        real = p[p["family"] != "Overhead"]
        rec = {"conv_share": _fam_share(p, "Convolution", "time_s"), "linear_share": _fam_share(p, "Linear", "time_s"),
               "temporal_share": _temporal_share(p, "time_s"), "seq_ratio": _seq_ratio(p),
               "flash_speedup": (total - fused_att + unfused) / total if total else float("nan"),
               "compute_bound_share": float(real.loc[real["bound"] == "compute", "time_s"].sum() / real["time_s"].sum())}
        out[str(wl)] = rec
    return out


def measured_claims(ops: pd.DataFrame, runs: pd.DataFrame | None = None) -> dict[str, dict[str, float]]:
    """The same quantities from measured baseline runs (op time, Overhead rows left out): per
    workload, its newest such run (by the runs table's `created`; by run id without one)."""
    out: dict[str, dict[str, float]] = {}
    if ops is None or ops.empty:
        return out
    info = (runs.drop_duplicates("run_id").set_index("run_id") if runs is not None and not runs.empty
            else pd.DataFrame())
    created = info["created"] if "created" in info.columns else pd.Series(dtype=object)
    base = ops[ops["optimizations"].isin(["baseline", "attn=flash", "attn=sdpa"])]
    for wl, g in base.groupby("workload"):
        rid = max(g["run_id"].unique(), key=lambda i: (str(created.get(i, "")), i))  # the newest baseline run
        r = g[g["run_id"] == rid]
        out[str(wl)] = {"conv_share": _fam_share(r, "Convolution", "total_time_s"),
                        "linear_share": _fam_share(r, "Linear", "total_time_s"),
                        "temporal_share": _temporal_share(r, "total_time_s"), "seq_ratio": _seq_ratio(r),
                        "size": str(r["size"].iloc[0])}
        if "dtype" in info.columns and rid in info.index:
            out[str(wl)]["dtype"] = str(info.at[rid, "dtype"])
    return out


def doc_speedups(doc: str | Path) -> dict[str, float]:
    """End-to-end flash speedups per workload from the per-workload table of docs/attention-study.md."""
    p = Path(doc)
    if not p.is_file():
        return {}
    lines = p.read_text().splitlines()
    out: dict[str, float] = {}
    header: list[str] | None = None
    for line in lines:
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        if "workload" in header and "speedup_end_to_end" in header and len(cells) == len(header) \
                and "latent" not in header and "frames" not in header:
            try:
                out[cells[header.index("workload")]] = float(cells[header.index("speedup_end_to_end")])
            except ValueError:
                pass
    return out


def _pct(v: float | None) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{100 * v:.0f}%"


def _list(d: dict[str, dict[str, float]], names: Sequence[str], key: str, fmt: Callable[[float], str]) -> str:
    items = [f"{n} {fmt(d[n][key])}" for n in names if n in d and key in d[n] and np.isfinite(d[n][key])]
    return ", ".join(items) if items else ""


def _range(d: dict[str, float], names: Sequence[str]) -> str:
    vals = [d[n] for n in names if n in d and np.isfinite(d[n])]
    return f"{min(vals):.2f}–{max(vals):.2f}×" if vals else "—"


def headline_table(proj_claims: dict, cpu: dict, gpu: dict, cpu_speedups: dict[str, float],
                   llm: dict[str, Any] | None, hw_name: str = HEADLINE_HW, size: str = "paper") -> pd.DataFrame:
    """claim | study | projection (paper size) | measured CPU | measured GPU."""
    diff = [n for n, k in KINDS.items() if k == "diffusion-tti"]
    trans = [n for n, k in KINDS.items() if k == "transformer-tti"]
    ttv = [n for n, k in KINDS.items() if k == "ttv"]
    label = PROFILES[hw_name].label
    none = lambda d, what: what if d else NEEDS_GPU
    sizes = sorted({str(v.get("size")) for v in cpu.values() if v.get("size")})
    cpu_note = f" ({', '.join(sizes)})" if sizes else ""
    proj_speed = {n: v["flash_speedup"] for n, v in proj_claims.items()}
    rows = [
        ("Convolution share of diffusion-TTI time after Flash Attention", "up to 44%",
         _list(proj_claims, diff, "conv_share", _pct), _list(cpu, diff, "conv_share", _pct),
         none(gpu, _list(gpu, diff, "conv_share", _pct))),
        ("Linear share of transformer-TTI time after Flash Attention", "up to 49%",
         _list(proj_claims, trans, "linear_share", _pct), _list(cpu, trans, "linear_share", _pct),
         none(gpu, _list(gpu, trans, "linear_share", _pct))),
        ("Flash Attention end-to-end speedup, diffusion TTI vs transformer TTI", "1.1–2.5× larger for diffusion",
         f"diffusion {_range(proj_speed, diff)}, transformer {_range(proj_speed, trans)}",
         (f"diffusion {_range(cpu_speedups, diff)}, transformer {_range(cpu_speedups, trans)} "
          "(docs/attention-study.md)") if cpu_speedups else "run scripts/attention_study.py", NEEDS_GPU),
        ("Temporal attention share of attention time (TTV)", "> 60%",
         _list(proj_claims, ttv, "temporal_share", _pct), _list(cpu, ttv, "temporal_share", _pct),
         none(gpu, _list(gpu, ttv, "temporal_share", _pct))),
        ("Sequence length varies within a diffusion inference", "up to 4×",
         _list(proj_claims, diff + ["make-a-video"], "seq_ratio", lambda v: f"{v:.0f}×"),
         _list(cpu, diff + ["make-a-video"], "seq_ratio", lambda v: f"{v:.0f}×"),
         "same as the counts (shapes do not depend on the device)"),
        ("Diffusion TTI resembles prefill (compute-bound), transformer TTI decode (memory-bound)",
         "diffusion ~ prefill, transformer ~ decode",
         "compute-bound share of time: " + _list(proj_claims, diff + trans, "compute_bound_share", _pct),
         "not measurable from CPU times (the CPU is compute-bound at small sizes)", NEEDS_GPU),
    ]
    if llm:
        rows.append(("LLM prefill compute-bound, decode memory-bound (Llama-2-7B, bf16)",
                     "prefill saturates compute; decode is bandwidth-bound",
                     llm["projection"], llm.get("cpu", "—"), none(gpu, llm.get("gpu", ""))))
    df = pd.DataFrame(rows, columns=["claim", "study", f"projection ({size} size, {label})",
                                     "measured: CPU" + cpu_note, "measured: GPU"])
    return df.replace("", "—")


def llm_check(counted: dict[str, dict[str, Any]], proj: pd.DataFrame) -> pd.DataFrame:
    """Per GPU profile: prefill and decode compute-bound shares, decode time per token projected and
    by hand, (weight bytes + KV-cache bytes) / effective bandwidth."""
    c = counted.get("llm")
    if not c or "ops" not in c:
        return pd.DataFrame()
    info, spec = c["meta"]["info"], c["meta"]["spec"]
    elem = 4 if precision_of(spec["dtype"]) == "fp32" else 2
    from genprof import workloads

    cfg = workloads.get("llm").preset(spec["size"])["config"]
    weights = info["parameters"]["model"] * elem
    rows = []
    for hw_name in proj["hw"].unique():
        hw = PROFILES.get(hw_name)
        p = proj[(proj["hw"] == hw_name) & (proj["workload"] == "llm")]
        if hw is None or p.empty:
            continue
        tpot = decode_per_token(p.assign(time_s=p["time_once_s"]))
        ctx = info["prompt_len"] + 1  # KV length of the first decode step
        kv = 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * (cfg["hidden_size"] // cfg["num_attention_heads"]) * ctx * elem
        hand = (weights + kv) / hw.bandwidth
        real = p[p["family"] != "Overhead"]
        share = {ph: float(real.loc[(real["phase"] == ph) & (real["bound"] == "compute"), "time_s"].sum()
                           / real.loc[real["phase"] == ph, "time_s"].sum()) for ph in ("prefill", "decode")}
        rows.append({"hw": hw.label, "prefill_compute_bound_share": share["prefill"],
                     "decode_compute_bound_share": share["decode"], "decode_s_per_token": tpot,
                     "by_hand_s_per_token": hand, "error": tpot / hand - 1,
                     "prefill_s": float(p.loc[p["phase"] == "prefill", "time_s"].sum())})
    return pd.DataFrame(rows)


def host_verdicts(counted: dict[str, dict[str, Any]], host: Any, hw_name: str = HEADLINE_HW) -> pd.DataFrame:
    """Per workload and phase on one GPU profile, the full run: device time, host time and combined time
    in eager mode, the verdict (host- or device-bound, by how much), and the combined time with CUDA
    graphs and with graphs and fused norms (genprof.roofline.overlap)."""
    from genprof.roofline import overlap

    hw, rows = PROFILES[hw_name], []
    for name, c in counted.items():
        if "ops" not in c:
            continue
        ph = overlap.phases(c["ops"], hw, host, c["meta"]["spec"]["dtype"], counts=c["counts"])
        ph = ph[ph["phase"] != "(outside phases)"].set_index(["phase", "regime"])
        for phase in dict.fromkeys(ph.index.get_level_values(0)):
            e, g, gf = (ph.loc[(phase, r)] for r in ("eager", "graphs", "graphs+fused-norm"))
            rows.append({"workload": name, "phase": phase, "device s": e["device_s"], "host s": e["host_s"],
                         "eager s": e["combined_s"], "eager verdict": overlap.describe(e["bound"], e["ratio"]),
                         "graphs s": g["combined_s"], "graphs+fused-norm s": gf["combined_s"],
                         "graphs speedup": e["combined_s"] / gf["combined_s"]})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- writing


def family_table(proj: pd.DataFrame, hw_name: str = HEADLINE_HW) -> pd.DataFrame:
    """Projected share of time per operator family, one row per workload (LLM: prefill and decode)."""
    from genprof.profiler.taxonomy import FAMILIES

    p = proj[proj["hw"] == hw_name].copy()
    p["bar"] = np.where(p["workload"] == "llm", "llm " + p["phase"].astype(str), p["workload"])
    p = p[~((p["workload"] == "llm") & ~p["phase"].isin(["prefill", "decode"]))]
    t = p.groupby(["bar", "family"])["time_s"].sum().unstack(fill_value=0.0)
    total = t.sum(axis=1)
    shares = t.div(total, axis=0)
    cols = [f for f in FAMILIES if f in shares.columns]
    order = [b for b in dict.fromkeys(p["bar"])]
    out = shares.reindex(order)[cols].reset_index().rename(columns={"bar": "workload"})
    out.insert(1, "projected s", total.reindex(order).to_numpy())
    return out


def find_suite_runs(root: str | Path, size: str, names: Sequence[str]) -> dict[str, Path]:
    """The newest successful measured run of each workload below `root` that `genprof suite` at `size` would
    have made (trace mode, CPU, no optimization, the size preset unchanged), to reuse instead of measuring."""
    from genprof import store

    root = Path(root)
    if not root.exists():
        return {}
    runs = store.load_runs(root, "runs")
    if runs.empty:
        return {}
    runs = runs[(runs["status"] == "ok") & (runs["size"] == size) & (runs["mode"] == "trace")
                & (runs["device"] == "cpu") & (runs["optimizations"] == "baseline") & runs["measured"]
                & runs["workload"].isin(list(names))].sort_values("created", ascending=False)
    found: dict[str, Path] = {}
    for r in runs.itertuples():
        if r.workload in found:
            continue
        spec = store.read_run(r.path).get("spec") or {}
        if spec.get("batch") == 1 and not spec.get("params") and spec.get("steps") is None \
                and spec.get("tokens") is None and not spec.get("weights"):
            found[r.workload] = Path(r.path)
    return found


def _runs_ops(roots: Sequence[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ops, runs) over the measured runs below roots, ops tagged with the run's device."""
    from genprof import store

    ops_f, runs_f = [], []
    for r in roots:
        runs = store.load_runs(r, "runs")
        if runs.empty:
            continue
        runs = runs[(runs["status"] == "ok") & (runs["device"] != "meta")]
        ops = store.load_runs(r, "ops")
        if not ops.empty:
            ops_f.append(ops[ops["run_id"].isin(set(runs["run_id"]))].assign(
                device=lambda d: d["run_id"].map(runs.set_index("run_id")["device"])))
        runs_f.append(runs)
    ops = pd.concat(ops_f, ignore_index=True) if ops_f else pd.DataFrame()
    runs = pd.concat(runs_f, ignore_index=True) if runs_f else pd.DataFrame()
    return ops, runs


def _llm_measured(runs: pd.DataFrame, device: str) -> str:
    from genprof import store

    if runs.empty:
        return ""
    r = runs[(runs["workload"] == "llm") & (runs["optimizations"] == "baseline")
             & runs["device"].astype(str).str.startswith(device)]
    if r.empty:
        return ""
    row = r.sort_values("created").iloc[-1]
    d = (store.read_run(row["path"]).get("summary") or {}).get("derived") or {}
    if "ttft_s" not in d:
        return ""
    return f"size {row['size']}: prefill {d['ttft_s']:.3g} s, decode {d.get('tpot_s', float('nan')):.3g} s/token"


def build_paper(counted: dict[str, dict[str, Any]], measured_roots: Sequence[str | Path],
                attention_doc: str | Path | None = None, size: str = "paper", host: Any = None) -> dict[str, Any]:
    """Everything `write_paper` shows: projection, headline table, family table, LLM check, host verdicts
    (on `host`, a host profile; the default one when None)."""
    from genprof.roofline.host import load_host

    host = host or load_host()
    proj = project_suite(counted)
    claims = projected_claims(proj) if not proj.empty else {}
    ops, runs = _runs_ops(measured_roots)
    cpu = measured_claims(ops[ops["device"] == "cpu"], runs) if not ops.empty else {}
    gpu = measured_claims(ops[ops["device"].astype(str).str.startswith("cuda")], runs) if not ops.empty else {}
    speed = doc_speedups(attention_doc) if attention_doc else {}
    llm = llm_check(counted, proj) if not proj.empty else pd.DataFrame()
    llm_row = None
    if not llm.empty:
        llm_row = {"projection": "; ".join(
            f"{r.hw}: prefill {_pct(r.prefill_compute_bound_share)} compute-bound, decode "
            f"{_pct(1 - r.decode_compute_bound_share)} memory-bound, {1e3 * r.decode_s_per_token:.2f} ms/token"
            for r in llm.itertuples()),
            "cpu": _llm_measured(runs, "cpu") or "—", "gpu": _llm_measured(runs, "cuda")}
    head = headline_table(claims, cpu, gpu, speed, llm_row, size=size)
    diffusion = [n for n, k in KINDS.items() if k == "diffusion-tti"] + ["make-a-video"]
    return {"projection": proj, "headline": head, "families": family_table(proj) if not proj.empty else pd.DataFrame(),
            "norm_ops": family_ops(proj, "Normalization", diffusion, HEADLINE_HW) if not proj.empty else pd.DataFrame(),
            "llm": llm, "cpu_measured": {k: sorted({str(v[k]) for v in cpu.values() if v.get(k)})
                                         for k in ("size", "dtype")},
            "failed": {n: c["error"] for n, c in counted.items() if "error" in c},
            "hosts": host_verdicts(counted, host), "host": host.label}


def _cpu_where(measured: dict[str, list[str]] | None) -> str:
    """Where the CPU measurements come from: "at `small`\nsize (float32; ...)" from the runs used."""
    sizes, dtypes = (measured or {}).get("size") or [], (measured or {}).get("dtype") or []
    what = "shares of op time, genprof's own overhead left out"
    if not sizes:
        return f"where such runs were given\n({what})"
    at = ", ".join(f"`{v}`" for v in sizes)
    return f"at {at}\nsize{'s' if len(sizes) > 1 else ''} ({', '.join(dtypes) + '; ' if dtypes else ''}{what})"


def markdown(paper: dict[str, Any], command: str, size: str = "paper") -> str:
    from genprof.reports.markdown import to_markdown

    fam = paper["families"]
    fam_md = to_markdown(fam.assign(**{c: fam[c].map(_pct) for c in fam.columns[2:]})) if not fam.empty else "(none)"
    llm = paper["llm"]
    llm_md = to_markdown(llm.assign(**{c: llm[c].map(_pct) for c in llm.columns if "share" in c or c == "error"}),
                         floatfmt=".4g") if not llm.empty else "(not counted)"
    failed = "".join(f"\n- {n}: {r}" for n, r in paper["failed"].items())
    return f"""# The study's headline claims: projection and measurement

Reproduce: `{command}`

The claim and the study's number; our projection at `{size}` size (meta-device counts in bfloat16,
projected with the roofline model of `genprof/roofline/project.py` on the {PROFILES[HEADLINE_HW].label}
profile; docs/roofline.md says what the model leaves out); our measurement on a CPU {_cpu_where(paper.get("cpu_measured"))}; and on a GPU where such runs
were given. A cell that needs a GPU says so.

{to_markdown(paper["headline"])}

## Projected operator-family breakdown at {size} size ({PROFILES[HEADLINE_HW].label}, bfloat16)

Share of projected time per family (launch-bound excess as Overhead); `projected s` is one image,
video or LLM phase at batch 1, counted steps extended to the full run (see docs/workloads.md).

{fam_md}

## Normalization in the projected diffusion time, op by op ({PROFILES[HEADLINE_HW].label})

Every Normalization op of the diffusion workloads: launches over the whole inference (counted
steps extended to the full run), bytes one launch reads and writes, and its projected time.
Norms compute next to nothing: each launch is memory-bound, its time its bytes over the effective
bandwidth, so the share follows the bytes (`group_norm` reads and writes a UNet activation once;
`layer_norm` a transformer block's tokens).

{fops.markdown(paper.get("norm_ops", pd.DataFrame()))}

## How the counts are made, and what changed

{fops.COUNTS_NOTE}
## LLM (Llama-2-7B) on each GPU profile

Decode time per token projected against (weight bytes + KV-cache bytes) / effective bandwidth by
hand, at the first decode step (KV length = prompt + 1).

{llm_md}

## Host-bound or device-bound: eager PyTorch at {size} size ({PROFILES[HEADLINE_HW].label}, batch 1)

The same counts with the host priced too (docs/roofline.md, "Host time"): every op's host time on
{paper.get("host", "the host profile")} plus a CUDA launch per kernel, overlapped with the device's
roofline time (the device runs behind the host; every step ends in a synchronization). `eager s`
is the combined time; the verdict compares host time with the device's busy time (each kernel at
least the launch floor). `graphs s`: the same kernels replayed as a CUDA graph;
`graphs+fused-norm s`: also one kernel per normalization; the speedup is eager over the latter.

{_hosts_md(paper.get("hosts"))}
{("" if not failed else chr(10) + "## Not counted" + chr(10) + failed + chr(10))}"""


def _hosts_md(hosts: pd.DataFrame | None) -> str:
    from genprof.reports.markdown import to_markdown

    if hosts is None or hosts.empty:
        return "(not counted)"
    return to_markdown(hosts.assign(**{"graphs speedup": hosts["graphs speedup"].map(lambda v: f"{v:.2f}×")}),
                       floatfmt=".4g")


def write_paper(paper: dict[str, Any], md_path: str | Path, html_path: str | Path | None,
                report_roots: Sequence[str | Path], command: str, size: str = "paper") -> list[Path]:
    md_path = Path(md_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(markdown(paper, command, size))
    written = [md_path]
    if html_path:
        from genprof.reports.html import write_report

        section = {"headline": paper["headline"], "families": paper["families"], "llm": paper["llm"],
                   "projection": paper["projection"], "hw": HEADLINE_HW, "hosts": paper.get("hosts")}
        written.append(write_report(list(report_roots), html_path, title="genprof: the study's headline claims",
                                    roofline=section))
    return written
