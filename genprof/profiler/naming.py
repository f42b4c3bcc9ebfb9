"""What a CPU event of a trace is, from its name and category: an operator, a scope, or a runtime call.

A trace recorded by anyone holds three sorts of CPU events:

- **operators**: dispatcher ops, written `namespace::name` (`aten::mm`,
  `c10d::allreduce_`, `fbgemm::...`, custom ops such as `vllm::...`), plus the
  fused-attention functions genprof already knows by name (`FlashAttnFunc`).
  The outermost operator of a call stack is an op-table row.
- **scopes**: everything that only groups work: genprof's own phase, step,
  repeat and module ranges; `record_function` ranges (category
  `user_annotation`, whatever their name, so `lazyllm::score` too); Python
  frames (`python_function`); and, by name, `ProfilerStep#N`, `## forward ##`
  annotations, `nn.Module: X`, autograd-engine wrappers and backward nodes
  (`autograd::engine::evaluate_function: ...`, `AddmmBackward0`,
  `torch::autograd::AccumulateGrad`), optimizer steps
  (`Optimizer.step#Adam.step`), compiled regions (`CompiledFunction`,
  `Torch-Compiled Region: 0/0`), Inductor's per-kernel ranges and any other
  name outside an operator namespace. A scope is never an op: its own time is
  an `[overhead]` row, and it maps to the phase, step or module column where
  it fits, else to the `scope` column.
- **runtime calls** (category `cuda_runtime`, `cuda_driver`, ...): the
  launches that carry a device event's correlation id; never rows.

`classify(names, categories)` gives a kind code and a value per distinct name;
nothing here reads a trace.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from genprof.profiler import scopes
from genprof.profiler.events import RUNTIME_CATEGORIES
from genprof.profiler.taxonomy import FUSED_ATTENTION

# Kind codes. 0-5 are genprof's own (as the op table always had them).
OP, REPEAT, PHASE, STEP, MODULE, RANGE = 0, 1, 2, 3, 4, 5
F_STEP, F_PHASE, F_MODULE, AUTOGRAD, OPTIMIZER, COMPILED, SCOPE, PYFRAME, RUNTIME = range(6, 15)
GENPROF_KINDS = (REPEAT, PHASE, STEP, MODULE, RANGE)
SCOPE_KINDS = (REPEAT, PHASE, STEP, MODULE, RANGE, F_STEP, F_PHASE, F_MODULE, AUTOGRAD, OPTIMIZER, COMPILED,
               SCOPE, PYFRAME)
# Scopes named in the `scope` column (genprof's ranges, steps and modules have columns; Python frames are noise).
SCOPE_COLUMN_KINDS = (F_PHASE, AUTOGRAD, OPTIMIZER, COMPILED, SCOPE)

_GENPROF = ((scopes.REPEAT, REPEAT), (scopes.PHASE, PHASE), (scopes.STEP, STEP), (scopes.MODULE, MODULE))
_PROFILER_STEP = re.compile(r"^ProfilerStep#(\d+)$")
_ANNOTATED_PHASE = re.compile(r"^##\s*(.*?)\s*##$")
_OPERATOR = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)::[A-Za-z_]")
_NOT_OPERATOR_NAMESPACES = frozenset({"autograd", "torch", "profiler"})  # engine, autograd nodes, reducer, ranges
_BACKWARD_NODE = re.compile(r"Backward\d*$")
_OPTIMIZER = re.compile(r"^Optimizer\.(step|zero_grad)#")
_COMPILED = re.compile(r"^(CompiledFunction(Backward)?|Torch-Compiled Region\b|## Call CompiledFxGraph)")
_CLASS_RANGE = re.compile(r"^<class '([^']+)'>$")
NN_MODULE = "nn.Module: "


def classify_name(name: str, category: str) -> tuple[int, Any]:
    """(kind, value) of one event name. Values: int for steps and repeats, the phase or module name."""
    if name.startswith(scopes.PREFIX):
        for prefix, kind in _GENPROF:
            if name.startswith(prefix):
                v = name[len(prefix):]
                return kind, (int(v) if kind in (REPEAT, STEP) else v)
        return RANGE, None
    if category in RUNTIME_CATEGORIES:
        return RUNTIME, None
    m = _PROFILER_STEP.match(name)
    if m:
        return F_STEP, int(m.group(1))
    m = _ANNOTATED_PHASE.match(name)
    if m:
        return F_PHASE, m.group(1)
    if name.startswith(NN_MODULE):
        return F_MODULE, name[len(NN_MODULE):]
    m = _CLASS_RANGE.match(name)
    if m:
        return F_MODULE, m.group(1).rsplit(".", 1)[-1]
    if _OPTIMIZER.match(name):
        return OPTIMIZER, None
    if _COMPILED.match(name):
        return COMPILED, None
    if name.startswith("autograd::engine::") or _BACKWARD_NODE.search(name) or name.startswith("torch::autograd::"):
        return AUTOGRAD, None
    if category == "python_function":
        return PYFRAME, None
    if category == "user_annotation":
        return SCOPE, None
    m = _OPERATOR.match(name)
    if (m and m.group(1) not in _NOT_OPERATOR_NAMESPACES) or name in FUSED_ATTENTION:
        return OP, None
    return SCOPE, None


def classify(names: Sequence[str], categories: Sequence[str]) -> tuple[np.ndarray, list[Any]]:
    """Kind code and value per distinct name (categories may be shorter: unknown = '')."""
    kind = np.zeros(len(names), np.int8)
    value: list[Any] = [None] * len(names)
    for i, name in enumerate(names):
        kind[i], value[i] = classify_name(name, categories[i] if i < len(categories) else "")
    return kind, value


def module_type(module: str) -> str:
    """The class of a module named by another tool's range: `Linear_0` (nn.Module: ranges) -> `Linear`."""
    base, _, idx = module.rpartition("_")
    return base if base and idx.isdigit() else module
