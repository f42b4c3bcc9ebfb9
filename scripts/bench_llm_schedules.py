"""Benchmark the LLM prefill schedules against their baselines, side by side in one process.

Each comparison builds the `llm` workload once (the model is shared through
genprof's build cache), then runs baseline and schedule alternately (order
flipped every repeat), after one warm-up each, and takes medians:

1. prepacking vs right-padded batch: `mmlu` prompts at --batch (32) on --size
   (small); prefill time, speedup, ideal bound = padded tokens / real tokens
   (the speedup if time were proportional to tokens), fraction of the bound;
   peak memory (RSS growth).
2. chunked prefill overhead: one prompt of --long-prompt (1800) tokens,
   unchunked vs chunked-prefill and fixed-chunk for chunk 64..1024; the
   fixed shape's padding cost.
3. decode-maximal batching (SARATHI): a stream of --stream requests (mmlu
   prompts, --out tokens each), at most --sarathi-batch in flight, hybrid vs
   decode-only steps; decode tokens/s (whole steps carrying decodes, and the
   decodes' marginal time over a chunk alone), end-to-end tokens/s, TTFT, TBT.

Writes the tables, the published numbers (docs: OPTIMIZATIONS.md) and the
conditions to --out (docs/llm-schedules.md).
Usage: python scripts/bench_llm_schedules.py [--size small] [--batch 32] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import genprof
from genprof.phases import NullPhases
from genprof.profiler.memory import MemoryMonitor


def run_once(built) -> dict:
    """One inference: the schedule's metrics, and the peak memory (RSS growth) while it ran."""
    with MemoryMonitor(torch.device("cpu"), interval_s=0.005) as mem, torch.inference_mode():
        built.run(NullPhases())
    return {**built.info["schedule"], "peak_memory": mem.result()}


def side_by_side(builts: dict[str, object], repeats: int, warmup: int = 1) -> dict[str, list[dict]]:
    """Every variant run `repeats` times, interleaved, order reversed on odd repeats."""
    names = list(builts)
    for _ in range(warmup):
        for n in names:
            run_once(builts[n])
    out: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            out[n].append(run_once(builts[n]))
    return out


def med(rows: list[dict], key: str) -> float:
    return statistics.median(float(r[key]) for r in rows)


def build(size: str, batch: int, tokens: int, opt: str, threads: int | None):
    spec = genprof.make_spec("llm", size=size, batch=batch, tokens=tokens, optimizations=[opt])
    if threads:
        torch.set_num_threads(threads)
    return genprof.build(spec)


def bench_prepack(a, log) -> list[str]:
    opts = {"padded": f"padded:prompts=mmlu,seed={a.seed}", "prepack": f"prepack:prompts=mmlu,seed={a.seed}"}
    builts = {k: build(a.size, a.batch, 1, v, a.threads) for k, v in opts.items()}
    res = side_by_side(builts, a.repeats)
    pad, pre = res["padded"], res["prepack"]
    t_pad, t_pre = med(pad, "prefill_s"), med(pre, "prefill_s")
    real, padded = pad[0]["real_prefill_tokens"], pad[0]["computed_prefill_tokens"]
    packed = pre[0]["computed_prefill_tokens"]
    speedup, ideal = t_pad / t_pre, padded / real
    mem_pad = med([r["peak_memory"] for r in pad], "peak_rss_growth_bytes") / 2**20
    mem_pre = med([r["peak_memory"] for r in pre], "peak_rss_growth_bytes") / 2**20
    log(f"prepack: padded {t_pad:.3f}s packed {t_pre:.3f}s speedup {speedup:.2f}x ideal {ideal:.2f}x "
        f"({speedup / ideal:.0%})")
    lens = pad[0]["prompt_lengths"]
    return [
        f"### Prepacking vs right-padded batch (`mmlu` prompts, batch {a.batch}, size `{a.size}`)",
        "",
        f"Prompt lengths: mean {statistics.mean(lens):.0f}, min {min(lens)}, max {max(lens)} tokens. "
        f"Rows: {pad[0]['rows']} padded, {pre[0]['rows']} packed (bin = longest prompt).",
        "",
        "| | padded | prepacked |",
        "|---|---|---|",
        f"| real prompt tokens | {real} | {real} |",
        f"| computed tokens | {padded} | {packed} |",
        f"| padding waste | {pad[0]['padding_waste']:.1%} | {pre[0]['padding_waste']:.1%} |",
        f"| prefill time (median of {a.repeats}) | {t_pad:.3f} s | {t_pre:.3f} s |",
        f"| time to first token (median request) | {med(pad, 'ttft_median_s'):.3f} s | "
        f"{med(pre, 'ttft_median_s'):.3f} s |",
        f"| peak memory (RSS growth, whole run) | {mem_pad:.0f} MiB | {mem_pre:.0f} MiB |",
        f"| KV cache | {pad[0]['kv_cache_bytes'] / 2**20:.0f} MiB | {pre[0]['kv_cache_bytes'] / 2**20:.0f} MiB |",
        "",
        f"**Speedup {speedup:.2f}x; ideal bound (padded / real tokens) {ideal:.2f}x; "
        f"measured = {speedup / ideal:.0%} of the bound** (bound with the packed rows' own padding: "
        f"{padded / packed:.2f}x). Published (1.3 B Llama, MMLU, batch 64, A6000): 0.44 s vs 2.30 s "
        f"(about 5.2x), peak memory 4.6 GB vs 34.6 GB; the paper: up to 6x faster time to first token.",
        "",
    ]


