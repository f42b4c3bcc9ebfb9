"""Optimizations compose: every compatible pair, on each workload it applies to, in both orders, gives the same
tokens and runs the same attention kernels, equal to the single optimization's run where the math says so;
every incompatible pair is refused before anything runs (exit 2 on the command line)."""

from __future__ import annotations

import collections
import itertools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from typer.testing import CliRunner

import genprof
from genprof import cli
from genprof.errors import GenprofError
from genprof.phases import NullPhases

from conftest import run_cli

ATTN = ["attn=math", "attn=flash"]  # the two attention kernels a CPU has (sdpa picks flash there)
RAGGED = "prompts=chat,n=3"  # three short ragged prompts
OPTS = {
    "llm": [f"padded:{RAGGED}", f"prepack:{RAGGED}", f"chunked-prefill:chunk=32,{RAGGED}",
            f"fixed-chunk:chunk=32,{RAGGED}", f"sarathi:chunk=32,batch=2,{RAGGED}", "lazyllm:layers=1,keep=0.5"],
    "llava": ["vision-prune:layer=2,keep=0.5", "text-prune:keep=0.5"],
}
SCHEDULES = OPTS["llm"][:5]
# What composes, stated here independently of the optimizations' own declarations: an attention backend with
# anything; vision-prune with text-prune (prompt tokens at prefill, generated tokens' KV during decoding).
COMPATIBLE = {
    "llm": [(a, o) for a in ATTN for o in OPTS["llm"]],
    "llava": [(a, o) for a in ATTN for o in OPTS["llava"]] + [tuple(OPTS["llava"])],
}
# Two schedules each own the batch schedule; LazyLLM prunes during a whole-prompt prefill, which a schedule replaces.
INCOMPATIBLE = list(itertools.combinations(SCHEDULES, 2)) + [(s, OPTS["llm"][5]) for s in SCHEDULES]
KERNEL_PREFIXES = ("aten::_scaled_dot_product_", "aten::_flash_attention", "aten::_efficient_attention",
                   "aten::baddbmm")


def _spec(workload: str, opts, **kw) -> genprof.api.RunSpec:
    return genprof.make_spec(workload, size="tiny", batch=2, tokens=4, optimizations=list(opts), **kw)


class _Kernels(TorchDispatchMode):
    """Counts the attention kernels an inference dispatches (independently of genprof's profiler)."""

    def __init__(self):
        super().__init__()
        self.seen: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name.startswith(KERNEL_PREFIXES):
            self.seen[func._schema.name] += 1
        return func(*args, **(kwargs or {}))


def _run(workload: str, opts) -> tuple[torch.Tensor, collections.Counter]:
    """The tokens of one inference and the attention kernels it ran (names and calls)."""
    built = genprof.build(_spec(workload, opts))
    with _Kernels() as kernels, torch.no_grad():  # (inference mode hides the kernel SDPA picks from the mode)
        out = built.run(NullPhases())
    return out, kernels.seen


@pytest.mark.parametrize("workload, pair", [(w, p) for w, pairs in COMPATIBLE.items() for p in pairs],
                         ids=lambda v: "+".join(v) if isinstance(v, tuple) else v)
def test_compatible_pairs_give_the_same_result_in_either_order(workload, pair):
    a, b = pair
    out_ab, k_ab = _run(workload, [a, b])
    out_ba, k_ba = _run(workload, [b, a])
    assert torch.equal(out_ab, out_ba), f"{a} then {b} differs from {b} then {a}"
    assert k_ab == k_ba and k_ab, (k_ab, k_ba)
    if a.startswith("attn="):  # a backend changes how attention is computed, never what: the other's tokens
        alone, _ = _run(workload, [b])
        assert torch.equal(out_ab, alone), f"{a} changed the tokens of {b}"
        fused = sum(n for k, n in k_ab.items() if k.startswith("aten::_scaled_dot_product_flash"))
        unfused = k_ab.get("aten::baddbmm", 0)
        assert (unfused > 0 and fused == 0) if a == "attn=math" else (fused > 0 and unfused == 0), k_ab
    else:  # text-prune acts only once decoding has fed two tokens: until then vision-prune's tokens
        alone, _ = _run(workload, [a])
        assert torch.equal(out_ab[:, :3], alone[:, :3])


@pytest.mark.parametrize("pair", INCOMPATIBLE, ids="+".join)
def test_incompatible_pairs_are_refused_before_anything_runs_with_exit_2(pair, tmp_path):
    for opts in (pair, pair[::-1]):
        with pytest.raises(GenprofError, match=r"cannot be combined with") as e:
            genprof.api.validate(_spec("llm", opts))
        assert "\n" not in str(e.value) and all(o.split(":")[0] in str(e.value) for o in opts)
    args = ["run", "llm", "--out", str(tmp_path)] + [x for o in pair for x in ("--opt", o)]
    r = CliRunner().invoke(cli.app, args, standalone_mode=False, catch_exceptions=True)
    assert isinstance(r.exception, GenprofError)  # which cli.main turns into exit 2
    assert not any(tmp_path.iterdir())  # nothing was written


def test_the_real_command_refuses_a_pair_with_exit_2_and_one_line(tmp_path):
    r = run_cli("run", "llm", "--opt", "prepack", "--opt", "lazyllm", "--out", str(tmp_path))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "prepack" in r.stderr and "lazyllm" in r.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("workload, opts, kernels", [
    ("llm", ["attn=math", "prepack"], {"aten::baddbmm", "aten::softmax", "aten::bmm"}),
    ("llm", ["chunked-prefill:chunk=16", "attn=math"], {"aten::baddbmm", "aten::softmax", "aten::bmm"}),
    ("llava", ["attn=math", "vision-prune:layer=2,keep=0.2"], {"aten::baddbmm", "aten::softmax", "aten::bmm"}),
    # a policy's own last-query scores (a matmul and a softmax in the attention module) are not the kernel
    ("llm", ["attn=flash", "lazyllm:layers=1,keep=0.5"], {"aten::_scaled_dot_product_flash_attention_for_cpu"}),
])
def test_run_json_records_the_backend_the_trace_shows(workload, opts, kernels, tmp_path):
    res = genprof.run(_spec(workload, opts, repeats=1, warmup=0), out=tmp_path)
    assert res.ok, res.meta.get("traceback")
    s = res.meta["summary"]
    assert s["attention_backend_ran"] == opts[0 if opts[0].startswith("attn") else 1][5:]
    assert s["attention_backend_ran"] == res.meta["info"]["attention_backend"]
    assert set(s["attention_kernels"]) == kernels


def test_a_run_whose_kernels_are_not_the_requested_backend_fails():
    from genprof.api import check_attention_kernels

    summary = {"attention_kernels": {"aten::_scaled_dot_product_flash_attention_for_cpu": 4}}
    with pytest.raises(GenprofError, match="attn=math was asked for but the trace shows flash"):
        check_attention_kernels("math", summary)
    check_attention_kernels("flash", summary)
    assert summary["attention_backend_ran"] == "flash"
