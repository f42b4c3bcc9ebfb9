"""Roofline and GPU projection: what an op table would cost on a given machine.

`hardware` holds the machine profiles (datasheet and measured peaks, and a
micro-benchmark of this machine); `project` turns an op table (FLOPs and bytes
per op) into predicted times per op, family and phase. Nothing here runs a
model: the study that runs the suite and projects it (`genprof paper`) lives
in genprof.study.
"""

from genprof.roofline.hardware import PROFILES, HardwareProfile, canonical_name, get_profile, measure_local
from genprof.roofline.project import project, project_run, summarize

__all__ = ["PROFILES", "HardwareProfile", "canonical_name", "get_profile", "measure_local", "project", "project_run", "summarize"]
