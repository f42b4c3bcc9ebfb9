"""The decoder engine: prefill and decode of a Llama-style decoder, layer by layer, with extension points.

One engine runs the `llm` and `llava` decoders and every LLM optimization.
It calls the model's own modules (embed_tokens, each decoder layer, its
self_attn with q/k/v/o_proj, norms, mlp, norm, lm_head) through their
`__call__`, so forward hooks fire and the profiler attributes time to modules
as it does for any model; the arithmetic is that of the transformers forward
(same ops, same attention function), so logits equal it.

Extension points, each public and set by `configure` (which returns a new
engine over the same model; nothing is patched):
- `attention`: the attention implementation, a transformers attention
  function (module, q, k, v, mask, scaling=, dropout=) -> (out, weights); by
  default the model config's (`sdpa`: torch.nn.functional.scaled_dot_product_attention,
  looked up at each call, so attention backends apply; `eager`: explicit matmuls).
- `policies`: token policies (`TokenPolicy`): which tokens each layer computes
  and which entries a cache keeps; they may ask for the last query's attention
  scores at chosen layers (`Step.score_layers`, read back in `Group.scores`).
  Applied in the order of their names, so the order they were added in never
  matters.
- `schedule`: the batch schedule (`Schedule`): which requests run, and how
  their tokens are grouped into steps (genprof.engine.batch.BatchSchedule by
  default; prepacking, chunked prefill and SARATHI are others).
- `prompt`: what the workload feeds (genprof.engine.batch.Prompt), made by a
  function of the run's phases (LLaVA's vision tower runs there).

Masks: none where the attention needs none (one query; a fresh cache under
sdpa, whose causal flag does it); otherwise an additive float mask (0 or the
dtype's most negative: a boolean mask is added onto the scores by the eager
path) from entry order, the cache's padding and packed prompts, or, when the
cache tracks positions, from positions. One mask per group and cache length
in a step, shared by the layers.
Not here: the schedules and policies themselves (genprof.engine.batch,
genprof.optimizations), timing (the profiler).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch
from torch.autograd.profiler import record_function

from genprof.engine.cache import KVCache
from genprof.engine.step import Group, Step
from genprof.errors import GenprofError
from genprof.phases import NullPhases, Phases


class TokenPolicy:
    """Changes which tokens the decoder computes or keeps. Subclasses override the hooks they need."""

    name = ""
    per_sequence = False  # needs one group per sequence (ragged token counts)
    track_positions = False  # needs caches that hold positions (entries out of position order)

    def start(self, engine: "DecoderEngine") -> None:
        """A new generation begins: forget the last one's per-sequence state."""

    def begin_step(self, engine: "DecoderEngine", step: Step) -> None:
        """Before the layers of a step (e.g. ask for scores: `step.score_layers.add(layer)`)."""

    def before_layer(self, engine: "DecoderEngine", layer: int, step: Step) -> None:
        """Before layer `layer` (may change the step's tokens: `step.set_tokens`)."""

    def end_step(self, engine: "DecoderEngine", step: Step) -> None:
        """After the last layer of a step (e.g. drop cache entries: `KVCache.keep`)."""

    def finish(self, engine: "DecoderEngine", generation: Any) -> None:
        """The generation is done (record statistics)."""


class Schedule(Protocol):
    name: str

    def run(self, engine: "DecoderEngine", phases: Phases, force: torch.Tensor | None,
            collect: bool) -> Any: ...


def _call(module: torch.nn.Module, fn: Callable, *args: Any) -> Any:
    """Run `fn(*args)` as `module`'s forward, through module.__call__ (so forward hooks fire)."""
    module.forward = fn
    try:
        return module(*args)
    finally:
        del module.forward


def last_query_scores(q: torch.Tensor, keys: torch.Tensor, groups: int, scaling: float) -> torch.Tensor:
    """Attention of the last query over `keys`, averaged over heads: (rows, entries), in cache order.
    One query row only: the full attention matrix is never formed."""
    from transformers.models.llama.modeling_llama import repeat_kv

    with record_function("genprof::last_query_scores"):
        s = torch.matmul(q[:, :, -1:], repeat_kv(keys, groups).transpose(2, 3)) * scaling
        return s.float().softmax(dim=-1).mean(dim=1)[:, 0]


