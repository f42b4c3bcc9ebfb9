"""LazyLLM dynamic token pruning on the `llm` workload: `--opt lazyllm[:layers=...,keep=...]`.

At chosen layers the prompt tokens are scored by the attention the last token
gives them (averaged over heads) and only the best continue to the later
layers; pruning is progressive over depth. During decoding a pruned token can
come back: an auxiliary cache holds the hidden state of every token at the
layer where it was dropped, so it resumes there and no (token, layer) pair is
ever computed twice.

Options (values inside an option separated by `/`, since commas separate options):
- `layers=2/4/6`: pruning layers. Integers are layer indices (1 .. L-1); numbers
  with a point are fractions of the depth (`0.25/0.5/0.75`), rounded half up
  to a layer index, clamped to [1, L-1]; two fractions landing on one layer
  merge (their keeps multiply). Default `0.25/0.5/0.75`: on 8 layers 2/4/6, on
  32 layers 8/16/24, on 6 layers 2/3/5.
- `keep=0.5` or `keep=0.5/0.6/0.4`: at each pruning layer, the fraction of the
  prompt tokens alive before that layer that stays alive, one value for every
  layer or one per layer. Default 0.5: 50%, 25% and 12.5% of the prompt alive.

The rule, precisely. "Pruning at layer l" means layer l and the layers after it
run on fewer tokens; the scores come from the attention of layer l-1, where
every token alive there was computed.
- Prefill: at layer l-1 the last prompt token's attention over the alive
  tokens (the engine's last-query scores: q_last K^T / sqrt(d), softmax, mean
  over heads, GQA heads repeated) ranks them; the attention itself stays one
  fused call. Before layer l the top ceil(keep * alive) survive (the last
  prompt token always), in their original order and with their original
  positions (RoPE); the hidden states (the input of layer l) of the others go
  to the auxiliary cache of layer l. Each layer's KV cache holds exactly the
  tokens computed there.
- Decode step (new token at position t): every layer computes the new token.
  At pruning layer l its attention at layer l-1 ranks the prompt tokens of
  layer l-1's cache; the top k_l (the number of prompt tokens layer l computed
  at prefill) are selected. Selected tokens that layer l has not computed are
  revived from layer l's auxiliary cache (or carried on from an earlier
  revival in this step) and computed at layer l and onward, next to the new
  token, until the next pruning layer selects again; those not selected there
  are parked in that layer's auxiliary cache with their hidden state. A
  revived token at position i attends to the entries at positions <= i (the
  caches track positions); its keys/values join the cache. Nothing is removed
  from a cache, so layer l's cache is always a subset of layer l-1's and the
  auxiliary cache of l is exactly their difference.

How it runs: a token policy on the decoder engine (genprof.engine), which
runs each sequence as its own segment (ragged token counts) through the
model's modules, so module scopes and families attribute time as usual and
attention backends compose with it. With keep=1.0 everywhere the logits equal
the unpruned model's. It needs the whole prompt in one prefill, so it does not
combine with a prefill schedule.

Reported in run.json: `info.lazyllm` (schedule, prompt tokens alive per layer
at prefill, prefill FLOPs fraction estimate, revived tokens during decode) and
`summary.quality` (genprof.optimizations.quality; with `--set task=retrieval`
the retrieval accuracy of both models).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch.autograd.profiler import record_function

from genprof.engine import TokenPolicy
from genprof.errors import GenprofError
from genprof.optimizations import quality
from genprof.optimizations.base import Optimization, register
from genprof.optimizations.sparsity import decoder_prefill_flops, kept_count

DEFAULT_LAYERS = "0.25/0.5/0.75"
DEFAULT_KEEP = "0.5"


def parse_schedule(layers: str | None, keep: str | None, n_layers: int) -> list[tuple[int, float]]:
    """[(layer, keep)] sorted by layer, from the option strings, for a model of `n_layers` layers."""
    layers = DEFAULT_LAYERS if layers is None else layers
    keep = DEFAULT_KEEP if keep is None else keep
    if n_layers < 2:
        raise GenprofError("lazyllm needs a model with at least 2 layers (layer 0 scores, later layers prune)")
    idx: list[int] = []
    for item in layers.split("/"):
        item = item.strip()
        try:
            if "." in item:
                f = float(item)
                if not 0 < f < 1:
                    raise ValueError
                i = max(1, min(n_layers - 1, math.floor(f * n_layers + 0.5)))
            else:
                i = int(item)
                if not 1 <= i <= n_layers - 1:
                    raise GenprofError(f"lazyllm:layers {i} is out of range; the model has {n_layers} layers, "
                                       f"prune at 1..{n_layers - 1} (layer 0 gives the first scores)")
        except ValueError:
            raise GenprofError(f"lazyllm:layers {item!r} is neither a layer index nor a fraction of depth in "
                               f"(0, 1); e.g. layers=2/4/6 or layers=0.25/0.5/0.75") from None
        idx.append(i)
    keeps: list[float] = []
    for item in keep.split("/"):
        try:
            k = float(item)
        except ValueError:
            raise GenprofError(f"lazyllm:keep {item!r} is not a number; e.g. keep=0.5 or keep=0.6/0.5/0.4") from None
        if not 0 < k <= 1:
            raise GenprofError(f"lazyllm:keep {k} must be in (0, 1]")
        keeps.append(k)
    if len(keeps) == 1:
        keeps *= len(idx)
    if len(keeps) != len(idx):
        raise GenprofError(f"lazyllm: {len(keeps)} keep values for {len(idx)} layers; give one keep, or one per "
                           f"layer separated by '/'")
    merged: dict[int, float] = {}
    for i, k in zip(idx, keeps):
        if i in merged and "." not in layers:
            raise GenprofError(f"lazyllm:layers names layer {i} twice")
        merged[i] = merged.get(i, 1.0) * k
    return sorted(merged.items())


@dataclass
class LazyState:
    """What LazyLLM knows of one sequence (kept on its cache): per pruning layer the auxiliary cache."""

    n_prompt: int
    kept: dict[int, int] = field(default_factory=dict)  # prompt tokens layer l computed at prefill
    aux_pos: dict[int, torch.Tensor] = field(default_factory=dict)
    aux_hidden: dict[int, torch.Tensor] = field(default_factory=dict)  # (m, hidden): input of that layer
    revived: dict[int, int] = field(default_factory=dict)  # per pruning layer: tokens taken from its aux cache


class LazyPolicy(TokenPolicy):
    name = "lazyllm"
    per_sequence = True
    track_positions = True

    def __init__(self, schedule: list[tuple[int, float]], n_layers: int):
        self.schedule = dict(schedule)
        self.log: list[tuple[int, list[int]]] | None = None  # (layer, positions computed there) when set
        # what run.json's info.lazyllm holds: the schedule now, what the last generation pruned after it
        self.info: dict[str, Any] = {"layers": sorted(self.schedule),
                                     "keep": [self.schedule[layer] for layer in sorted(self.schedule)],
                                     "num_layers": n_layers}

    def begin_step(self, engine: Any, step: Any) -> None:
        step.score_layers.update(layer - 1 for layer in self.schedule)
        if step.phase == "prefill":
            for g in step.groups:
                g.cache.state[self.name] = LazyState(n_prompt=g.n)

    def before_layer(self, engine: Any, layer: int, step: Any) -> None:
        prefill = step.phase == "prefill"
        if layer in self.schedule:
            with record_function("lazyllm::select"):
                step.set_tokens([(self._prefill if prefill else self._decode)(layer, step, g) for g in step.groups])
        for g in step.groups:
            if prefill:
                g.cache.state[self.name].kept[layer] = g.n
            if self.log is not None:
                self.log.append((layer, g.pos[0].tolist()))

    def _prefill(self, layer: int, step: Any, g: Any) -> tuple[torch.Tensor, torch.Tensor]:
        st: LazyState = g.cache.state[self.name]
        h, pos = step.tokens(g)
        s = g.scores[layer - 1][0].clone()
        s[-1] = float("inf")  # the last prompt token always stays
        keep = torch.zeros(g.n, dtype=torch.bool, device=h.device)
        keep[s.topk(kept_count(self.schedule[layer], g.n)).indices] = True
        st.aux_pos[layer], st.aux_hidden[layer] = pos[0, ~keep], h[0, ~keep]
        st.revived[layer] = 0
        return h[:, keep], pos[:, keep]

    def _decode(self, layer: int, step: Any, g: Any) -> tuple[torch.Tensor, torch.Tensor]:
        st: LazyState = g.cache.state[self.name]
        h, pos = step.tokens(g)
        fly_h, fly_pos = h[0, :-1], pos[0, :-1]  # revived tokens carried in this step; the new token is last
        kpos = g.cache.pos[layer - 1][0]
        s = g.scores[layer - 1][0].masked_fill(kpos >= st.n_prompt, float("-inf"))
        k = min(st.kept[layer], int((kpos < st.n_prompt).sum()))
        sel = kpos[s.topk(k).indices]
        stay = torch.isin(fly_pos, sel)
        park_pos, park_h = fly_pos[~stay], fly_h[~stay]
        back = torch.isin(st.aux_pos[layer], sel)
        st.revived[layer] += int(back.sum())
        fly_pos = torch.cat([fly_pos[stay], st.aux_pos[layer][back]])
        fly_h = torch.cat([fly_h[stay], st.aux_hidden[layer][back]])
        st.aux_pos[layer] = torch.cat([st.aux_pos[layer][~back], park_pos])
        st.aux_hidden[layer] = torch.cat([st.aux_hidden[layer][~back], park_h])
        order = fly_pos.argsort()
        return torch.cat([fly_h[order], h[0, -1:]])[None], torch.cat([fly_pos[order], pos[0, -1:]])[None]

    def finish(self, engine: Any, gen: Any) -> None:
        """Record what the generation pruned into the stats dict the run's info holds."""
        states = [(c, c.state[self.name]) for c in gen.caches if self.name in c.state]
        L = engine.n_layers
        n = states[0][1].n_prompt if states else 0
        alive = [sum(st.kept[layer] for _, st in states) for layer in range(L)]
        first = [states[0][1].kept[layer] for layer in range(L)] if states else []
        est = decoder_prefill_flops(engine.config, first) if states else 0.0
        full = decoder_prefill_flops(engine.config, [n] * L) if states else 1.0
        self.info.update({
            "prompt_tokens": n * len(states), "alive_per_layer": alive,
            "alive_fraction_per_layer": [a / max(1, n * len(states)) for a in alive],
            "prefill_flops_fraction": est / full,
            "revived_per_layer": {str(layer): sum(st.revived.get(layer, 0) for _, st in states)
                                  for layer in sorted(self.schedule)},
            "revived_tokens": sum(sum(st.revived.values()) for _, st in states),
            "cache_tokens_per_layer_end": [sum(c.length(layer) for c, _ in states) for layer in range(L)],
        })


@register
class LazyLLM(Optimization):
    name = "lazyllm"
    applies_to = ("llm",)
    options = {"layers": None, "keep": None}
    exact = False
    changes = frozenset({"prompt-tokens"})
    keeps = frozenset({"schedule"})  # it prunes during a whole-prompt prefill

    def check(self, spec: Any, workload: Any) -> None:
        super().check(spec, workload)
        if spec.device == "meta":
            raise GenprofError("--opt lazyllm selects tokens from computed attention; it cannot run on --device meta")
        parse_schedule(self.option("layers"), self.option("keep"), workload.decoder_layers(spec))  # refused here

    def apply(self, built: Any) -> Any:
        engine = built.engine
        if engine is None:
            raise GenprofError("--opt lazyllm needs a workload that runs on the decoder engine")
        policy = LazyPolicy(parse_schedule(self.option("layers"), self.option("keep"), engine.n_layers),
                            engine.n_layers)
        return replace(built, engine=engine.with_policy(policy), info={**built.info, "lazyllm": policy.info},
                       quality=quality.measure)
