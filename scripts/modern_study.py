"""Today's generators asked the 2023 study's questions, beside the study's own suite: writes docs/modern.md.

The questions: what share of the time goes to Convolution, Linear, Attention
and the rest; what Flash Attention (a fused attention kernel) buys end to end;
how long the attention sequences are; what share the VAE (the image or video
decoder) takes. Asked of the study's eight TTI/TTV workloads (`genprof suite`)
and of the modern suite (`genprof suite --suite modern`), two ways:

- `paper` size, projected: each workload counted on the meta device in
  bfloat16 (one denoising step, or three decode tokens; steps have equal shapes
  and decoding grows linearly, so `roofline.project.step_weights` extends them
  to the published step and token counts), projected with the roofline model
  on the A100, H100 and H200 profiles. Without a fused kernel, attention would
  run as three kernels, each on its own roofline: QK^T writing the Lq x Lk
  scores, softmax reading and writing them, PV reading them (bfloat16 scores).
- `small` size, measured on this CPU: one traced run with `attn=math` and one
  with `attn=flash` per workload (the shares, from the fused run), then paired
  timed inferences, math and flash back to back on the same built model, order
  alternating (the speedup: median of the per-round ratios, and their range;
  the decoder share: median over the flash rounds).

Shares are of op time (genprof's Overhead rows, Python and framework time that
no op covers, left out; their share of all time has its own column). Nothing
here times a GPU: the GPU columns are projections.

  python scripts/modern_study.py
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

import genprof
from genprof import workloads
from genprof.api import MODERN_SUITE, SUITE
from genprof.reports.markdown import to_markdown
from genprof.roofline.hardware import GPU_NAMES, PROFILES
from genprof.roofline.project import project, step_weights
from genprof.study.paper import HEADLINE_HW, _pct, full_counts

STUDY = tuple(n for n in SUITE if n != "llm")  # the study's eight TTI/TTV workloads
MODERN = tuple(MODERN_SUITE)
GPUS = GPU_NAMES
HEADLINE = HEADLINE_HW
FAMILIES = ("Convolution", "Linear", "Attention")  # the rest is summed as "Rest"
FUSED = {"aten::scaled_dot_product_attention", "aten::_scaled_dot_product_flash_attention",
         "aten::_scaled_dot_product_efficient_attention", "aten::_scaled_dot_product_cudnn_attention"}
# The phase that turns latents or tokens into pixels. Imagen works in pixel space: no decoder.
DECODER = {"imagen": None, "muse": "vq_decode", "parti": "vq_decode", "cm3leon": "vq_decode",
           "phenaki": "video_decode"}
# The main network: its attention is where the sequence lengths are read (text encoders and VAEs aside).
MAIN_PARTS = ("unet", "sr_unet", "transformer", "model")


def suite_of(name: str) -> str:
    return "2023 study" if name in STUDY else "modern"


def decoder_phase(name: str) -> str | None:
    return DECODER.get(name, "decode")


# ---------------------------------------------------------------------------------------------- paper, projected


def count(names: Sequence[str], size: str, out: Path) -> dict[str, dict[str, Any]]:
    """Meta-device counts in bfloat16: name -> {"ops", "counts", "params"}."""
    counted = {}
    for name in names:
        kw = {"steps": 1} if workloads.get(name).counted_by == "steps" else {"tokens": 3}
        res = genprof.run(name, size=size, device="meta", dtype="bfloat16", out=out, **kw)
        if not res.ok:
            raise RuntimeError(f"{name} at {size} on meta: {res.meta['reason']}")
        counted[name] = {"ops": res.ops, "counts": full_counts(name, size, res.ops),
                         "params": res.meta["info"]["parameters"]}
    return counted


def fused_attention(p: pd.DataFrame) -> pd.Series:
    return p["op"].isin(FUSED) & (p["seq_kv"] > 0)


def unfused_attention_s(p: pd.DataFrame, hw: Any) -> pd.Series:
    """Per row: the time a fused attention row would take as QK^T, softmax and PV kernels (0 elsewhere)."""
    att = fused_attention(p)
    scores = 2.0 * p["batch_heads"].astype(float) * p["seq_q"] * p["seq_kv"]  # bytes of one Lq x Lk pass, bf16
    half = p["t_compute_s"] / 2  # the two matmuls share the FLOPs
    io = p["bytes_per_call"] / 2  # q, k on the way in; v, out on the way out
    per_call = (np.maximum(half, (io + scores) / hw.bandwidth) + 2 * scores / hw.bandwidth
                + np.maximum(half, (io + scores) / hw.bandwidth))
    return (per_call * p["calls"]).where(att, 0.0)


def projection(counted: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Every counted op row projected on every GPU profile, weighted to the whole inference."""
    frames = []
    for name, c in counted.items():
        for hw_name in GPUS:
            hw = PROFILES[hw_name]
            p = project(c["ops"], hw, "bfloat16")
            w = step_weights(p, c["counts"])
            p = p.assign(unfused_s=unfused_attention_s(p, hw) * w, time_s=p["time_s"].astype(float) * w)
            frames.append(p)
    return pd.concat(frames, ignore_index=True)