def visible(n: int, past: int, valid: torch.Tensor | None = None, seg: torch.Tensor | None = None,
            kpos: torch.Tensor | None = None, qpos: torch.Tensor | None = None,
            device: torch.device | str | None = None) -> torch.Tensor:
    """Which entries each of `n` new queries sees, over `past` cached entries and the `n` new ones:
    (rows or 1, n, past + n) booleans. With entry positions `kpos` (rows, entries) and query positions `qpos`:
    the entries at or before the query's position. Else by entry order (new entry i sits at past + i), and
    only real entries (`valid`) of the query's own prompt (`seg`), both (rows, entries) over every entry."""
    if kpos is not None:
        return kpos[:, None, :] <= qpos[:, :, None]
    total = past + n
    dev = device if device is not None else next((t.device for t in (valid, seg) if t is not None), "cpu")
    out = (torch.arange(total, device=dev)[None, :] <= torch.arange(past, total, device=dev)[:, None])[None]
    if valid is not None:
        out = out & valid[:, None, :total]
    if seg is not None:
        out = out & (seg[:, None, :total] == seg[:, past:total, None])
    return out


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(rows, 1, n, entries) float mask for the attention functions: 0 where allowed, else the dtype's most
    negative (a boolean mask is added onto the scores by the eager path, so it would not mask)."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


