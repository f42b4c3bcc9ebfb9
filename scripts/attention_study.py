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
SWEEPS = {  # workload -> (preset key, values); the default small value is in the main table
    "stable-diffusion": ("latent", (16, 48)),
    "make-a-video": ("frames", (4, 16)),
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


def measure(workload: str, size: str, out: Path, rounds: int, params: dict | None = None) -> dict:
    """Shares from one traced run per backend; end-to-end times from paired, alternating timed inferences.

    Both backends share one built model (the optimization only wraps the inference), so each round
    times one math and one flash inference back to back (order swapped every round, to cancel drift);
    the speedup is the median of the per-round ratios, its spread the min and max of them.
    """
    import torch

    from genprof.profiler import measure_timing

    params = params or {}
    row: dict = {"workload": workload, "kind": workloads.get(workload).kind, **params}
    builts = {}
    for b in BACKENDS:
        res = genprof.run(workload, size=size, repeats=1, warmup=1, out=out, optimizations=[f"attn={b}"],
                          params=params)
        if not res.ok:
            raise RuntimeError(f"{workload} attn={b}: {res.meta['reason']}")
        for k, v in shares(res.ops).items():
            row[f"{k}_{b}"] = v
        builts[b] = genprof.build(genprof.make_spec(workload, size=size, optimizations=[f"attn={b}"], params=params))
    times: dict[str, list[float]] = {b: [] for b in BACKENDS}
    device = torch.device("cpu")
    for r in range(rounds):
        for b in (BACKENDS if r % 2 == 0 else BACKENDS[::-1]):
            m = measure_timing(builts[b], device, repeats=1, warmup=0)
            times[b].append(float(m.phase_times.query("phase == 'total'")["time_s"].iloc[0]))
    ratios = sorted(a / f for a, f in zip(times["math"], times["flash"]))
    for b in BACKENDS:
        row[f"total_{b}_s"] = sorted(times[b])[len(times[b]) // 2]
    row["speedup_end_to_end"] = ratios[len(ratios) // 2]
    row["speedup_min"], row["speedup_max"] = ratios[0], ratios[-1]
    row["speedup_attention"] = row["attention_time_s_math"] / max(row["attention_time_s_flash"], 1e-12)
    # Amdahl: the end-to-end speedup if only attention time changed (from the traced shares)
    a = row["attention_share_math"]
    row["speedup_expected"] = 1.0 / (1.0 - a + a / row["speedup_attention"])
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
    ap.add_argument("--rounds", type=int, default=3, help="paired timed inferences per backend")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable on a shared machine)")
    ap.add_argument("--out", default="runs/attention-study")
    ap.add_argument("--doc", default="docs/attention-study.md")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--no-sweeps", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    out, t0 = Path(args.out), time.time()
    names = args.only or list(SUITE)
    rows = []
    for w in names:
        print(f"[{time.time() - t0:6.0f}s] {w}", flush=True)
        rows.append(measure(w, args.size, out, args.rounds))
    df = pd.DataFrame(rows)
    sweep_rows = []
    if not args.no_sweeps:
        for w, (key, values) in SWEEPS.items():
            if w in names:
                for v in values:
                    print(f"[{time.time() - t0:6.0f}s] {w} {key}={v}", flush=True)
                    sweep_rows.append(measure(w, args.size, out, args.rounds, {key: v}))
    sweeps = pd.DataFrame(sweep_rows)
    doc = Path(args.doc)
    figure(df, doc.parent / "figures" / "attention_study")
    env = genprof.load_runs(out, table="runs").iloc[0]
    meta = genprof.read_run(env["path"])["environment"]
    cols = ["workload", "kind", "attention_share_math", "attention_share_flash", "speedup_attention",
            "speedup_end_to_end", "speedup_min", "speedup_max", "speedup_expected", "conv_share_flash", "linear_share_flash", "temporal_share_of_attention_flash",
            "overhead_share_of_all_flash"]
    lines = [
        "# The attention study, reproduced", "",
        f"Measured {time.strftime('%Y-%m-%d')} on {meta['cpu']} ({meta['cpu_count']} cores), torch {meta['torch']}, "
        f"diffusers {meta['diffusers']}, transformers {meta['transformers']}; size `{args.size}`, float32, batch 1, "
        f"{args.threads} torch thread(s). Shares: one traced run per backend, of op time (Overhead rows left out; "
        "their share of all time is the last column). End-to-end speedup: median of "
        f"{args.rounds} paired timed inferences (math and flash back to back on the same built model, order "
        "alternating), with the min and max ratio; `speedup_expected` is what the traced attention times alone "
        "predict (Amdahl), a check on the timed ratio.",
        f"Reproduce: `python scripts/attention_study.py --size {args.size} --rounds {args.rounds} "
        f"--threads {args.threads}` "
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