def bench_chunked(a, log) -> list[str]:
    tmp = Path(tempfile.mkdtemp()) / "long.txt"
    tmp.write_text(f"{a.long_prompt}\n")
    base = f"prompts={tmp},n=1"
    builts = {"unchunked": build(a.size, 1, 1, f"padded:{base}", a.threads)}
    for c in a.chunks:
        builts[f"chunk {c}"] = build(a.size, 1, 1, f"chunked-prefill:chunk={c},{base}", a.threads)
        builts[f"fixed {c}"] = build(a.size, 1, 1, f"fixed-chunk:chunk={c},{base}", a.threads)
    res = side_by_side(builts, a.repeats)
    t0 = med(res["unchunked"], "prefill_s")
    lines = [f"### Chunked prefill overhead (one prompt of {a.long_prompt} tokens, size `{a.size}`)", "",
             f"Unchunked prefill: {t0:.3f} s (median of {a.repeats}).", "",
             "| chunk | chunks | chunked prefill | overhead | fixed-chunk prefill | overhead | "
             "fixed shape: padded tokens |",
             "|---|---|---|---|---|---|---|"]
    for c in a.chunks:
        tv, tf = med(res[f"chunk {c}"], "prefill_s"), med(res[f"fixed {c}"], "prefill_s")
        f0 = res[f"fixed {c}"][0]
        lines.append(f"| {c} | {res[f'chunk {c}'][0]['engine_steps'] - f0['decode_tokens']} | {tv:.3f} s | "
                     f"{tv / t0 - 1:+.1%} | {tf:.3f} s | {tf / t0 - 1:+.1%} | "
                     f"{f0['padded_tokens']} ({f0['padding_cost']:.1%}) |")
        log(f"chunk {c}: {tv / t0 - 1:+.1%} fixed {tf / t0 - 1:+.1%}")
    lines += ["", "Published: SARATHI uses chunks of 128-512 (512 by default in the serving system); "
              "mllm-NPU's fixed-shape chunks: over 1,000 prefill tokens/s for a 1.8 B model on a phone NPU, "
              "22.4x faster prefill on average (an NPU effect: one static graph; not reproducible on a CPU).", ""]
    return lines


