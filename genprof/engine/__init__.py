"""The decoder engine shared by the LLM workloads and every LLM optimization.

`DecoderEngine` (genprof.engine.decoder) runs a Llama-style decoder layer by
layer with public extension points (attention implementation, token policies,
batch schedule, prompt); `KVCache` (cache), `Step`/`Group` (step), the default
`BatchSchedule` with `Prompt` and `Generation` (batch), ragged requests and
their metrics (requests), prompt-length presets (prompts).
"""

from genprof.engine.batch import BatchSchedule, Generation, Prompt
from genprof.engine.cache import KVCache
from genprof.engine.decoder import DecoderEngine, Schedule, TokenPolicy
from genprof.engine.step import Group, Step

__all__ = ["BatchSchedule", "DecoderEngine", "Generation", "Group", "KVCache", "Prompt", "Schedule", "Step",
           "TokenPolicy"]
