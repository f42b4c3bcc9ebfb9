"""Workload adapters, one model family per file, and their registry."""

from genprof.workloads.registry import get, names, register

__all__ = ["get", "names", "register"]
