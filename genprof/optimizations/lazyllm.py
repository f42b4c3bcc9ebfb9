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
  prompt tokens alive before that layer that stays alive (the percentile of
  the scores), one value for every layer or one per layer. Default 0.5: the
  default schedule leaves 50%, 25% and 12.5% of the prompt alive.

The rule, precisely. "Pruning at layer l" means layer l and the layers after it
run on fewer tokens; the scores come from the attention of layer l-1, where
every token alive there was computed.
- Prefill: at layer l-1 the last prompt token's query is scored against the
  keys of the alive tokens on its own (q_last K^T / sqrt(d), softmax, mean over
  heads; key/value heads repeated for GQA), so the attention itself stays one
  fused `scaled_dot_product_attention` call. Before layer l the top
  ceil(keep * alive) tokens by score survive (the last prompt token always),
  in their original order and with their original positions (RoPE); the
  hidden states (the input of layer l) of the others go to the auxiliary cache
  of layer l. Each layer's KV cache holds exactly the tokens computed there.
- Decode step (new token at position t): every layer computes the new token.
  At pruning layer l its attention at layer l-1 ranks the prompt tokens of
  layer l-1's cache; the top k_l (k_l = the number of prompt tokens layer l
  computed at prefill) are selected. Selected tokens that layer l has not
  computed are revived: taken from layer l's auxiliary cache (or carried on
  from an earlier revival in this step) and computed at layer l and onward,
  next to the new token, until the next pruning layer selects again; those
  that are not selected there are parked in that layer's auxiliary cache with
  their hidden state. A revived token at position i attends to the keys of
  positions <= i in each layer's cache; its keys/values join the cache. Tokens
  already in a layer's cache are never recomputed, and nothing is removed from
  a cache, so layer l's cache is always a subset of layer l-1's and the
  auxiliary cache of l is exactly their difference.

How it runs: during the inference the model's `forward` is replaced by this
engine (restored after), so the workload's own prefill/decode loop, phases and
steps stay as they are. The engine calls the model's modules (embed_tokens,
each decoder layer and its self_attn, q/k/v/o_proj, norms, mlp, lm_head)
through their `__call__`, so module scopes and families attribute time as
usual; the scoring runs in `record_function("lazyllm::score")` inside the
attention module. Attention goes through the model's attention implementation
(sdpa: torch.nn.functional.scaled_dot_product_attention, which `--opt attn=...`
patches or restricts; eager: explicit matmuls), with a float causal mask built
from positions where a plain causal flag does not describe it. With keep=1.0
everywhere the logits equal the unpruned model's.