@dataclass(frozen=True)
class DecoderEngine:
    model: torch.nn.Module
    prompt: Callable[[Phases], Any] | None = None
    schedule: Any = None
    policies: tuple[TokenPolicy, ...] = ()
    attention: Callable | None = None
    _impl: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
        from transformers.models.llama.modeling_llama import eager_attention_forward

        from genprof.engine.batch import BatchSchedule

        decoder = getattr(self.model, "model", None)
        layers = getattr(decoder, "layers", None)
        need = ("embed_tokens", "norm", "rotary_emb")
        if layers is None or not all(hasattr(decoder, a) for a in need) or not hasattr(self.model, "lm_head") or \
                not all(hasattr(layers[0], a) for a in ("self_attn", "mlp", "input_layernorm")):
            raise GenprofError(f"the decoder engine runs Llama-style decoders (embed_tokens, layers with self_attn "
                               f"and mlp, norm, rotary_emb, lm_head); {type(self.model).__name__} is not one")
        impl = self.model.config._attn_implementation
        object.__setattr__(self, "schedule", self.schedule or BatchSchedule())
        object.__setattr__(self, "policies", tuple(sorted(self.policies, key=lambda p: p.name)))
        if self.attention is None:
            object.__setattr__(self, "attention", ALL_ATTENTION_FUNCTIONS.get_interface(impl, eager_attention_forward))
        self._impl.update(decoder=decoder, layers=list(layers), sdpa=impl == "sdpa")

    # ------------------------------------------------------------------------------------ configuration

    def configure(self, **changes: Any) -> "DecoderEngine":
        """A new engine over the same model with some extension points replaced (this one is unchanged)."""
        return dataclasses.replace(self, _impl={}, **changes)

    def with_policy(self, policy: TokenPolicy) -> "DecoderEngine":
        if any(p.name == policy.name for p in self.policies):
            raise GenprofError(f"token policy {policy.name!r} is set twice")
        return self.configure(policies=self.policies + (policy,))

    @property
    def decoder(self) -> torch.nn.Module:
        return self._impl["decoder"]

    @property
    def layers(self) -> list[torch.nn.Module]:
        return self._impl["layers"]

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.lm_head.weight.dtype

    # ------------------------------------------------------------------------------------ running

    def generate(self, phases: Phases) -> torch.Tensor:
        """One inference under the configured schedule and policies: the generated tokens."""
        return self.run(phases).tokens

    def run(self, phases: Phases | None = None, force: torch.Tensor | None = None, collect: bool = False,
            record: bool = True) -> Any:
        """One generation (genprof.engine.batch.Generation). `force` (batch, tokens + 1): feed these tokens
        instead of the argmax (teacher forcing); `collect`: keep the logits of every position; `record`:
        let the policies record this generation's statistics (off for a quality measure's extra runs)."""
        for p in self.policies:
            p.start(self)
        gen = self.schedule.run(self, phases or NullPhases(), force, collect)
        if record:
            for p in self.policies:
                p.finish(self, gen)
        return gen

    def new_cache(self) -> KVCache:
        return KVCache(self.n_layers, track_positions=any(p.track_positions for p in self.policies))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.decoder.embed_tokens(ids)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Logits of hidden states (k, hidden) -> (k, vocab)."""
        return self.model.lm_head(self.decoder.norm(h))

    def forward(self, step: Step) -> torch.Tensor:
        """Run every layer over a step; logits (k, vocab) of the tokens it selects (Step.last_hidden)."""
        for g in step.groups:
            g.cache.add_entries(g.valid, g.seg, step.x.shape[0], g.n, step.x.device)
        for p in self.policies:
            p.begin_step(self, step)
        for layer in range(self.n_layers):
            for p in self.policies:
                p.before_layer(self, layer, step)
            if step.rope is None:
                step.rope = self.decoder.rotary_emb(step.x, step.positions())
            step.x = _call(self.layers[layer], self._layer_forward(layer, step), step.x)
        for p in self.policies:
            p.end_step(self, step)
        return self.head(step.last_hidden())

    # ------------------------------------------------------------------------------------ one layer

    def _layer_forward(self, layer_idx: int, step: Step) -> Callable[[torch.Tensor], torch.Tensor]:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        layer = self.layers[layer_idx]
        attn = layer.self_attn

        def attn_forward(x: torch.Tensor) -> torch.Tensor:
            rows, width = x.shape[:2]
            shape = (rows, width, -1, attn.head_dim)
            q = attn.q_proj(x).view(shape).transpose(1, 2)
            k = attn.k_proj(x).view(shape).transpose(1, 2)
            v = attn.v_proj(x).view(shape).transpose(1, 2)
            cos, sin = step.rope
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            outs = [self._attend(layer_idx, attn, step, g, q, k, v) for g in step.groups]
            out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
            return attn.o_proj(out.reshape(rows, width, -1).contiguous())

        def layer_forward(h: torch.Tensor) -> torch.Tensor:
            h = h + _call(attn, attn_forward, layer.input_layernorm(h))
            return h + layer.mlp(layer.post_attention_layernorm(h))

        return layer_forward

    def _attend(self, layer: int, attn: torch.nn.Module, step: Step, g: Group, q: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor) -> torch.Tensor:
        if len(step.groups) > 1:
            q, k, v = (t[:, :, g.start:g.stop] for t in (q, k, v))
        past = g.cache.length(layer)
        keys, values, kpos = g.cache.append(layer, k, v, g.pos if g.cache.tracks_positions else None, g.store)
        mask = self._mask(g, past, kpos, q.dtype)
        if layer in step.score_layers:
            g.scores[layer] = last_query_scores(q, keys, attn.num_key_value_groups, attn.scaling)
        out, _ = self.attention(attn, q, keys, values, mask, dropout=0.0, scaling=attn.scaling)
        return out

    def _mask(self, g: Group, past: int, kpos: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        """The additive mask of a group's queries over `past` cached entries and its own (see the module doc)."""
        n, cache = g.n, g.cache
        plain = cache.valid is None and cache.seg is None
        if plain and (n == 1 or (past == 0 and self._impl["sdpa"])):
            return None  # one query sees every entry; sdpa's causal flag on a fresh cache
        if kpos is None and past in g.masks:  # entry order: the same for every layer with this many entries
            return g.masks[past]
        mask = additive_mask(visible(n, past, cache.valid, cache.seg, kpos, g.pos, device=g.pos.device), dtype)
        if kpos is None:
            g.masks[past] = mask
        return mask