def shares(df: pd.DataFrame, time: str) -> dict[str, float]:
    """Convolution / Linear / Attention / Rest shares of op time, and Overhead's share of all time."""
    ops = df[df["family"] != "Overhead"]
    total = float(ops[time].sum())
    out = {f: float(ops.loc[ops["family"] == f, time].sum()) / total for f in FAMILIES}
    out["Rest"] = 1.0 - sum(out.values())
    rest = ops[~ops["family"].isin(FAMILIES)].groupby("family")[time].sum()
    out["largest of the rest"] = f"{rest.idxmax()} {100 * rest.max() / total:.0f}%" if len(rest) else "—"
    out["Overhead (of all)"] = float(df.loc[df["family"] == "Overhead", time].sum()) / float(df[time].sum())
    return out


def sequences(ops: pd.DataFrame) -> dict[str, Any]:
    """Query lengths of the main network's attention (min-max), its longest key length, and its kinds."""
    att = ops[(ops["family"] == "Attention") & ops["part"].isin(MAIN_PARTS) & (ops["seq_q"] > 0)]
    if att.empty:
        return {"seq_q": "—", "seq_kv max": "—"}
    lo, hi = int(att["seq_q"].min()), int(att["seq_q"].max())
    return {"seq_q": f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}", "seq_kv max": f"{int(att['seq_kv'].max()):,}"}


def kinds(p: pd.DataFrame) -> str:
    """Attention kinds of the main network, with their share of its projected attention time."""
    att = p[(p["family"] == "Attention") & p["part"].isin(MAIN_PARTS)]
    t = att.groupby("attention_kind")["time_s"].sum().sort_values(ascending=False)
    return ", ".join(f"{k} {100 * v / t.sum():.0f}%" for k, v in t.items() if v / t.sum() >= 0.005) or "—"


