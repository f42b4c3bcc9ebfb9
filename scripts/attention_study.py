"""Reproduce the study's attention findings on the suite: Flash Attention against the unfused baseline.

For every workload of the suite: one run with `attn=math` (explicit matmul ->
softmax -> matmul) and one with `attn=flash` (the fused kernel), in the same
process, alternating, in trace mode. From them:
- attention's share of time before and after, the end-to-end and the
  attention-only speedup from the fused kernel;
- the diffusion-versus-transformer contrast (ratio of their speedups);
- after the fused kernel: Convolution's share in diffusion TTI, Linear's share in
  transformer TTI; the temporal share of attention time in the TTV workloads;
- how these move with resolution (stable-diffusion latent sizes) and number of
  frames (make-a-video), a sweep of three values each.
Shares are of op time (the Overhead rows, Python and framework time that no op
covers, are left out and reported on their own): on a CPU at `small` size that
overhead is large and would hide the operator mix the study is about.

  python scripts/attention_study.py --size small --out runs/attention-study --doc docs/attention-study.md
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import pandas as pd

import genprof
from genprof import workloads
from genprof.api import SUITE
from genprof.reports import breakdown
from genprof.reports.markdown import to_markdown

BACKENDS = ("math", "flash")
SWEEPS = {  # workload -> (preset key, values)
    "stable-diffusion": ("latent", (16, 24, 32)),
    "make-a-video": ("frames", (4, 8, 16)),
}
CLAIMS = [
    ("Flash Attention speedup, diffusion TTI / transformer TTI", "1.1-2.5x larger for diffusion"),
    ("Temporal attention share of attention time (TTV)", "> 60%"),
    ("Convolution share of diffusion-TTI time after Flash Attention", "up to 44%"),
    ("Linear share of transformer-TTI time after Flash Attention", "up to 49%"),
]


def shares(ops: pd.DataFrame) -> dict[str, float]:
    op_time = ops[ops["family"] != "Overhead"]
    fam = breakdown(op_time, "family").set_index("family")["share"]
    total = breakdown(ops, "family").set_index("family")
    att = op_time[op_time["family"] == "Attention"]
    temporal = att[att["attention_kind"].str.startswith("temporal")]["total_time_s"].sum()
    return {
        "attention_share": float(fam.get("Attention", 0.0)), "conv_share": float(fam.get("Convolution", 0.0)),
        "linear_share": float(fam.get("Linear", 0.0)),
        "overhead_share_of_all": float(total["share"].get("Overhead", 0.0)),
        "attention_time_s": float(att["total_time_s"].sum() / max(ops["repeat"].nunique(), 1)),
        "temporal_share_of_attention": float(temporal / att["total_time_s"].sum()) if len(att) else 0.0,
    }


def measure(workload: str, size: str, out: Path, repeats: int, params: dict | None = None) -> dict:
    """Run math and flash alternately (repeats rounds of one run each); medians per backend."""
    per: dict[str, list] = {b: [] for b in BACKENDS}
    for _ in range(repeats):
        for b in BACKENDS:
            res = genprof.run(workload, size=size, repeats=1, warmup=1, out=out, optimizations=[f"attn={b}"],
                              params=params or {})
            if not res.ok:
                raise RuntimeError(f"{workload} attn={b}: {res.meta['reason']}")
            per[b].append((res.meta["summary"]["total"]["median_s"], shares(res.ops)))
    row = {"workload": workload, "kind": workloads.get(workload).kind, **(params or {})}
    for b in BACKENDS:
        totals = sorted(t for t, _ in per[b])
        row[f"total_{b}_s"] = totals[len(totals) // 2]
        for k in per[b][0][1]:
            vals = sorted(s[k] for _, s in per[b])
            row[f"{k}_{b}"] = vals[len(vals) // 2]
    row["speedup_end_to_end"] = row["total_math_s"] / row["total_flash_s"]
    row["speedup_attention"] = row["attention_time_s_math"] / max(row["attention_time_s_flash"], 1e-12)
    return row


def claims_table(df: pd.DataFrame) -> pd.DataFrame:
    diff = df[df["kind"] == "diffusion-tti"]["speedup_end_to_end"]
    trans = df[df["kind"] == "transformer-tti"]["speedup_end_to_end"]
    ratios = [d / t for d, t in itertools.product(diff, trans)]
    ttv = df[df["kind"] == "ttv"]
    ours = [
        f"{min(ratios):.2f}-{max(ratios):.2f}x (diffusion {diff.min():.2f}-{diff.max():.2f}x, "
        f"transformer {trans.min():.2f}-{trans.max():.2f}x)" if ratios else "n/a",
        ", ".join(f"{w}: {100 * s:.0f}%" for w, s in zip(ttv["workload"], ttv["temporal_share_of_attention_flash"])),
        ", ".join(f"{w}: {100 * s:.0f}%" for w, s in zip(df[df["kind"] == "diffusion-tti"]["workload"],
                                                         df[df["kind"] == "diffusion-tti"]["conv_share_flash"])),
        ", ".join(f"{w}: {100 * s:.0f}%" for w, s in zip(df[df["kind"] == "transformer-tti"]["workload"],
                                                         df[df["kind"] == "transformer-tti"]["linear_share_flash"])),
    ]
    return pd.DataFrame({"claim": [c for c, _ in CLAIMS], "study": [s for _, s in CLAIMS], "ours": ours})


def figure(df: pd.DataFrame, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    x = range(len(df))
    ax1.bar([i - 0.2 for i in x], 100 * df["attention_share_math"], 0.4, label="math (unfused)")
    ax1.bar([i + 0.2 for i in x], 100 * df["attention_share_flash"], 0.4, label="flash (fused)")
    ax1.set_xticks(list(x), df["workload"], rotation=35, ha="right")
    ax1.set_ylabel("attention share of op time (%)")
    ax1.legend()
    colors = {"diffusion-tti": "tab:blue", "transformer-tti": "tab:orange", "ttv": "tab:green", "llm": "tab:gray"}
    ax2.bar(list(x), df["speedup_end_to_end"], color=[colors.get(k, "tab:gray") for k in df["kind"]])
    ax2.axhline(1.0, color="black", lw=0.8)
    ax2.set_xticks(list(x), df["workload"], rotation=35, ha="right")
    ax2.set_ylabel("end-to-end speedup, flash vs math")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path.with_suffix(".png"), dpi=110)
    fig.savefig(path.with_suffix(".svg"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small")
    ap.add_argument("--repeats", type=int, default=2, help="alternating rounds per backend")
    ap.add_argument("--out", default="runs/attention-study")
    ap.add_argument("--doc", default="docs/attention-study.md")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--no-sweeps", action="store_true")
    args = ap.parse_args()
    out, t0 = Path(args.out), time.time()
    names = args.only or list(SUITE)
    rows = []
    for w in names:
        print(f"[{time.time() - t0:6.0f}s] {w}", flush=True)
        rows.append(measure(w, args.size, out, args.repeats))
    df = pd.DataFrame(rows)
    sweep_rows = []
    if not args.no_sweeps:
        for w, (key, values) in SWEEPS.items():
            if w in names:
                for v in values:
                    print(f"[{time.time() - t0:6.0f}s] {w} {key}={v}", flush=True)
                    sweep_rows.append(measure(w, args.size, out, args.repeats, {key: v}))
    sweeps = pd.DataFrame(sweep_rows)
    doc = Path(args.doc)
    figure(df, doc.parent / "figures" / "attention_study")
    env = genprof.load_runs(out, table="runs").iloc[0]
    meta = genprof.read_run(env["path"])["environment"]
    cols = ["workload", "kind", "attention_share_math", "attention_share_flash", "speedup_attention",
            "speedup_end_to_end", "conv_share_flash", "linear_share_flash", "temporal_share_of_attention_flash",
            "overhead_share_of_all_flash"]
    lines = [
        "# The attention study, reproduced", "",
        f"Measured {time.strftime('%Y-%m-%d')} on {meta['cpu']} ({meta['cpu_count']} cores), torch {meta['torch']}, "
        f"diffusers {meta['diffusers']}, transformers {meta['transformers']}; size `{args.size}`, float32, batch 1, "
        f"trace mode; `math` and `flash` alternated {args.repeats}x in one process, medians. "
        "Shares are of op time (Overhead rows left out; their share of all time is the last column).",
        f"Reproduce: `python scripts/attention_study.py --size {args.size} --repeats {args.repeats}` "
        f"({time.time() - t0:.0f} s here).", "",
        "## The study's claims next to ours", "", to_markdown(claims_table(df)), "",
        "## Per workload", "", to_markdown(df[cols], ".3f"), "",
        "![attention study](figures/attention_study.png)", "",
    ]
    if not sweeps.empty:
        lines += ["## With resolution and frames", "",
                  to_markdown(sweeps[[c for c in ["workload", *SWEEPS_KEYS(sweeps), *cols[2:]] if c in sweeps]],
                              ".3f"), ""]
    lines += [open(Path(__file__).with_name("attention_study_notes.md")).read()] \
        if Path(__file__).with_name("attention_study_notes.md").exists() else []
    doc.write_text("\n".join(lines))
    print(f"wrote {doc}")


def SWEEPS_KEYS(df: pd.DataFrame) -> list[str]:  # noqa: N802 - the sweep columns present
    return [k for k, _ in SWEEPS.values() if k in df]


if __name__ == "__main__":
    main()
