"""genprof's FLOPs and bytes against an independent count, on every registered workload at `tiny`.

The independent count (tests/independent_count.py) runs the same built model again under a
TorchDispatchMode that records the real input and output tensors of every op, and under
torch's FlopCounterMode with attention on its MATH path. Differences by design are named in
`independent_count.BY_DESIGN`, each with its reason; nothing else may differ.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import genprof
from genprof import api
from genprof.workloads.base import torch_dtype

import independent_count as ic

# Fewest steps / tokens that still run every phase and every kind of step (decode grows per token).
SHORT = {"steps": 1, "tokens": 2}


def counted(name: str, size: str, device: str, dtype: str = "float32") -> tuple:
    """One traced run of a workload (steps / tokens cut to SHORT), two more runs of the same model
    (under the recorder, under the FLOP counter), and the counts side by side: (built, ops,
    sites, phases; see independent_count.compare).
    One intra-op thread: the counts do not depend on it, and idle threads spinning on a shared
    machine cost more CPU than these tiny ops."""
    wl = genprof.workloads.get(name)
    spec = api.make_spec(name, size=size, device=device, dtype=dtype, mode="trace",
                         **{wl.counted_by: SHORT[wl.counted_by]})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        built = api.build(spec)
        ops, ind = ic.traced(built, device, {"workload": name, "size": size})
    finally:
        torch.set_num_threads(threads)
    sites, phases = ic.compare(ops, ind, torch_dtype(spec.dtype), device)
    return built, ops, sites, phases


@pytest.fixture(scope="module", params=genprof.workloads.names())
def tiny(request):
    return counted(request.param, "tiny", "cpu")


def assert_phases_agree(phases, rel=0.02):
    for p in phases.itertuples():
        assert p.flops == pytest.approx(p.ind_flops, rel=rel), (p.phase, "FLOPs", p.flops, p.ind_flops)
        assert p.bytes == pytest.approx(p.expected_bytes, rel=rel), (p.phase, "bytes", p.bytes, p.expected_bytes)


def test_flops_and_bytes_per_phase_agree_with_the_independent_count(tiny):
    built, ops, sites, phases = tiny
    assert len(phases) >= 2 and phases["flops"].sum() > 0 and phases["bytes"].sum() > 0
    assert_phases_agree(phases)


def assert_sites_agree(ops, sites):
    """Every call site of every op kind: genprof's bytes = real inputs read + real outputs written (as
    the recorder saw them), calls equal; a difference only where BY_DESIGN names its reason."""
    assert set(sites["why"]) <= set(ic.BY_DESIGN) | {""}
    assert set(ops.loc[ops["op"] != "[overhead]", "op"]) <= set(sites["op"])
    seen = sites[sites["ind_calls"] > 0]
    wrong = seen[(seen["calls"] != seen["ind_calls"]) | (seen["bytes"] != seen["expected"])]
    assert wrong.empty, wrong[["phase", "step", "op", "input_shapes", "calls", "ind_calls", "bytes", "expected"]]
    unseen = sites[sites["ind_calls"] == 0]  # only what the recorder cannot see, named
    assert set(unseen["why"]) <= {"built from Python data"}, unseen[["phase", "op", "input_shapes", "calls"]]
    exact = seen["why"].eq("")
    assert (seen.loc[exact, "bytes"] == seen.loc[exact, "ind_bytes"]).all()


def test_bytes_per_call_are_inputs_plus_outputs_for_every_op(tiny):
    built, ops, sites, phases = tiny
    assert_sites_agree(ops, sites)


def test_op_table_doc_lists_every_op_kind(tiny):
    """docs/op-table.md says how each op kind is counted: a workload that runs a new one must add it
    (`python scripts/op_kinds.py`)."""
    built, ops, sites, phases = tiny
    doc = (Path(__file__).resolve().parent.parent / "docs" / "op-table.md").read_text()
    listed = set(re.findall(r"^\| `([^`]+)` \|", doc, flags=re.M))
    missing = set(ops.loc[ops["op"] != "[overhead]", "op"]) - listed
    assert not missing, f"not in docs/op-table.md (run python scripts/op_kinds.py): {sorted(missing)}"


def test_causal_attention_counts_the_unmasked_pairs():
    """A causal SDPA call on a fused kernel counts Lq(Lq+1)/2 pairs, not Lq^2; its math path all of them."""
    from genprof.profiler import counting

    shapes = [[2, 4, 64, 16]] * 3 + [[], [], [], [], []]
    dtypes = ["float"] * 3 + ["", "Scalar", "Scalar", "", "Scalar"]
    args = [None, None, None, None, 0.0, True, None, False]
    full = 2 * 2 * 4 * 64 * 64 * (16 + 16)
    fused, _ = counting.count("aten::scaled_dot_product_attention", shapes, dtypes, args)
    math_path, _ = counting.count("aten::scaled_dot_product_attention", shapes, dtypes, args, fused_attention=False)
    assert fused == full * (64 * 65 // 2) // (64 * 64) and math_path == full
    assert ic.masked_pairs(64, 64) == 64 * 64 - 64 * 65 // 2
