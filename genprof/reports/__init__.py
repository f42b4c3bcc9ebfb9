"""Reports: functions over the op table (breakdowns, comparisons), figures, HTML."""

from genprof.reports.breakdown import attention_calls, block_of, breakdown, seq_profile, top_ops
from genprof.reports.compare import compare, end_to_end

__all__ = ["compare", "end_to_end", "attention_calls", "block_of", "breakdown", "seq_profile", "top_ops"]
