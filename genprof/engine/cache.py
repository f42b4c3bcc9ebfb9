"""The decoder engine's key/value cache: per layer, one row per sequence of a batch.

Entries stay in the order they were computed. Besides keys and values (batch,
kv heads, entries, head dim) a cache can hold, shared by every layer:
- `valid` (batch, entries), False on the padding of a right-padded batch, which
  no query may see;
- `seg` (batch, entries), which prompt of a packed row an entry belongs to
  (queries see their own prompt only).
With `track_positions` it also holds each layer's entry positions (batch,
entries): token pruning makes layers hold different tokens, and revived tokens
join a cache out of position order, so masks must compare positions rather
than entry order. Without it, entry order is position order.

`state` is where token policies keep what they know of this cache's sequence.
Not here: which entries to keep (the policies), attention (the engine).
"""

from __future__ import annotations

from typing import Any

import torch


class KVCache:
    def __init__(self, n_layers: int, track_positions: bool = False):
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers
        self.pos: list[torch.Tensor | None] | None = [None] * n_layers if track_positions else None
        self.valid: torch.Tensor | None = None
        self.seg: torch.Tensor | None = None
        self.state: dict[str, Any] = {}  # token policies' per-sequence state, by policy name

    @property
    def n_layers(self) -> int:
        return len(self.keys)

    @property
    def tracks_positions(self) -> bool:
        return self.pos is not None

    def length(self, layer: int = 0) -> int:
        k = self.keys[layer]
        return 0 if k is None else int(k.shape[-2])

    def lengths(self) -> list[int]:
        return [self.length(i) for i in range(self.n_layers)]

    def add_entries(self, valid: torch.Tensor | None, seg: torch.Tensor | None, rows: int, n: int,
                    device: torch.device) -> None:
        """Record which of a step's `n` new entries are real and their prompt ids (once per step, all layers)."""
        past = self.length(0)
        if valid is not None or self.valid is not None:
            new = valid if valid is not None else torch.ones(rows, n, dtype=torch.bool, device=device)
            if self.valid is None and past:
                self.valid = torch.ones(rows, past, dtype=torch.bool, device=device)
            self.valid = new if self.valid is None else torch.cat([self.valid, new], dim=1)
        if seg is not None or self.seg is not None:
            if seg is None or (self.seg is None and past):
                raise ValueError("a packed cache takes packed steps only")
            self.seg = seg if self.seg is None else torch.cat([self.seg, seg], dim=1)

    def append(self, layer: int, key: torch.Tensor, value: torch.Tensor, pos: torch.Tensor | None = None,
               store: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Add one layer's new keys/values; return what this step attends to (cache + every new entry) and,
        when tracked, the positions of those entries. Only the first `store` new entries stay in the cache
        (the others, padding of a fixed-shape chunk, attend in this step alone)."""
        n = key.shape[-2]
        keep = n if store is None else store
        k_old, v_old = self.keys[layer], self.values[layer]
        if k_old is None:
            k_all, v_all = key, value
            self.keys[layer], self.values[layer] = key[:, :, :keep], value[:, :, :keep]
        else:
            stored_k = torch.cat([k_old, key[:, :, :keep]], dim=2)
            stored_v = torch.cat([v_old, value[:, :, :keep]], dim=2)
            self.keys[layer], self.values[layer] = stored_k, stored_v
            if keep == n:
                k_all, v_all = stored_k, stored_v
            else:
                k_all = torch.cat([stored_k, key[:, :, keep:]], dim=2)
                v_all = torch.cat([stored_v, value[:, :, keep:]], dim=2)
        if self.pos is None:
            return k_all, v_all, None
        if pos is None:
            raise ValueError("a cache that tracks positions needs the positions of new entries")
        old = self.pos[layer]
        p_all = pos if old is None else torch.cat([old, pos], dim=1)
        self.pos[layer] = p_all[:, :p_all.shape[1] - (n - keep)]
        return k_all, v_all, p_all

    def keep(self, layer: int, index: torch.Tensor) -> None:
        """Keep only the entries `index` (batch, m) of one layer, in that order."""
        for store in (self.keys, self.values):
            t = store[layer]
            idx = index[:, None, :, None].expand(t.shape[0], t.shape[1], index.shape[1], t.shape[3])
            store[layer] = torch.gather(t, 2, idx)
        if self.pos is not None:
            self.pos[layer] = torch.gather(self.pos[layer], 1, index)

    def split(self, row: int, start: int, n: int) -> "KVCache":
        """A cache of one sequence: entries [start, start + n) of one row (e.g. one prompt of a packed row)."""
        out = KVCache(self.n_layers, track_positions=self.tracks_positions)
        for layer in range(self.n_layers):
            out.keys[layer] = self.keys[layer][row:row + 1, :, start:start + n].contiguous()
            out.values[layer] = self.values[layer][row:row + 1, :, start:start + n].contiguous()
            if self.pos is not None:
                out.pos[layer] = self.pos[layer][row:row + 1, start:start + n]
        return out

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values) if t is not None)
