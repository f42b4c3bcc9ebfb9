"""`--opt fixed-chunk:chunk=C`: chunked prefill with one static query shape.

Every chunk is exactly C tokens; the last chunk of a prompt is padded (token 0)
and its padding masked by causality (padded keys come after every real query)
and never stored in the cache. The fixed shape is what graph capture or a
compiler wants; its cost is the padded tokens, reported in the metrics
(`padded_tokens`, `padding_cost`).
Not here: the chunking itself (genprof.optimizations.chunked_prefill).
"""

from __future__ import annotations

from typing import Any

from genprof.optimizations.base import register
from genprof.optimizations.chunked_prefill import ChunkedPrefill, ChunkedSchedule


class FixedChunkSchedule(ChunkedSchedule):
    name = "fixed-chunk"


@register
class FixedChunk(ChunkedPrefill):
    name = "fixed-chunk"
    schedule_class = FixedChunkSchedule

    def params(self) -> dict[str, Any]:
        return {"chunk": self._int("chunk", 512), "fixed": True}