def paper_tables(counted: dict[str, dict[str, Any]], proj: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(shares at paper size on the headline GPU, per-GPU time and flash speedup)."""
    rows, gpu_rows = [], []
    for name, c in counted.items():
        p = proj[(proj["workload"] == name) & (proj["hw"] == HEADLINE)]
        dec = decoder_phase(name)
        total = float(p["time_s"].sum())
        rows.append({"workload": name, "suite": suite_of(name), "kind": workloads.get(name).kind,
                     **sequences(c["ops"]), "attention kinds": kinds(p), **shares(p, "time_s"),
                     "decoder (VAE) share": float(p.loc[p["phase"] == dec, "time_s"].sum()) / total if dec else np.nan})
        g = {"workload": name}
        for hw_name in GPUS:
            q = proj[(proj["workload"] == name) & (proj["hw"] == hw_name)]
            fused = float(q["time_s"].sum())
            att = fused_attention(q)  # weights of single rows can be negative (step_weights): select by op
            unfused = fused - float(q.loc[att, "time_s"].sum()) + float(q.loc[att, "unfused_s"].sum())
            g[f"{hw_name} s"], g[f"{hw_name} flash speedup"] = fused, unfused / fused
        gpu_rows.append(g)
    return pd.DataFrame(rows), pd.DataFrame(gpu_rows)


# ---------------------------------------------------------------------------------------------- small, measured


def paper_steps_share(name: str, size: str, phases: pd.DataFrame, dec: str) -> float:
    """The decoder's share of one timed inference (`phases`) with its stepped phases scaled from the `size`
    step counts to the published ones (the rest of the inference as measured)."""
    wl = workloads.get(name)
    if wl.counted_by != "steps":
        return np.nan
    small, paper = wl.preset(size), wl.preset("paper")
    whole = phases[phases["step"] < 0].groupby("phase")["time_s"].sum()
    key = {ph: "sr_steps" if ph == "super_resolution" else "steps"
           for ph in phases.loc[phases["step"] >= 0, "phase"].unique()}
    total = whole["total"] + sum(whole[ph] * (paper[k] / small[k] - 1) for ph, k in key.items())
    return float(whole.get(dec, 0.0)) / total


def measure(name: str, size: str, out: Path, rounds: int) -> dict[str, Any]:
    """Shares from traced math and flash runs; speedup and decoder share from paired timed inferences."""
    import torch

    from genprof.profiler import measure_timing

    row: dict[str, Any] = {"workload": name, "suite": suite_of(name)}
    for backend in ("math", "flash"):
        res = genprof.run(name, size=size, repeats=1, warmup=1, out=out, optimizations=[f"attn={backend}"])
        if not res.ok:
            raise RuntimeError(f"{name} attn={backend}: {res.meta['reason']}")
        s = shares(res.ops, "total_time_s")
        row[f"attention share ({backend})"] = s["Attention"]
        if backend == "flash":
            row.update({**sequences(res.ops), **s})
    built = {b: genprof.build(genprof.make_spec(name, size=size, optimizations=[f"attn={b}"])) for b in ("math", "flash")}
    times: dict[str, list[float]] = {"math": [], "flash": []}
    dec, dec_shares, at_paper = decoder_phase(name), [], []
    for r in range(rounds):
        for b in (("math", "flash") if r % 2 == 0 else ("flash", "math")):
            m = measure_timing(built[b], torch.device("cpu"), repeats=1, warmup=0)
            t = m.phase_times
            times[b].append(float(t.loc[t["phase"] == "total", "time_s"].iloc[0]))
            if b == "flash" and dec:
                dec_shares.append(float(t.loc[(t["phase"] == dec) & (t["step"] < 0), "time_s"].sum()) / times[b][-1])
                at_paper.append(paper_steps_share(name, size, t, dec))
    ratios = sorted(a / f for a, f in zip(times["math"], times["flash"]))
    row["flash total s"] = float(np.median(times["flash"]))
    row["flash speedup"], row["speedup min"], row["speedup max"] = float(np.median(ratios)), ratios[0], ratios[-1]
    row["decoder (VAE) share"] = float(np.median(dec_shares)) if dec else np.nan
    row["decoder share at paper steps"] = float(np.median(at_paper)) if dec else np.nan
    return row


# ---------------------------------------------------------------------------------------------- writing


def figure(paper: pd.DataFrame, small: pd.DataFrame, path: Path) -> list[Path]:
    """Two panels of stacked family shares, the 2023 suite then the modern one: paper projected, small measured."""
    from matplotlib.figure import Figure

    from genprof.reports.figures import FAMILY_COLORS

    fig = Figure(figsize=(13, 4.8))
    axes = fig.subplots(1, 2, sharey=True)
    colors = {**FAMILY_COLORS, "Rest": "#c7c7c7"}
    for ax, df, title in ((axes[0], paper, f"paper size, projected on {PROFILES[HEADLINE].label} (bf16)"),
                          (axes[1], small, "small size, measured on this CPU (fp32, attn=flash)")):
        if df.empty:
            ax.axis("off")
            ax.text(0.5, 0.5, "not measured (--no-measure)", ha="center", transform=ax.transAxes, fontsize=9)
            continue
        n_study = int((df["suite"] == "2023 study").sum())
        x = np.arange(len(df)) + np.where(np.arange(len(df)) >= n_study, 0.6, 0.0)
        bottom = np.zeros(len(df))
        for fam in (*FAMILIES, "Rest"):
            vals = 100 * df[fam].to_numpy()
            ax.bar(x, vals, 0.75, bottom=bottom, color=colors[fam], label=fam, edgecolor="white", linewidth=0.5)
            for xi, v, b in zip(x, vals, bottom):
                if v >= 8:
                    ax.text(xi, b + v / 2, f"{v:.0f}", ha="center", va="center", fontsize=7, color="white")
            bottom += vals
        ax.set_xticks(x, df["workload"], rotation=40, ha="right", fontsize=8)
        for suite, xs in (("2023 study", x[:n_study]), ("modern", x[n_study:])):
            if len(xs):
                ax.text(xs.mean(), 103, suite, ha="center", va="bottom", fontsize=8)
        if 0 < n_study < len(df):
            ax.axvline((x[n_study - 1] + x[n_study]) / 2, color="black", lw=0.8, ls=":")
        ax.set_ylim(0, 110)
        ax.set_title(title, fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_ylabel("share of op time (%)")
    legend_on = axes[1] if len(small) else axes[0]
    legend_on.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, reverse=True)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path.with_suffix(".png"), dpi=110)
    fig.savefig(path.with_suffix(".svg"))
    return [path.with_suffix(".png"), path.with_suffix(".svg")]


def _range(df: pd.DataFrame, col: str, fmt=_pct) -> str:
    vals = df[col].dropna()
    if vals.empty:
        return "—"
    lo, hi = vals.idxmin(), vals.idxmax()
    if fmt(vals[lo]) == fmt(vals[hi]):
        return fmt(vals[lo]) + ("" if lo == hi else " (all)") + (f" ({df.at[lo, 'workload']})" if lo == hi else "")
    return f"{fmt(vals[lo])} ({df.at[lo, 'workload']}) – {fmt(vals[hi])} ({df.at[hi, 'workload']})"


def answers(paper: pd.DataFrame, gpu: pd.DataFrame, small: pd.DataFrame) -> pd.DataFrame:
    """The study's questions, one row each: the 2023 suite and the modern one, at paper size (H100) and small."""
    def times(v: float) -> str:
        return f"{v:.2f}×"

    speed = gpu.assign(suite=gpu["workload"].map(suite_of), speedup=gpu[f"{HEADLINE} flash speedup"])
    small = small.rename(columns={"flash speedup": "speedup"})
    rows = []
    for question, col, fmt in (("Convolution share", "Convolution", _pct), ("Linear share", "Linear", _pct),
                               ("Attention share (fused kernel)", "Attention", _pct),
                               ("Flash Attention end-to-end speedup", "speedup", times),
                               ("Decoder (VAE) share", "decoder (VAE) share", _pct)):
        at_paper = speed if col == "speedup" else paper
        row = {"question": question}
        for suite in ("2023 study", "modern"):
            row[f"{suite}: paper, {HEADLINE.upper()}"] = _range(at_paper[at_paper["suite"] == suite], col, fmt)
            row[f"{suite}: small, CPU"] = (_range(small[small["suite"] == suite], col, fmt) if len(small)
                                           else "not measured")
        rows.append(row)
    return pd.DataFrame(rows)


def environment(out: Path) -> str:
    runs = genprof.load_runs(out, table="runs")
    runs = runs[runs["device"] == "cpu"] if "device" in runs else runs
    if runs.empty:
        return "no CPU measurement"
    env = genprof.read_run(runs.iloc[0]["path"])["environment"]
    return (f"{env['cpu']} ({env['cpu_count']} cores), torch {env['torch']}, diffusers {env['diffusers']}, "
            f"transformers {env['transformers']}")


def findings(paper: pd.DataFrame, gpu: pd.DataFrame, proj: pd.DataFrame) -> list[str]:
    """Sentences the tables support, computed from them (so that they stay true when the tables change)."""
    p = proj[proj["hw"] == HEADLINE]
    modern, study = paper[paper["suite"] == "modern"], paper[paper["suite"] == "2023 study"]
    conv = p[(p["family"] == "Convolution") & p["workload"].isin(modern["workload"])]
    in_decoder = float(conv.loc[conv["phase"] == "decode", "time_s"].sum() / conv["time_s"].sum())
    diffusion = study[study["kind"] == "diffusion-tti"]
    g = gpu.set_index("workload")[f"{HEADLINE} flash speedup"]
    out = [
        f"Convolution: the 2023 diffusion models spend {_range(diffusion, 'Convolution')} of op time in "
        f"convolutions at paper size; the modern ones {_range(modern, 'Convolution')}, "
        f"{100 * in_decoder:.0f}% of it in the VAE decode.",
        f"Linear and Attention now carry the models: Linear {_range(modern, 'Linear')}, Attention "
        f"{_range(modern, 'Attention')} (with the fused kernel).",
        f"Flash Attention is worth {g[modern['workload']].min():.2f}–{g[modern['workload']].max():.2f}× end to end on "
        f"the modern models against {g[study['workload']].min():.2f}–{g[study['workload']].max():.2f}× on the 2023 "
        f"suite (projected, {PROFILES[HEADLINE].label}).",
        "Sequence lengths (query tokens of the main network's attention): "
        + "; ".join(f"{label} {', '.join(f'{r.workload} {r.seq_q}' for r in group.itertuples())}"
                    for label, group in (("2023 study:", study), ("modern images:", modern[modern["kind"] != "ttv"]),
                                         ("modern video:", modern[modern["kind"] == "ttv"])) if len(group)) + ".",
        f"The decoder (VAE) takes {_range(modern, 'decoder (VAE) share')} of a modern inference at paper size "
        f"(the 2023 suite: {_range(study, 'decoder (VAE) share')}).",
    ]
    return [f"- {s}" for s in out]


def markdown(paper: pd.DataFrame, gpu: pd.DataFrame, small: pd.DataFrame, proj: pd.DataFrame, command: str,
             where: str, seconds: float, args: argparse.Namespace) -> str:
    pct_cols = [*FAMILIES, "Rest", "Overhead (of all)", "decoder (VAE) share", "decoder share at paper steps",
                "attention share (math)", "attention share (flash)"]
    fmt = lambda df: to_markdown(df.assign(**{c: df[c].map(_pct) for c in pct_cols if c in df}), ".3g")  # noqa: E731
    measured = (f"## At `{args.size}` size, measured on this CPU\n\n{where}; float32, batch 1, {args.threads} torch "
                f"thread(s), {args.rounds} paired rounds per workload. The machine is shared with other engineers "
                "working at the same time: the times carry their load, and the paired, alternating rounds are "
                "what makes the speedups comparable (their min and max are beside the median). `decoder share at "
                "paper steps`: the measured phase times with the denoising phases scaled to the published step "
                "counts (fewer steps at `small` inflate the decoder's share).\n\n"
                + fmt(small) + "\n") if len(small) else "## Not measured\n\n(`--no-measure`)\n"
    notes = Path(__file__).with_name("modern_study_notes.md")
    return "\n".join([
        "# Today's generators beside the 2023 suite", "",
        f"Reproduce: `{command}` ({seconds / 60:.0f} min here; `--no-measure` gives the projection alone).", "",
        "The study's questions (share of Convolution / Linear / Attention / the rest, what Flash Attention buys, "
        "how long the sequences are, the VAE's share) asked of five diffusion transformers (docs/workloads.md: "
        "`pixart`, `sd3`, `flux`, `cogvideox`, `wan`) beside the study's eight TTI/TTV workloads. At `paper` size, "
        f"counted on the meta device in bfloat16 and projected with the roofline model of "
        f"`genprof/roofline/project.py` on the {', '.join(PROFILES[g].label for g in GPUS)} profiles "
        "(docs/roofline.md says what it leaves out); at `small` size, measured on this CPU. Shares are of op time "
        "(Overhead, time no op covers, aside); how this script computes each column is in its docstring.", "",
        "## The study's questions, asked again", "", to_markdown(answers(paper, gpu, small)), "",
        *findings(paper, gpu, proj), "",
        "![time by operator family: the 2023 suite and today's generators](figures/modern_families.png)", "",
        f"## At `{args.paper_size}` size, projected on the {PROFILES[HEADLINE].label} (bfloat16)", "",
        "`seq_q`: query lengths of the main network's attention (UNet or transformer; text encoders and VAEs "
        "aside), `seq_kv max` its longest key length; `attention kinds`: their share of its attention time. "
        "`Overhead (of all)` on a GPU profile is the launch-bound excess: steps whose kernels run shorter than "
        "it takes to launch them.", "",
        fmt(paper), "",
        "## Whole inference on each GPU profile", "",
        "Projected seconds per image or video at batch 1, and the end-to-end speedup of the fused attention "
        "kernel over attention as three kernels (QK^T, softmax, PV) on the same profile.", "",
        to_markdown(gpu, ".3g"), "",
        measured,
        notes.read_text() if notes.exists() else "",
    ])


def main(argv: Sequence[str] | None = None) -> list[Path]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small", help="size measured on this CPU")
    ap.add_argument("--paper-size", default="paper", help="size counted on meta and projected")
    ap.add_argument("--rounds", type=int, default=3, help="paired timed inferences per backend")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable on a shared machine)")
    ap.add_argument("--out", default="runs/modern-study")
    ap.add_argument("--doc", default="docs/modern.md")
    ap.add_argument("--figure", default="docs/figures/modern_families")
    ap.add_argument("--only", nargs="*", default=None, help="workloads (default: both suites)")
    ap.add_argument("--no-measure", action="store_true", help="the projection alone")
    args = ap.parse_args(argv)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return study(args, ap.parse_args([]))
    finally:
        torch.set_num_threads(threads)  # the caller's (a test runs main in its own process)


