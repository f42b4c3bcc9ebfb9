"""One forward of the decoder engine: the new tokens of every sequence, and how they are laid out.

A `Step` holds the hidden states `x` (rows, width, hidden) that flow through
the layers, and its `Group`s: the attention units. A group is the tokens of
one cache in columns [start, stop): either every row of `x` (a batch of
sequences with one cache of as many rows, or packed rows), or, in a flat step
(one row), one sequence's segment of it. Linear layers run once over all of
`x`; attention runs per group against that group's cache.

Token policies change a step's tokens between layers through `tokens` /
`set_tokens` (a flat step rebuilds its row; a batched one needs every row to
keep as many tokens); the step recomputes its rotary tables after a change.
Not here: running the layers (genprof.engine.decoder).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from genprof.engine.cache import KVCache


@dataclass
class Group:
    """The new tokens of one cache in a step: columns [start, stop) of `x`, positions `pos` (rows or 1, n).

    `valid` / `seg`: per new entry, real or padding, and its prompt in a packed row (see KVCache).
    `store`: how many of the new entries stay in the cache (None: all). `last`: the column, within the
    group, whose logits are wanted (an int, or one per row; None: the last). `scores[layer]`: the last
    query's attention over the cache (rows, entries), filled at the layers a policy asks for (token
    policies keep their per-sequence state on the cache, KVCache.state).
    """

    cache: KVCache
    start: int
    stop: int
    pos: torch.Tensor
    valid: torch.Tensor | None = None
    seg: torch.Tensor | None = None
    store: int | None = None
    last: int | torch.Tensor | None = None
    scores: dict[int, torch.Tensor] = field(default_factory=dict)
    masks: dict[Any, torch.Tensor | None] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.stop - self.start


@dataclass
class Step:
    x: torch.Tensor
    groups: list[Group]
    phase: str  # "prefill" or "decode"
    regions: dict[str, tuple[int, int]] = field(default_factory=dict)  # named columns of a prompt (image tokens)
    select: tuple[torch.Tensor, torch.Tensor] | None = None  # explicit (rows, cols) of the logits wanted
    score_layers: set[int] = field(default_factory=set)
    rope: tuple[torch.Tensor, torch.Tensor] | None = None

    def positions(self) -> torch.Tensor:
        if len(self.groups) == 1:
            return self.groups[0].pos
        return torch.cat([g.pos for g in self.groups], dim=1)

    def tokens(self, g: Group) -> tuple[torch.Tensor, torch.Tensor]:
        """The hidden states (rows, n, hidden) and positions of one group's tokens, as they enter the next layer."""
        return self.x[:, g.start:g.stop], g.pos

    def set_tokens(self, new: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Replace each group's tokens by (hidden (rows, n', hidden), positions (rows, n')), sorted by position."""
        if self.select is not None:
            raise ValueError("a step with explicit logit positions cannot change its tokens")
        start = 0
        for g, (h, pos) in zip(self.groups, new):
            g.start, g.stop, g.pos = start, start + h.shape[1], pos
            g.last, g.masks = None, {}
            start = g.stop
        self.x = new[0][0] if len(new) == 1 else torch.cat([h for h, _ in new], dim=1)
        self.rope = None

    def last_hidden(self) -> torch.Tensor:
        """The hidden states whose logits are wanted: (k, hidden), group by group, row by row."""
        if self.select is not None:
            rows, cols = self.select
            return self.x[rows, cols]
        if len(self.groups) == 1:
            g = self.groups[0]
            if g.last is None:
                return self.x[:, g.stop - 1]
            if isinstance(g.last, int):
                return self.x[:, g.start + g.last]
            return self.x[torch.arange(self.x.shape[0], device=self.x.device), g.start + g.last]
        cols = [g.start + (g.n - 1 if g.last is None else int(g.last)) for g in self.groups]
        return self.x[0, cols]


def batched(x: torch.Tensor, cache: KVCache, pos: torch.Tensor, phase: str, **kw: Any) -> Step:
    """A step over every row of `x` with one cache of as many rows."""
    select = kw.pop("select", None)
    return Step(x, [Group(cache, 0, x.shape[1], pos, **kw)], phase, select=select)


def per_row(x: torch.Tensor, caches: list[KVCache], pos: torch.Tensor, phase: str) -> Step:
    """A one-row step from a batch (rows, n, hidden): row i becomes segment i, with cache i (a view, no copy)."""
    rows, n = x.shape[:2]
    groups = [Group(c, i * n, (i + 1) * n, pos) for i, c in enumerate(caches)]
    return Step(x.reshape(1, rows * n, x.shape[2]), groups, phase)