def bench_sarathi(a, log) -> list[str]:
    base = f"chunk={a.sarathi_chunk},batch={a.sarathi_batch},out={a.out},n={a.stream},prompts=mmlu,seed={a.seed}"
    builts = {"decode-only": build(a.size, 1, 1, f"sarathi:{base},mode=decode-only", a.threads),
              "hybrid": build(a.size, 1, 1, f"sarathi:{base},mode=hybrid", a.threads)}
    res = side_by_side(builts, a.repeats)
    d, h = res["decode-only"], res["hybrid"]
    rows = [("decode tokens/s (steps carrying decodes)", "decode_tokens_per_s", "{:.1f}"),
            ("end-to-end tokens/s (prompt + output)", "end_to_end_tokens_per_s", "{:.1f}"),
            ("time to first token, median", "ttft_median_s", "{:.3f} s"),
            ("time to first token, max", "ttft_max_s", "{:.3f} s"),
            ("time between tokens, median", "tbt_median_s", "{:.4f} s"),
            ("time between tokens, p99", "tbt_p99_s", "{:.4f} s"),
            ("total time", "total_s", "{:.2f} s"), ("engine steps", "engine_steps", "{:.0f}")]
    lines = [f"### Decode-maximal batching (SARATHI) vs decode-only steps (size `{a.size}`)", "",
             f"A stream of {a.stream} requests (`mmlu` prompts, mean {statistics.mean(d[0]['prompt_lengths']):.0f} "
             f"tokens; {a.out} output tokens each), at most {a.sarathi_batch} in flight, chunk {a.sarathi_chunk}; "
             f"median of {a.repeats}.", "",
             "| | decode-only steps | hybrid (SARATHI) | ratio |", "|---|---|---|---|"]
    for label, key, fmt in rows:
        x, y = med(d, key), med(h, key)
        lines.append(f"| {label} | {fmt.format(x)} | {fmt.format(y)} | {y / x if x else float('nan'):.2f}x |")
    if "decode_tokens_per_s_marginal" in h[0]:
        m = med(h, "decode_tokens_per_s_marginal")
        x = med(d, "decode_tokens_per_s")
        lines.append(f"| decode tokens/s, marginal (hybrid step minus a chunk alone) | {x:.1f} | {m:.1f} | "
                     f"{m / x:.2f}x |")
        log(f"sarathi decode tok/s marginal ratio {m / x:.2f}x")
    log(f"sarathi decode tok/s ratio {med(h, 'decode_tokens_per_s') / med(d, 'decode_tokens_per_s'):.2f}x "
        f"e2e {med(h, 'end_to_end_tokens_per_s') / med(d, 'end_to_end_tokens_per_s'):.2f}x")
    lines += ["", "Published: up to 10x decode throughput and 1.33x end-to-end (LLaMA-13B, A6000); 4.25x decode "
              "and 1.25x end-to-end (LLaMA-33B, A100). On a GPU a decode-only step is memory-bound and the "
              "decodes ride almost free on a compute-bound chunk; on a CPU both are compute-bound, so the "
              "gain is expected to be small.", ""]
    return lines


def conditions(a) -> list[str]:
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    return ["## Conditions", "",
            f"- machine: {cpu}, {os.cpu_count()} CPUs visible, torch threads {torch.get_num_threads()} "
            f"(shared machine: other jobs may run)",
            f"- versions: Python {platform.python_version()}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}, genprof {getattr(genprof, '__version__', '?')}",
            f"- model: `llm` size `{a.size}` (random weights), float32, CPU, attention `sdpa`",
            f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
            f"- command: `python {' '.join(sys.argv)}`", ""]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="small")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--long-prompt", type=int, default=1800)
    p.add_argument("--chunks", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    p.add_argument("--stream", type=int, default=16)
    p.add_argument("--out", type=int, default=32)
    p.add_argument("--sarathi-chunk", type=int, default=256)
    p.add_argument("--sarathi-batch", type=int, default=8)
    p.add_argument("--only", nargs="+", choices=["prepack", "chunked", "sarathi"],
                   default=["prepack", "chunked", "sarathi"])
    p.add_argument("--doc", default="docs/llm-schedules.md")
    a = p.parse_args(argv)
    genprof.api._quiet_libraries()

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    lines = ["# LLM prefill schedules: measured against their baselines", "",
             "Generated by `scripts/bench_llm_schedules.py` (each schedule and its baseline side by side in one "
             "process, alternating, medians). Schedules: `--opt padded | prepack | chunked-prefill | "
             "fixed-chunk | sarathi` on the `llm` workload (genprof/optimizations/: padded, prepack, chunked_prefill, fixed_chunk, sarathi); prompt lengths "
             "from genprof/engine/prompts.py.", "", "## Results", ""]
    sections = {"prepack": bench_prepack, "chunked": bench_chunked, "sarathi": bench_sarathi}
    for name in a.only:
        log(f"{name} ...")
        lines += sections[name](a, log)
    lines += conditions(a)
    doc = Path(a.doc)
    old = doc.read_text() if doc.exists() else ""
    notes = old[old.index("## Notes"):] if "## Notes" in old else ""  # written by hand: kept as it is
    doc.write_text("\n".join(lines) + ("\n" + notes if notes else ""))
    log(f"wrote {a.doc}")


if __name__ == "__main__":
    main()
