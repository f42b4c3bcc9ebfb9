"""Reports: functions over the op table (breakdowns, comparisons), figures, HTML."""

from genprof.reports.breakdown import breakdown, top_ops

__all__ = ["breakdown", "top_ops"]
