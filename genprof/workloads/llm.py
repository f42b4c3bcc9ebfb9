"""LLM inference (Llama-style decoder): prefill of a prompt batch, then decode.

Phases: `prefill` (the whole prompt batch in one forward, producing the first
token: time to first token) and `decode` (one forward per new token against
the KV cache, each a step of its own: time per output token). Greedy sampling.
`paper` is the Llama-2-7B configuration. Random weights from a config, or a
local directory with a transformers checkpoint (config.json + safetensors).
The decoder runs on the decoder engine (genprof.engine): its default batch
schedule prefills the prompt batch in one forward and decodes it together;
optimizations configure the engine (a prefill schedule over ragged prompts,
LazyLLM token pruning) and never replace this inference.
Prompts: random token ids of `prompt_len` (`task=random`, the default), or
`--set task=retrieval` for prompts of the synthetic retrieval task
(genprof.workloads.retrieval, `pairs` key/value pairs, prompt 2*pairs+2 tokens;
its answers go to `Built.inputs` for quality measures), meant for the model
trained on it: `--weights genprof/assets/retrieval-llama`.
Not here: the engine (genprof.engine), prefill schedules such as prepacking or chunking (optimizations).
"""

from __future__ import annotations

from typing import Any

import torch

from genprof.engine import DecoderEngine, Prompt
from genprof.errors import GenprofError
from genprof.spec import RunSpec
from genprof.workloads import retrieval
from genprof.workloads.base import (Built, Workload, count_parameters, make_parts, require_weights_dir,
                                    weights_config_value)
from genprof.workloads.params import LLAMA_POSITIONS, Bound
from genprof.workloads.registry import register

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(config=dict(vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=4),
                 prompt_len=32, tokens=8, task="random", pairs=retrieval.N_PAIRS),
    "small": dict(config=dict(vocab_size=8192, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                              num_attention_heads=8, num_key_value_heads=8),
                  prompt_len=256, tokens=32, task="random", pairs=retrieval.N_PAIRS),
    "paper": dict(config=dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                              num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32),
                  prompt_len=512, tokens=128, task="random", pairs=retrieval.N_PAIRS),  # Llama-2-7B
}


def build_model(p: dict[str, Any], attn_implementation: str = "sdpa") -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(max_position_embeddings=4096, **p["config"])
    config._attn_implementation = attn_implementation
    return LlamaForCausalLM(config)


def load_model(path: str, dtype: torch.dtype, attn_implementation: str = "sdpa") -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    require_weights_dir(path, "config.json")
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation)


TASKS = ("random", "retrieval")


@register
class LLM(Workload):
    name = "llm"
    kind = "llm"
    stand_in = "Llama-2 architecture (transformers LlamaForCausalLM)"
    phases = ("prefill", "decode")
    presets = PRESETS
    counted_by = "tokens"
    count_meaning = "decoded tokens"
    bounds = {"task": Bound(choices=TASKS), "pairs": Bound(le=retrieval.KEYS, why="keys of the retrieval task"),
              "prompt_len": Bound(le=LLAMA_POSITIONS), "tokens": Bound(le=LLAMA_POSITIONS)}

    def check(self, spec: RunSpec) -> None:
        super().check(spec)
        p = self.config(spec)
        prompt = 2 * p["pairs"] + 2 if p["task"] == "retrieval" else p["prompt_len"]
        if not spec.weights and prompt + (spec.tokens or p["tokens"]) > LLAMA_POSITIONS:
            raise GenprofError(f"a prompt of {prompt} tokens plus {spec.tokens or p['tokens']} decoded is more "
                               f"than the model's {LLAMA_POSITIONS} positions; shorten --set prompt_len or --tokens")

    def decoder_layers(self, spec: RunSpec) -> int:
        return weights_config_value(spec.weights, "num_hidden_layers") or \
            int(self.config(spec)["config"]["num_hidden_layers"])

    def build(self, spec: RunSpec) -> Built:
        p = self.config(spec)
        device = torch.device(spec.device)
        model = make_parts(spec, lambda: {"model": build_model(p)},
                           lambda path, dtype: {"model": load_model(path, dtype)})["model"]
        tokens = spec.tokens or p["tokens"]
        inputs: dict[str, Any] = {}
        if p["task"] == "retrieval":
            if model.config.vocab_size < retrieval.VOCAB:
                raise GenprofError(f"task=retrieval needs a vocabulary of at least {retrieval.VOCAB} tokens; "
                                   f"the model has {model.config.vocab_size}")
            prompt, answers = retrieval.make_batch(spec.batch, p["pairs"], spec.seed)
            prompt = prompt.to(device)
            inputs["answers"] = answers
        else:
            gen = torch.Generator().manual_seed(spec.seed)
            prompt = torch.randint(0, model.config.vocab_size, (spec.batch, p["prompt_len"]), generator=gen).to(device)
        inputs["prompt"] = prompt
        engine = DecoderEngine(model, prompt=lambda phases: Prompt([prompt], tokens))
        info = {"parameters": count_parameters({"model": model}), "prompt_len": int(prompt.shape[1]),
                "task": p["task"],
                "decode_tokens": tokens, "batch": spec.batch,
                "attn_implementation": getattr(model.config, "_attn_implementation", "")}
        return Built(parts={"model": model}, engine=engine, info=info, inputs=inputs)

    @staticmethod
    def derived_metrics(phase_stats: dict[str, dict[str, float]], info: dict[str, Any]) -> dict[str, float]:
        """Time to first token and time per output token from the phase medians."""
        out: dict[str, float] = {}
        if "prefill" in phase_stats:
            out["ttft_s"] = phase_stats["prefill"]["median_s"]
        if "decode" in phase_stats and info.get("decode_tokens"):
            tpot = phase_stats["decode"]["median_s"] / info["decode_tokens"]
            out["tpot_s"] = tpot
            out["decode_tokens_per_s"] = info["batch"] / tpot
        return out
