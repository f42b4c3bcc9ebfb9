"""Measuring: timers, trace sessions, module scopes, the op taxonomy, FLOP/byte counting."""

from genprof.profiler.session import Measurement, measure_timing, measure_trace

__all__ = ["Measurement", "measure_timing", "measure_trace"]
