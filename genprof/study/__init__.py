"""Studies: orchestration that runs workloads and sets the results beside published claims.

`paper` counts the study's suite at `paper` size on the meta device, projects
it on GPU profiles (genprof.roofline), measures the suite on this machine, and
writes the headline table (`genprof paper`). `host` measures this machine's
host profile from tiny runs of the suite on the CPU (`genprof host-profile`).
It sits above the roofline and report packages, which never run a model and
never import it.
"""