Reported in run.json: `info.lazyllm` (schedule, prompt tokens alive per layer
at prefill, prefill FLOPs fraction estimate, revived tokens during decode) and
`summary.quality` (first-token agreement and KL divergence against the
unpruned model, teacher-forced next-token agreement over the decoded tokens,
retrieval accuracy with `--set task=retrieval`).
Not here: the workload (genprof.workloads.llm), the retrieval task (genprof.workloads.retrieval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
from torch.autograd.profiler import record_function

from genprof.errors import GenprofError
from genprof.optimizations.base import Optimization, register
from genprof.optimizations.schedules import SCHEDULE_NAMES
from genprof.workloads import retrieval as R
from genprof.workloads.llava import kept_count

DEFAULT_LAYERS = "0.25/0.5/0.75"
DEFAULT_KEEP = "0.5"


# ----------------------------------------------------------------------------------------- schedule

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


# ----------------------------------------------------------------------------------------- engine

@dataclass
class SeqState:
    """The caches of one sequence: per layer K/V and positions held; per pruning layer the auxiliary cache."""

    n_prompt: int
    cos: torch.Tensor  # rotary tables of the prompt positions (n_prompt, d)
    sin: torch.Tensor
    keys: list[torch.Tensor | None]
    values: list[torch.Tensor | None]
    pos: list[torch.Tensor]  # positions each layer's cache holds, in cache order
    aux_pos: dict[int, torch.Tensor] = field(default_factory=dict)
    aux_hidden: dict[int, torch.Tensor] = field(default_factory=dict)  # (m, hidden): input of that layer
    kept: dict[int, int] = field(default_factory=dict)  # prompt tokens layer l computed at prefill
    length: int = 0  # tokens so far (prompt + decoded)
    revived: dict[int, int] = field(default_factory=dict)  # per pruning layer: tokens taken from its aux cache


def _call(module: torch.nn.Module, fn: Callable, *args: Any) -> Any:
    """Run `fn(*args)` as `module`'s forward, through module.__call__ (so forward hooks fire)."""
    module.forward = fn
    try:
        return module(*args)
    finally:
        del module.forward


class LazyEngine:
    """Prefill and decode of a transformers Llama with LazyLLM pruning (batch rows run one by one)."""

    def __init__(self, model: torch.nn.Module, schedule: list[tuple[int, float]]):
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
        from transformers.models.llama.modeling_llama import eager_attention_forward

        self.model = model
        self.inner = model.model
        self.layers = list(self.inner.layers)
        self.schedule = dict(schedule)
        impl = model.config._attn_implementation
        self.is_sdpa = impl == "sdpa"
        self.attention = ALL_ATTENTION_FUNCTIONS.get_interface(impl, eager_attention_forward)
        self.states: dict[int, list[SeqState]] = {}  # id(cache) -> one state per batch row
        self.log: list[tuple[int, list[int]]] | None = None  # (layer, positions computed there) when set
        self.first_logits: torch.Tensor | None = None
        self.prefill_alive: list[list[int]] = []  # per row, prompt tokens computed at each layer

    # -------------------------------------------------------------------------------- one layer

    def _layer(self, l: int, h: torch.Tensor, pos: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               st: SeqState, score: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Layer l on tokens `h` (1, n, hidden) at positions `pos`; their K/V join layer l's cache.
        Returns the new hidden states and, when `score`, the last query's attention over the cache's keys."""
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

        layer = self.layers[l]
        attn = layer.self_attn
        n = h.shape[1]
        if self.log is not None:
            self.log.append((l, pos.tolist()))

        def attn_forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            shape = (1, n, -1, attn.head_dim)
            q = attn.q_proj(x).view(shape).transpose(1, 2)
            k = attn.k_proj(x).view(shape).transpose(1, 2)
            v = attn.v_proj(x).view(shape).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            if st.keys[l] is None:
                st.keys[l], st.values[l], st.pos[l] = k, v, pos
            else:
                st.keys[l] = torch.cat([st.keys[l], k], dim=2)
                st.values[l] = torch.cat([st.values[l], v], dim=2)
                st.pos[l] = torch.cat([st.pos[l], pos])
            kf, vf, kpos = st.keys[l], st.values[l], st.pos[l]
            mask = None
            if n > 1 and not (self.is_sdpa and kf.shape[2] == n):  # sdpa on a fresh cache: its causal flag
                mask = torch.zeros(n, kf.shape[2], dtype=q.dtype, device=q.device)
                mask.masked_fill_(kpos[None, :] > pos[:, None], torch.finfo(q.dtype).min)
                mask = mask[None, None]
            out, _ = self.attention(attn, q, kf, vf, mask, dropout=0.0, scaling=attn.scaling)
            scores = None
            if score:
                with record_function("lazyllm::score"):
                    kr = repeat_kv(kf, attn.num_key_value_groups)
                    s = torch.matmul(q[:, :, -1:], kr.transpose(2, 3)) * attn.scaling  # (1, H, 1, nk)
                    scores = s.float().softmax(dim=-1).mean(dim=1)[0, 0]  # (nk,), in cache order
            return attn.o_proj(out.reshape(1, n, -1).contiguous()), scores

        def layer_forward(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            a, scores = _call(attn, attn_forward, layer.input_layernorm(h))
            h = h + a
            h = h + layer.mlp(layer.post_attention_layernorm(h))
            return h, scores

        return _call(layer, layer_forward, h)

    # -------------------------------------------------------------------------------- prefill / decode of one row

    def prefill(self, ids: torch.Tensor) -> tuple[torch.Tensor, SeqState]:
        """Prompt ids (n,) -> last-token logits (vocab,) and the sequence's caches."""
        n = ids.shape[0]
        h = self.inner.embed_tokens(ids[None])
        pos = torch.arange(n, device=ids.device)
        cos, sin = self.inner.rotary_emb(h, pos[None])
        L = len(self.layers)
        st = SeqState(n_prompt=n, cos=cos[0], sin=sin[0], keys=[None] * L, values=[None] * L,
                      pos=[pos[:0]] * L, length=n)
        scores = None
        for l in range(L):
            if l in self.schedule:
                with record_function("lazyllm::select"):
                    s = scores.clone()
                    s[-1] = float("inf")  # the last prompt token always stays
                    k = kept_count(self.schedule[l], pos.shape[0])
                    keep = torch.zeros(pos.shape[0], dtype=torch.bool, device=pos.device)
                    keep[s.topk(k).indices] = True
                    st.aux_pos[l], st.aux_hidden[l] = pos[~keep], h[0, ~keep]
                    h, pos = h[:, keep], pos[keep]
                    st.revived[l] = 0
            st.kept[l] = pos.shape[0]
            h, scores = self._layer(l, h, pos, st.cos[pos][None], st.sin[pos][None], st, (l + 1) in self.schedule)
        last = self.inner.norm(h[:, -1:])
        return self.model.lm_head(last)[0, 0], st

    def decode(self, tok: torch.Tensor, st: SeqState) -> torch.Tensor:
        """One new token (1,) -> its logits (vocab,); revives selected pruned tokens on the way."""
        t = st.length
        h = self.inner.embed_tokens(tok[None])
        new_pos = torch.tensor([t], device=tok.device)
        new_cos, new_sin = self.inner.rotary_emb(h, new_pos[None])
        fly_pos = new_pos[:0]  # revived tokens computed in this step (besides the new one)
        fly_h = h[0, :0]
        scores = None
        for l in range(len(self.layers)):
            if l in self.schedule:
                with record_function("lazyllm::select"):
                    kpos = st.pos[l - 1]
                    s = scores.masked_fill(kpos >= st.n_prompt, float("-inf"))
                    k = min(st.kept[l], int((kpos < st.n_prompt).sum()))
                    sel = kpos[s.topk(k).indices]
                    stay = torch.isin(fly_pos, sel)
                    park_pos, park_h = fly_pos[~stay], fly_h[~stay]
                    back = torch.isin(st.aux_pos[l], sel)
                    st.revived[l] += int(back.sum())
                    fly_pos = torch.cat([fly_pos[stay], st.aux_pos[l][back]])
                    fly_h = torch.cat([fly_h[stay], st.aux_hidden[l][back]])
                    st.aux_pos[l] = torch.cat([st.aux_pos[l][~back], park_pos])
                    st.aux_hidden[l] = torch.cat([st.aux_hidden[l][~back], park_h])
                    order = fly_pos.argsort()
                    fly_pos, fly_h = fly_pos[order], fly_h[order]
            pos = torch.cat([fly_pos, new_pos])
            x = torch.cat([fly_h, h[0, -1:]])[None]
            cos = torch.cat([st.cos[fly_pos], new_cos[0]])[None]
            sin = torch.cat([st.sin[fly_pos], new_sin[0]])[None]
            x, scores = self._layer(l, x, pos, cos, sin, st, (l + 1) in self.schedule)
            fly_h, h = x[0, :-1], x[:, -1:]
        st.length += 1
        return self.model.lm_head(self.inner.norm(h))[0, 0]

    # -------------------------------------------------------------------------------- the model's forward, replaced

    def forward(self, input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """Stands in for LlamaForCausalLM.forward as the `llm` workload calls it (prompt, then one token a step)."""
        from transformers.modeling_outputs import CausalLMOutputWithPast

        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is None:
            raise GenprofError("lazyllm needs the workload to pass a cache to the model")
        key = id(cache)
        if key not in self.states:
            outs, states = [], []
            for row in input_ids:
                logits, st = self.prefill(row)
                outs.append(logits)
                states.append(st)
            self.states[key] = states
            self.first_logits = torch.stack(outs)
            self.prefill_alive = [[st.kept[l] for l in range(len(self.layers))] for st in states]
        else:
            states = self.states[key]
            if input_ids.shape[1] != 1:
                raise GenprofError("lazyllm decodes one token per step")
            outs = [self.decode(row, st) for row, st in zip(input_ids, states)]
        return CausalLMOutputWithPast(logits=torch.stack(outs)[:, None])

    def reset(self) -> None:
        self.states = {}


# ----------------------------------------------------------------------------------------- estimates and quality

def prefill_flops(model: torch.nn.Module, alive: list[int], n_prompt: int) -> tuple[float, float]:
    """Estimated prefill FLOPs with `alive` tokens per layer, and with all `n_prompt` (matmuls + attention)."""
    cfg = model.config
    d = cfg.hidden_size
    head_dim = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    layer = model.model.layers[0]
    linear = sum(p.numel() for name, p in layer.named_parameters() if p.dim() == 2)
    attn = 2 * 2 * cfg.num_attention_heads * head_dim  # QK^T and PV, per (query, key) pair
    head = 2 * d * cfg.vocab_size

    def cost(n: int) -> float:
        return 2 * n * linear + attn * n * (n + 1) / 2

    return sum(cost(n) for n in alive) + head, len(alive) * cost(n_prompt) + head


@torch.inference_mode()
def compare(model: torch.nn.Module, prompt: torch.Tensor, output: torch.Tensor, first_logits: torch.Tensor,
            answers: torch.Tensor | None = None) -> dict[str, Any]:
    """Quality of a pruned run against the unpruned model on the same prompts.

    `output` (batch, 1 + decoded) are the run's greedy tokens, `first_logits` its prefill logits.
    Teacher-forced: the unpruned model reads prompt + output and predicts each output token.
    """
    ids = torch.cat([prompt, output[:, :-1]], dim=1)
    logits = model(ids).logits[:, prompt.shape[1] - 1:].float()  # (batch, len(output), vocab)
    ref_tokens = logits.argmax(-1)
    ref_first = logits[:, 0]
    logp_ref = ref_first.log_softmax(-1)
    logp = first_logits.float().log_softmax(-1)
    kl = (logp_ref.exp() * (logp_ref - logp)).sum(-1)
    out: dict[str, Any] = {
        "reference": "the unpruned model on the run's prompts",
        "first_token_agreement": float((ref_tokens[:, 0] == output[:, 0]).float().mean()),
        "next_token_agreement": float((ref_tokens == output).float().mean()),
        "next_token_agreement_decode": float((ref_tokens[:, 1:] == output[:, 1:]).float().mean())
        if output.shape[1] > 1 else None,
        "first_token_kl": float(kl.mean()),
        "first_token_kl_max": float(kl.max()),
        "tokens_compared": int(output.numel()),
    }
    if answers is not None:
        out["retrieval_accuracy"] = R.score(output[:, 0], answers)
        out["retrieval_accuracy_unpruned"] = R.score(ref_tokens[:, 0], answers)
    return out


# ----------------------------------------------------------------------------------------- the toggle

def _num_layers(spec: Any) -> int:
    """The depth of the run's model, before building it: the weights' config.json, else the size preset."""
    import json
    import os

    if spec.weights:
        path = os.path.join(spec.weights, "config.json")
        if os.path.isfile(path):
            with open(path) as f:
                return int(json.load(f).get("num_hidden_layers", 1 << 20))
        return 1 << 20  # the workload reports the missing weights
    from genprof.workloads import get

    return int(get(spec.workload).config(spec)["config"]["num_hidden_layers"])


@register
class LazyLLM(Optimization):
    name = "lazyllm"
    applies_to = ("llm",)
    options = {"layers": None, "keep": None}
    exact = False
    conflicts = SCHEDULE_NAMES  # those replace the model calls this engine stands in for

    def check(self, spec: Any) -> None:
        super().check(spec)
        if spec.device == "meta":
            raise GenprofError("--opt lazyllm selects tokens from computed attention; it cannot run on --device meta")
        parse_schedule(self.option("layers"), self.option("keep"), _num_layers(spec))


    def apply(self, built: Any) -> Any:
        model = built.parts["model"]
        L = model.config.num_hidden_layers
        schedule = parse_schedule(self.option("layers"), self.option("keep"), L)
        engine = LazyEngine(model, schedule)
        stats: dict[str, Any] = {"layers": [l for l, _ in schedule], "keep": [k for _, k in schedule],
                                 "num_layers": L}
        info = {**built.info, "lazyllm": stats}
        inner = built.infer

        def infer(phases: Any) -> Any:
            engine.reset()
            model.forward = engine.forward
            try:
                output = inner(phases)
            finally:
                del model.forward
            states = [st for sts in engine.states.values() for st in sts]
            n = states[0].n_prompt if states else 0
            alive = [sum(a[l] for a in engine.prefill_alive) for l in range(L)]
            est, full = prefill_flops(model, engine.prefill_alive[0], n) if engine.prefill_alive else (0.0, 1.0)
            stats.update({
                "prompt_tokens": n * len(states), "alive_per_layer": alive,
                "alive_fraction_per_layer": [a / max(1, n * len(states)) for a in alive],
                "prefill_flops_fraction": est / full,
                "revived_per_layer": {str(l): sum(st.revived.get(l, 0) for st in states) for l, _ in schedule},
                "revived_tokens": sum(sum(st.revived.values()) for st in states),
                "cache_tokens_per_layer_end": [sum(int(st.pos[l].shape[0]) for st in states) for l in range(L)],
            })
            engine.reset()
            return output

        def quality(output: Any) -> dict[str, Any]:
            prompt = built.inputs.get("prompt")
            if prompt is None or engine.first_logits is None:
                return {}
            return compare(model, prompt, output, engine.first_logits, built.inputs.get("answers"))

        return replace(built, infer=infer, info=info, quality=quality)
