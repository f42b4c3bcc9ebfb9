"""genprof: characterize the inference of generative models.

Where the time goes (Convolution, Linear, attention by kind), by operator
family, model part, phase and step, for text-to-image, text-to-video and LLM
prefill/decode workloads; and what each optimization buys. The notebook API:

    import genprof
    res = genprof.run("stable-diffusion", size="tiny", mode="trace")
    ops = genprof.load_runs("runs")
    genprof.reports.breakdown(ops, "family")
"""

from genprof import reports
from genprof.api import RunResult, build, make_spec, ops_from_trace, run
from genprof.errors import GenprofError
from genprof.spec import OptSpec, RunSpec
from genprof.store import load_runs, read_run
from genprof.workloads import names as list_workloads

__version__ = "0.1.0"
__all__ = ["run", "build", "make_spec", "ops_from_trace", "load_runs", "read_run", "list_workloads", "RunSpec", "OptSpec",
           "RunResult", "GenprofError", "reports"]