def study(args: argparse.Namespace, default: argparse.Namespace) -> list[Path]:
    """The study with the options `args` (`default`: the options' defaults, left out of the command shown)."""
    t0, out = time.time(), Path(args.out)
    names = [n for n in (*STUDY, *MODERN) if not args.only or n in args.only]
    counted = count(names, args.paper_size, out / f"count-{args.paper_size}")
    proj = projection(counted)
    paper, gpu = paper_tables(counted, proj)
    rows = []
    for n in ([] if args.no_measure else names):
        print(f"[{time.time() - t0:6.0f}s] measuring {n}", flush=True)
        rows.append(measure(n, args.size, out / f"measured-{args.size}", args.rounds))
    small = pd.DataFrame(rows)
    if len(small):
        small = small[["workload", "suite", "seq_q", "seq_kv max", *FAMILIES, "Rest", "largest of the rest",
                       "Overhead (of all)",
                       "attention share (math)", "attention share (flash)", "flash speedup", "speedup min",
                       "speedup max", "flash total s", "decoder (VAE) share", "decoder share at paper steps"]]
    written = figure(paper, small, Path(args.figure))
    extra = [f"--{k.replace('_', '-')} {shlex.join(v) if isinstance(v, list) else v}" for k, v in vars(args).items()
             if v != getattr(default, k) and not isinstance(v, bool)] + (["--no-measure"] if args.no_measure else [])
    command = " ".join(["python scripts/modern_study.py", *extra])
    where = environment(out / f"measured-{args.size}") if len(small) else ""
    doc = Path(args.doc)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(markdown(paper, gpu, small, proj, command, where, time.time() - t0, args))
    print(f"wrote {doc}, {', '.join(map(str, written))} ({time.time() - t0:.0f} s)")
    return [doc, *written]


if __name__ == "__main__":
    main(sys.argv[1:])
