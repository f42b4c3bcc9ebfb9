"""Vision-context sparsification on `llava` (`--opt vision-prune`): speed, counted FLOPs and quality vs keep rate.

For each keep rate (1.0 = the unpruned model, then 0.5, 0.2, 0.1 at layer 2):
- time to first token (vision + prefill) at `small` size, timing mode, one
  torch thread, the median of >= 5 repeats, keep rates alternating in one
  process so that drift hits all of them alike;
- counted prefill FLOPs (the profiler's op table, phase `prefill`, plus the
  vision phase for the TTFT total) at `paper` size on the meta device and at
  `small` on the CPU;
- KV-cache entries after decoding (with `text-prune:keep=0.5` beside it);
- quality on the model trained on the visual retrieval task
  (genprof/assets/retrieval-llava): task accuracy, next-token agreement and
  KL of the first-token distribution against the unpruned model.
Writes the `vision` section of docs/pruning.md (with the published
Dynamic-LLaVA numbers beside ours) and prints the rows as JSON.

    python scripts/bench_vision_pruning.py            # the full measurement (quiet machine, ~10 min)
    python scripts/bench_vision_pruning.py --quick    # smoke test: fewer repeats and samples, no doc
"""

from __future__ import annotations

import argparse
import json
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import genprof
from genprof.optimizations import quality as Q
from genprof.workloads import visual_retrieval as vr

KEEPS = (1.0, 0.5, 0.2, 0.1)
LAYER = 2
DOC = Path(__file__).resolve().parent.parent / "docs" / "pruning.md"  # its `vision` section
PUBLISHED = ("Dynamic-LLaVA (LLaVA-1.5-7B, learned predictors, 20% of image tokens kept from layer 2): about 75% "
             "less prefill compute; about 50% less decode compute without a KV cache; about 50% less GPU memory "
             "when decoding with a KV cache; negligible loss on the benchmarks.")


def _opts(keep: float, text_keep: float | None = None) -> list[str]:
    opts = [] if keep >= 1.0 else [f"vision-prune:layer={LAYER},keep={keep}"]
    if text_keep is not None:
        opts.append(f"text-prune:layer={LAYER},keep={text_keep}")
    return opts


def _prefill_flops(res: Any) -> dict[str, float]:
    ops = res.ops
    by_phase = ops.groupby("phase")["flops"].sum()
    return {"prefill_flops": float(by_phase.get("prefill", 0.0)),
            "ttft_flops": float(by_phase.get("prefill", 0.0) + by_phase.get("vision", 0.0)),
            "decode_flops": float(by_phase.get("decode", 0.0))}


def counted(size: str, device: str, keeps: tuple[float, ...], tokens: int, out: Path) -> dict[float, dict[str, Any]]:
    rows: dict[float, dict[str, Any]] = {}
    for keep in keeps:
        res = genprof.run("llava", size=size, device=device, tokens=tokens, repeats=1, warmup=0, out=out,
                          optimizations=_opts(keep))
        assert res.ok, res.meta.get("reason")
        info = res.meta["info"].get("vision_prune", {})
        rows[keep] = {**_prefill_flops(res), "image_tokens_kept": info.get("image_tokens_kept",
                                                                             res.meta["info"]["image_tokens"])}
    return rows


class _FirstToken:
    """Phases that time vision + prefill (the time to first token) and stop the generation there."""

    class Done(Exception):
        pass

    def __init__(self):
        self.t0, self.ttft = time.perf_counter(), None

    @contextlib.contextmanager
    def phase(self, name: str):
        if name == "decode":
            self.ttft = time.perf_counter() - self.t0
            raise self.Done
        yield

    @contextlib.contextmanager
    def step(self, index: int):
        yield


def ttft(keeps: tuple[float, ...], repeats: int, tokens: int) -> dict[float, float]:
    """Median time to first token at `small` (vision + prefill), keep rates alternating, one thread."""
    torch.set_num_threads(1)
    builts = {keep: genprof.build(genprof.make_spec("llava", size="small", tokens=tokens,
                                                    optimizations=_opts(keep))) for keep in keeps}
    times: dict[float, list[float]] = {keep: [] for keep in keeps}
    for r in range(repeats + 1):  # the first round warms up
        for keep in keeps:
            timer = _FirstToken()
            with torch.inference_mode():
                try:
                    builts[keep].run(timer)
                except _FirstToken.Done:
                    pass
            if r:
                times[keep].append(timer.ttft)
    return {keep: statistics.median(v) for keep, v in times.items()}


def kv_memory(keeps: tuple[float, ...], tokens: int, out_dir: Path) -> dict[float, dict[str, float]]:
    """KV-cache entries after decoding at paper size (a meta-device run: the caches' lengths, no memory)."""
    out = {}
    for keep in keeps:
        for text_keep in (None, 0.5):
            res = genprof.run("llava", size="paper", device="meta", tokens=tokens, out=out_dir,
                              optimizations=_opts(keep, text_keep) or ["text-prune:keep=1.0"])
            assert res.ok, res.meta.get("reason")
            info = res.meta["info"]
            kv = (info.get("text_prune") or info["vision_prune"])["kv_entries_per_layer"]
            full = (info["prompt_len"] + tokens) * len(kv)
            out.setdefault(keep, {})["kv_fraction" if text_keep is None else "kv_fraction_text_prune_0.5"] = \
                sum(kv) / full
    return out


