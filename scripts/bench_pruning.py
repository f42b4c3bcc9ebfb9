"""Token pruning benchmarks: speed against keep rate, and quality on a trained model.

    python scripts/bench_pruning.py --method lazyllm            # full run, writes docs/pruning.md
    python scripts/bench_pruning.py --method lazyllm --quick    # smoke test (tiny size, few prompts)
    python scripts/bench_pruning.py --method lazyllm-layers     # where pruning may start (under a minute)

`--method lazyllm|vision|lazyllm-layers|all`; one function per method
(`bench_lazyllm`, `bench_vision`, `bench_lazyllm_layers`), each returning its
section of docs/pruning.md, which is rewritten between that section's markers
only (other sections stay). `lazyllm-layers` (under a minute on a CPU): on the
trained retrieval model, retrieval accuracy and first-token KL when pruning
starts after the model's key lookup (the default layers) and before it.

LazyLLM (`--opt lazyllm` on `llm`, default schedule layers 0.25/0.5/0.75 of
depth, keep swept):
- time to first token: timing mode in one process with one torch thread, the
  prefill of the `small` size model (8 layers, hidden 512, prompt 256 tokens),
  unpruned transformers forward and the pruned engine alternating, median of
  `--repeats` (>= 5) runs each;
- counted prefill FLOPs: one traced run per setting, the op table's `flops`
  summed over the prefill phase (genprof's counting), next to the engine's own
  estimate;
- quality on the trained retrieval model (genprof/assets/retrieval-llama,
  `--set task=retrieval`): retrieval accuracy, teacher-forced next-token
  agreement and first-token KL divergence against the unpruned model.
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "pruning.md"
KEEPS = (1.0, 0.7, 0.5, 0.3, 0.2)
DEFAULT_KEEP = 0.5
PUBLISHED_LAZYLLM = ("LazyLLM (Fu et al., 2024): Llama 2 7B, multi-document QA: 2.34x faster prefill "
                     "(time to first token) at about the same accuracy")


# ----------------------------------------------------------------------------------------- LazyLLM

def _lazy_opt(keep: float) -> str:
    return f"lazyllm:keep={keep}"


def lazyllm_ttft(size: str, repeats: int) -> dict[str, Any]:
    """Median prefill time of the unpruned model and of each keep rate, alternating in one process."""
    from genprof.api import build
    from genprof.engine import Prompt
    from genprof.optimizations.lazyllm import LazyPolicy, parse_schedule
    from genprof.spec import RunSpec

    built = build(RunSpec("llm", size=size))
    model, prompt = built.parts["model"], built.inputs["prompt"]
    L = model.config.num_hidden_layers
    plain = built.engine.configure(prompt=lambda phases: Prompt([prompt], 0))  # prefill only
    engines = {keep: plain.with_policy(LazyPolicy(parse_schedule(None, str(keep), L), L)) for keep in KEEPS}

    def baseline() -> None:
        plain.run()

    def lazy(keep: float) -> None:
        engines[keep].run()

    runs: list[tuple[str, Any]] = [("unpruned", baseline)] + [(f"keep={k}", (lambda k=k: lazy(k))) for k in KEEPS]
    times: dict[str, list[float]] = {name: [] for name, _ in runs}
    with torch.inference_mode():
        for _, fn in runs:  # warm-up
            fn()
        for _ in range(repeats):
            for name, fn in runs:
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    med = {name: statistics.median(v) for name, v in times.items()}
    return {"median_s": med, "samples": times, "prompt_len": int(prompt.shape[1]),
            "layers": model.config.num_hidden_layers,
            "alive": {k: e.policies[0].info.get("alive_per_layer", []) for k, e in engines.items()}}


def lazyllm_flops(size: str) -> dict[str, Any]:
    """Counted prefill FLOPs (trace mode, genprof's op table) per setting, and the engine's estimate."""
    import genprof

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, opts in [("unpruned", ())] + [(f"keep={k}", (_lazy_opt(k),)) for k in KEEPS]:
            res = genprof.run("llm", size=size, mode="trace", tokens=1, repeats=1, warmup=0, threads=1,
                              out=tmp, optimizations=opts)
            if not res.ok:
                raise RuntimeError(res.meta.get("reason"))
            ops = res.ops
            out[name] = {"counted": float(ops.loc[ops["phase"] == "prefill", "flops"].sum()),
                         "estimate_fraction": res.meta["info"].get("lazyllm", {}).get("prefill_flops_fraction")}
    return out


def lazyllm_quality(n: int, tokens: int) -> dict[str, Any]:
    """Retrieval accuracy, next-token agreement and first-token KL of each keep rate on the trained model."""
    from genprof.api import build
    from genprof.spec import OptSpec, RunSpec
    from genprof.workloads import retrieval as R
    from genprof.phases import NullPhases

    out: dict[str, Any] = {}
    for keep in KEEPS:
        spec = RunSpec("llm", batch=n, tokens=tokens, seed=R.EVAL_SEED, weights=R.RETRIEVAL_WEIGHTS,
                       params=(("task", "retrieval"),), optimizations=(OptSpec.parse(_lazy_opt(keep)),))
        built = build(spec)
        with torch.inference_mode():
            output = built.run(NullPhases())
            q = built.measure_quality(output)
        q["alive_fraction_per_layer"] = built.info["lazyllm"]["alive_fraction_per_layer"]
        q["revived_tokens"] = built.info["lazyllm"]["revived_tokens"]
        q["layers"] = built.info["lazyllm"]["layers"]
        q["num_layers"] = built.info["lazyllm"]["num_layers"]
        out[f"keep={keep}"] = q
    return out


def _slashed(values: list[Any]) -> str:
    return "/".join(str(v) for v in values)


def bench_lazyllm(args: argparse.Namespace) -> str:
    from genprof.optimizations.lazyllm import DEFAULT_KEEP as SCHEDULE_KEEP
    from genprof.optimizations.lazyllm import DEFAULT_LAYERS, parse_schedule

    size = "tiny" if args.quick else "small"
    n = 40 if args.quick else 200
    tokens = 4  # decoded after the first token in the quality runs
    print(f"lazyllm: time to first token at {size} ({args.repeats} alternating runs) ...", flush=True)
    tt = lazyllm_ttft(size, args.repeats)
    print("lazyllm: counted prefill FLOPs ...", flush=True)
    fl = lazyllm_flops(size)
    from genprof.workloads import retrieval as R

    if Path(R.RETRIEVAL_WEIGHTS, "model.safetensors").is_file():
        print(f"lazyllm: retrieval quality ({n} prompts) ...", flush=True)
        ql = lazyllm_quality(n, tokens=tokens)
    else:  # quality needs the trained model: python scripts/train_retrieval.py
        print("lazyllm: no trained retrieval model, quality not measured", flush=True)
        nan = float("nan")
        ql = {f"keep={k}": {"accuracy": nan, "accuracy_unpruned": nan,
                            "next_token_agreement": nan, "first_token_kl": nan, "layers": [], "num_layers": None}
              for k in KEEPS}
    base_t, base_f = tt["median_s"]["unpruned"], fl["unpruned"]["counted"]
    acc0 = ql["keep=1.0"]["accuracy_unpruned"]
    rows = []
    for k in KEEPS:
        name = f"keep={k}"
        q, t, f = ql[name], tt["median_s"][name], fl[name]
        alive = "/".join(str(a) for a in tt["alive"][k])
        rows.append(f"| {k}{' (default)' if k == DEFAULT_KEEP else ''} | {alive} | {t * 1e3:.1f} | "
                    f"{base_t / t:.2f}x | {f['counted'] / base_f:.3f} | {f['estimate_fraction']:.3f} | "
                    f"{q['accuracy'] * 100:.1f} | {(q['accuracy'] - acc0) * 100:+.1f} | "
                    f"{q['next_token_agreement']:.3f} | {q['first_token_kl']:.4f} |")
        print(rows[-1], flush=True)
    d = tt["median_s"]
    default_speedup = base_t / d[f"keep={DEFAULT_KEEP}"]
    default_drop = (ql[f"keep={DEFAULT_KEEP}"]["accuracy"] - acc0) * 100
    env = (f"torch {torch.__version__}, {platform.processor() or platform.machine()}, one torch thread, "
           f"{time.strftime('%Y-%m-%d')}")
    cmd = "python scripts/bench_pruning.py --method lazyllm" + (" --quick" if args.quick else "")
    default_q = ql[f"keep={DEFAULT_KEEP}"]
    speed_schedule = parse_schedule(None, None, tt["layers"])
    speed_layers = _slashed([l for l, _ in speed_schedule])
    alive_pct, left = [], 1.0
    for _, k in speed_schedule:
        left *= k
        alive_pct.append(f"{left * 100:g}%")
    if default_q["num_layers"]:
        retrieval_layers = (f", {_slashed(default_q['layers'])} of the retrieval model's "
                            f"{default_q['num_layers']}")
        retrieval_model = f"{default_q['num_layers']}-layer retrieval model"
    else:
        retrieval_layers, retrieval_model = "", "retrieval model"
    return f"""## LazyLLM (`--opt lazyllm`, `llm` workload)

{"**Smoke run (`--quick`): tiny size, few prompts; not a result.**" if args.quick else ""}

Generated by `{cmd}` ({env}).

What it does: at pruning layers (default {DEFAULT_LAYERS} of the depth: {speed_layers} of
the `{size}` model's {tt['layers']} layers{retrieval_layers}) the prompt
tokens are ranked by the attention the last token gives them at the layer
before (mean over heads), and a fraction `keep` of the alive ones continues
(default {SCHEDULE_KEEP} each: {", ".join(alive_pct)} of the prompt). Pruned tokens can come back
during decoding from the auxiliary cache (see genprof/optimizations/lazyllm.py).

Speed: `{size}` size (prompt {tt['prompt_len']} tokens, {tt['layers']} layers), prefill only,
median of {args.repeats} alternating runs; unpruned = the transformers forward,
{d['unpruned'] * 1e3:.1f} ms; engine with keep=1.0 (no pruning, its own overhead):
{base_t / d['keep=1.0']:.2f}x. FLOPs: counted by genprof (trace mode, op table,
prefill phase) relative to the unpruned run's {base_f / 1e9:.2f} GFLOP, and the
engine's own estimate. Quality: the trained retrieval model
(genprof/assets/retrieval-llama, {n} prompts of {R.N_PAIRS} key/value pairs, {2 * R.N_PAIRS + 2} tokens;
unpruned accuracy {acc0 * 100:.1f}%), greedy; agreement = teacher-forced
next-token agreement with the unpruned model over the first token and {tokens}
decoded ones; KL = KL(unpruned || pruned) of the first-token distribution.

| keep per layer | prompt tokens alive per layer | TTFT ms | speed-up | prefill FLOPs (counted) | FLOPs (estimate) | retrieval acc % | vs unpruned (points) | agreement | KL |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Default schedule: **{default_speedup:.2f}x** faster time to first token at
{default_drop:+.1f} points of retrieval accuracy.

| | setting | prefill speed-up | accuracy |
|---|---|---|---|
| published | {PUBLISHED_LAZYLLM} | 2.34x | about the same |
| here | `{size}` Llama stand-in on this CPU (speed), {retrieval_model} (accuracy), default schedule | {default_speedup:.2f}x | {default_drop:+.1f} points |

The published figure is for a 7B model on long multi-document prompts on a
GPU, where prefill is compute-bound and attention grows with the square of
the prompt; here the model is small and the prompt short, so fixed per-layer
costs (Python, the kept layers before the first pruning layer, the scoring)
weigh more.
"""


# ----------------------------------------------------------------------------------------- LazyLLM: where to start

LOW_KEEP = 0.1  # the default layers with little left alive
EARLY_OPT = "lazyllm:layers=1,keep=0.5"  # scores from layer 0, before the lookup


def lazyllm_layers_quality() -> dict[str, dict[str, Any]]:
    """Retrieval accuracy and first-token KL on the trained retrieval model (the fixed eval set, first token
    only) for the default schedule, the default layers with keep=LOW_KEEP, and pruning at layer 1."""
    from genprof.api import build
    from genprof.spec import OptSpec, RunSpec
    from genprof.workloads import retrieval as R
    from genprof.phases import NullPhases

    out: dict[str, dict[str, Any]] = {}
    for name, opt in [("default", "lazyllm"), ("low_keep", f"lazyllm:keep={LOW_KEEP}"), ("early", EARLY_OPT)]:
        spec = RunSpec("llm", batch=R.EVAL_N, tokens=1, seed=R.EVAL_SEED, weights=R.RETRIEVAL_WEIGHTS,
                       params=(("task", "retrieval"),), optimizations=(OptSpec.parse(opt),))
        built = build(spec)
        with torch.inference_mode():
            q = built.measure_quality(built.run(NullPhases()))
        info = built.info["lazyllm"]
        out[name] = {"accuracy": q["accuracy"], "accuracy_unpruned": q["accuracy_unpruned"],
                     "first_token_kl": q["first_token_kl"], "layers": info["layers"],
                     "num_layers": info["num_layers"],
                     "alive_fraction_end": info["alive_per_layer"][-1] / info["prompt_tokens"]}
    return out


def bench_lazyllm_layers(args: argparse.Namespace) -> str | None:
    """Which layer pruning may start at, on the trained retrieval model: its section text."""
    from genprof.optimizations.lazyllm import DEFAULT_KEEP as SCHEDULE_KEEP
    from genprof.optimizations.lazyllm import DEFAULT_LAYERS
    from genprof.workloads import retrieval as R

    if not Path(R.RETRIEVAL_WEIGHTS, "model.safetensors").is_file():
        print("lazyllm-layers: no trained retrieval model (python scripts/train_retrieval.py); skipped", flush=True)
        return None
    print(f"lazyllm-layers: retrieval accuracy by pruning layer ({R.EVAL_N} prompts) ...", flush=True)
    q = lazyllm_layers_quality()
    d, low, early = q["default"], q["low_keep"], q["early"]

    def pct(a: float) -> str:
        return f"{a * 100:.0f}%"

    def scored_at(layers: list[int]) -> str:
        return ("layer " if len(layers) == 1 else "layers ") + _slashed([l - 1 for l in layers])

    rows = [
        f"| none | | {pct(d['accuracy_unpruned'])} | 0 |",
        f"| {_slashed(d['layers'])} (default, {DEFAULT_LAYERS} of {d['num_layers']}) | {scored_at(d['layers'])} | "
        f"{pct(d['accuracy'])} | {d['first_token_kl']:.4f} |",
        f"| {_slashed(low['layers'])} with keep {LOW_KEEP} ({low['alive_fraction_end'] * 100:.1f}% of the prompt "
        f"alive at the end) | {scored_at(low['layers'])} | {pct(low['accuracy'])} | {low['first_token_kl']:.4f} |",
        f"| {_slashed(early['layers'])} | {scored_at(early['layers'])} | {pct(early['accuracy'])} | "
        f"{early['first_token_kl']:.4f} |",
    ]
    for r in rows:
        print(r, flush=True)
    env = f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}"
    return f"""## Where pruning may start

Generated by `python scripts/bench_pruning.py --method lazyllm-layers` ({env}).

The retrieval model looks the key up in its first two layers (one layer copies
each key into its value's position, the next matches the queried key; the
training script grows the model to {d['num_layers']} layers only after that circuit is
learned). Scores taken after the lookup know which tokens matter; scores taken
before it do not. On the {R.EVAL_N} evaluation prompts (first token), with keep {SCHEDULE_KEEP}
unless stated:

| pruning layers | scored at | retrieval accuracy | first-token KL |
|---|---|---:|---:|
{chr(10).join(rows)}

`tests/test_lazyllm.py` checks both sides (the default within 2 points of the
unpruned model, pruning at layer 1 losing between a quarter and three quarters
of the answers), so the quality numbers above cannot pass by construction. On a
real model the same question (from which layer are the scores informative?)
decides the schedule; `genprof run llm --weights DIR --opt
lazyllm:layers=...,keep=...` reports agreement and KL against the unpruned
model for any schedule.
"""


# ----------------------------------------------------------------------------------------- vision

def bench_vision(args: argparse.Namespace) -> str | None:
    """Vision-token pruning on the llava workload (scripts/bench_vision_pruning.py): its section text."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_vision_pruning as bv

    a = argparse.Namespace(keeps=list(bv.KEEPS), repeats=args.repeats, samples=64 if args.quick else 1024,
                           tokens=8 if args.quick else 128, quick=args.quick)
    rows = bv.run_vision(a)
    text = bv.section(rows, a)
    return ("**Smoke run (`--quick`): not a result.**\n\n" + text) if args.quick else text


# ----------------------------------------------------------------------------------------- the page

HEADER = """# Token pruning

Lossy optimizations that drop tokens report their speed next to their quality
against the unpruned model. Each section is written by
`scripts/bench_pruning.py --method NAME` between its markers.
"""


def write_section(name: str, text: str) -> None:
    DOC.parent.mkdir(parents=True, exist_ok=True)
    page = DOC.read_text() if DOC.exists() else HEADER
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    if begin in page and end in page:
        page = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, page, flags=re.S)
    else:
        page = page.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(page)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", choices=("lazyllm", "vision", "lazyllm-layers", "all"), default="all")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, few prompts")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per setting (>= 5)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/pruning.md as it is")
    args = ap.parse_args(argv)
    if args.repeats < 5:
        ap.error("--repeats must be at least 5")
    torch.set_num_threads(1)
    from genprof.api import _quiet_libraries

    _quiet_libraries()
    methods = {"lazyllm": bench_lazyllm, "vision": bench_vision, "lazyllm-layers": bench_lazyllm_layers}
    for name, fn in methods.items():
        if args.method in (name, "all"):
            text = fn(args)
            if text and not args.no_write:
                write_section(name, text)
                print(f"wrote the {name} section of {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
