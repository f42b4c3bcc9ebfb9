"""Roofline and GPU projection: what an op table would cost on a given machine.

`hardware` holds the machine profiles (datasheet and measured peaks, and a
micro-benchmark of this machine); `project` turns an op table (FLOPs and bytes
per op) into predicted times per op, family and phase; `host` reads host
profiles (what a CPU spends to issue each op to a GPU) and `overlap` sets host
time beside device time per phase (eager, fused norms, CUDA graphs). Nothing
here runs a model: the studies that run the suite (`genprof paper`,
`genprof host-profile`) live in genprof.study.
"""

from genprof.roofline.hardware import PROFILES, HardwareProfile, canonical_name, get_profile, measure_local
from genprof.roofline.host import HostProfile, load_host
from genprof.roofline.project import project, project_run, summarize

__all__ = ["PROFILES", "HardwareProfile", "HostProfile", "canonical_name", "get_profile", "load_host",
           "measure_local", "project", "project_run", "summarize"]
