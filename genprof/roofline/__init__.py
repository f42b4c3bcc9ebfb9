"""Roofline and GPU projection: what an op table would cost on a given machine.

`hardware` holds the machine profiles (datasheet and measured peaks, and a
micro-benchmark of this machine); `project` turns an op table (FLOPs and bytes
per op) into predicted times per op, family and phase; `paper` projects the
study's suite at `paper` size and sets the result beside the study's claims and
our measurements. Nothing here runs a model except `paper`, through the API.
"""

from genprof.roofline.hardware import PROFILES, HardwareProfile, canonical_name, get_profile, measure_local
from genprof.roofline.project import project, project_run, summarize

__all__ = ["PROFILES", "HardwareProfile", "canonical_name", "get_profile", "measure_local", "project", "project_run", "summarize"]