def quality(keeps: tuple[float, ...], samples: int) -> dict[float, dict[str, Any]]:
    def build(keep: float):
        return genprof.build(genprof.make_spec("llava", batch=samples, seed=vr.EVAL_SEED, tokens=1,
                                               params={"task": "retrieval"}, optimizations=_opts(keep)))

    ref = Q.reference(build(1.0))  # the unpruned model, once for every keep rate
    return {keep: Q.measure(build(keep), None, ref=ref) for keep in keeps}


def run_vision(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per keep rate: TTFT at small, counted FLOPs at paper (meta) and small, KV fraction, quality."""
    keeps = tuple(args.keeps)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        paper = counted("paper", "meta", keeps, 1, out)
        small = counted("small", "cpu", keeps, 1, out)
        kv = kv_memory(keeps, args.tokens, out)
    times = ttft(keeps, args.repeats, 1)
    qual = quality(keeps, args.samples)
    rows = []
    for keep in keeps:
        rows.append({
            "keep": keep, "layer": LAYER, "image_tokens_kept_paper": paper[keep]["image_tokens_kept"],
            "paper_prefill_tflops": paper[keep]["prefill_flops"] / 1e12,
            "paper_prefill_flops_vs_unpruned": paper[keep]["prefill_flops"] / paper[1.0]["prefill_flops"],
            "paper_ttft_flops_vs_unpruned": paper[keep]["ttft_flops"] / paper[1.0]["ttft_flops"],
            "small_prefill_gflops": small[keep]["prefill_flops"] / 1e9,
            "small_prefill_flops_vs_unpruned": small[keep]["prefill_flops"] / small[1.0]["prefill_flops"],
            "small_ttft_s": times[keep], "small_ttft_speedup": times[1.0] / times[keep],
            "paper_kv_fraction": kv[keep]["kv_fraction"],
            "paper_kv_fraction_text_prune_0.5": kv[keep]["kv_fraction_text_prune_0.5"],
            "accuracy": qual[keep]["accuracy"], "accuracy_unpruned": qual[keep]["accuracy_unpruned"],
            "first_token_agreement": qual[keep]["first_token_agreement"],
            "first_token_kl": qual[keep]["first_token_kl"],
        })
    return rows


def section(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The `vision` section of docs/pruning.md."""
    head = ("| keep | image tokens kept (paper) | prefill FLOPs, paper (meta) | vs unpruned | TTFT FLOPs vs unpruned "
            "| prefill FLOPs vs unpruned, small | TTFT small (s) | speedup | KV entries vs unpruned "
            "(+ text-prune 0.5) | accuracy | first-token agreement | KL first token |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['keep']} | {r['image_tokens_kept_paper']} | {r['paper_prefill_tflops']:.2f} T | "
        f"{r['paper_prefill_flops_vs_unpruned']:.3f} | {r['paper_ttft_flops_vs_unpruned']:.3f} | "
        f"{r['small_prefill_flops_vs_unpruned']:.3f} | {r['small_ttft_s']:.4f} | {r['small_ttft_speedup']:.2f}x | "
        f"{r['paper_kv_fraction']:.3f} ({r['paper_kv_fraction_text_prune_0.5']:.3f}) | {r['accuracy']:.3f} | "
        f"{r['first_token_agreement']:.3f} | {r['first_token_kl']:.4f} |\n" for r in rows)
    return f"""## Vision-context sparsification on LLaVA (`--opt vision-prune`, `--opt text-prune`)

Measured by `python scripts/bench_vision_pruning.py` ({args.repeats} timed repeats per keep rate, alternating,
one torch thread; quality on {args.samples} held-out samples of the visual retrieval task; KV entries after
{args.tokens} decoded tokens). Pruning at decoder layer {LAYER}, attention score (training-free). Unpruned
accuracy of the trained model: {rows[0]['accuracy_unpruned']:.3f}.

{head}{body}
Published, for comparison: {PUBLISHED}

How to read it: the counted prefill FLOPs are the profiler's (op table, phase `prefill`: the decoder over the
prompt); "TTFT FLOPs" adds the vision tower and projector (phase `vision`), which pruning in the decoder does
not touch. Layers 0..{LAYER - 1} still run on every token, so keep = 0.2 leaves a little more than 20% of the
decoder's work. "KV entries" counts key/value entries summed over layers after decoding: pruned image tokens
never enter the caches of later layers, and `text-prune:keep=0.5` drops half of the generated tokens' entries.
Our selector is a score (attention received from the last prompt token), not Dynamic-LLaVA's learned
predictors; the quality columns are on a tiny model trained on a synthetic task, not on LLaVA benchmarks.
Environment: {torch.__version__}, {time.strftime('%Y-%m-%d')}.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keeps", type=float, nargs="+", default=list(KEEPS))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 repeat, 64 samples, no doc written")
    args = ap.parse_args()
    if 1.0 not in args.keeps:
        args.keeps = [1.0, *args.keeps]
    if args.quick:
        args.repeats, args.samples, args.tokens = 1, 64, 8
    rows = run_vision(args)
    print(json.dumps(rows, indent=1))
    if not args.quick:
        from bench_pruning import write_section

        write_section("vision", section(rows, args))
        print(f"wrote the vision section of {DOC}")


if __name__ == "__main__":
    main()
