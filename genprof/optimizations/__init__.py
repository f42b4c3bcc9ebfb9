"""Optimizations as transforms of a built workload, one per file, and their registry."""

from genprof.optimizations.base import Optimization, names, register, resolve

__all__ = ["Optimization", "names", "register", "resolve"]
