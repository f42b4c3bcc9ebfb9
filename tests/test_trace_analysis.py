"""The vectorized event tree and op table: equal to the event-by-event reference, from a live profile and from a
trace file; GPU kernel attribution on a hand-written trace; bad trace files; the peak-memory mark."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch.autograd.profiler import record_function

import reference_optable as ref
from genprof import api
from genprof.errors import GenprofError
from genprof.profiler import events, optable, scopes
from genprof.profiler.memory import MemoryMonitor, reset_hwm


def stack_parents(start, end):
    """The stack walk the vectorized search replaces (inputs sorted by start, then -end)."""
    parent, stack = [], []
    for s, e in zip(start, end):
        while stack and end[stack[-1]] <= s:
            stack.pop()
        parent.append(stack[-1] if stack else -1)
        stack.append(len(parent) - 1)
    return np.asarray(parent)


def random_tree(rng, n):
    """Properly nested intervals with zero-length events and ties, as a profiler writes them."""
    starts, ends = [], []

    def fill(lo, hi, depth):
        t = lo
        while t < hi and len(starts) < n:
            d = int(rng.integers(0, max((hi - t) // 2, 1) + 1))
            starts.append(t)
            ends.append(t + d)
            if d > 2 and depth < 8:
                fill(t + int(rng.integers(0, 2)), t + d - int(rng.integers(0, 2)), depth + 1)
            t += d + int(rng.integers(0, 3))

    fill(0, 10**6, 0)
    s, e = np.asarray(starts, np.int64), np.asarray(ends, np.int64)
    o = np.lexsort((np.arange(len(s)), -e, s))
    return s[o], e[o]


@pytest.mark.parametrize("seed", range(4))
def test_nearest_enclosing_is_the_stack_walk(seed):
    rng = np.random.default_rng(seed)
    s, e = random_tree(rng, 3000)
    assert (events.nearest_enclosing(s, e) == stack_parents(s, e)).all()
    # overlapping, improperly nested intervals too: the search still answers what the stack walk answers
    s = np.sort(rng.integers(0, 5000, 2000))
    e = s + rng.integers(0, 300, len(s))
    o = np.lexsort((np.arange(len(s)), -e, s))
    assert (events.nearest_enclosing(s[o], e[o]) == stack_parents(s[o], e[o])).all()


def profile_tiny(workload, **kw):
    spec = api.make_spec(workload, size="tiny", repeats=1, warmup=0, mode="trace", threads=1, **kw)
    built = api.build(spec)
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True)
    with scopes.ModuleScopes(built.parts) as modules:
        prof.start()
        for r in range(2):
            with record_function(scopes.REPEAT + str(r)), torch.inference_mode():
                built.run(scopes.TracePhases())
        prof.stop()
    return prof, modules


@pytest.mark.parametrize("workload,kw", [("llm", {"tokens": 6}), ("stable-diffusion", {})])
def test_vectorized_table_equals_reference_live_and_from_file(workload, kw, tmp_path):
    prof, modules = profile_tiny(workload, **kw)
    expect, expect_phases = ref.build(ref.from_profile(prof), modules.types, modules.attention_kinds)
    got, got_phases = optable.build(events.from_profile(prof), modules.types, modules.attention_kinds)
    ref.assert_same_table(expect, got)
    ref.assert_same_phases(expect_phases, got_phases)
    assert (got["op"] == "[overhead]").any() and (got["step"] >= 0).any() and (got["family"] == "Attention").any()
    # the same profile exported as a (gzipped) Chrome trace and read back as a stream
    raw = tmp_path / "trace.json"
    prof.export_chrome_trace(str(raw))
    gz = tmp_path / "trace.json.gz"
    gz.write_bytes(gzip.compress(raw.read_bytes()))
    for path in (raw, gz):
        from_file, file_phases = optable.build(events.from_chrome_trace(path), modules.types, modules.attention_kinds)
        ref.assert_same_table(expect, from_file)
        ref.assert_same_phases(expect_phases, file_phases)


def write_gpu_trace(path):
    """A hand-written Kineto-style trace: phase > module > two ops; each op launches kernels on a GPU stream."""
    def x(name, cat, ts, dur, tid=1, pid=1, **args):
        return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur, "args": args}

    ev = [
        {"ph": "M", "name": "process_name", "pid": 1, "tid": 0, "args": {"name": "python"}},
        x("genprof.repeat::0", "user_annotation", 0.0, 100.0),
        x("genprof.phase::denoise", "user_annotation", 1.0, 90.0),
        x("genprof.module::unet.attn", "user_annotation", 2.0, 80.0),
        x("aten::scaled_dot_product_attention", "cpu_op", 3.0, 30.0, **{
            "Input Dims": [[2, 8, 64, 40], [2, 8, 64, 40], [2, 8, 64, 40]],
            "Input type": ["c10::BFloat16"] * 3, "Concrete Inputs": ["", "", ""]}),
        x("aten::_scaled_dot_product_flash_attention", "cpu_op", 4.0, 20.0),
        x("cudaLaunchKernel", "cuda_runtime", 5.0, 2.0, correlation=11),
        x("aten::linear", "cpu_op", 40.0, 20.0, **{
            "Input Dims": [[2, 64, 320], [320, 320], [320]], "Input type": ["float"] * 3,
            "Concrete Inputs": ["", "", ""]}),
        x("aten::addmm", "cpu_op", 41.0, 15.0),
        x("cudaLaunchKernel", "cuda_runtime", 42.0, 2.0, correlation=12),
        x("cudaLaunchKernel", "cuda_runtime", 45.0, 2.0, correlation=13),
        x("flash_fwd_kernel", "kernel", 10.0, 7.5, pid=0, tid=7, correlation=11),
        x("sm90_gemm", "kernel", 50.0, 4.25, pid=0, tid=7, correlation=12),
        x("elementwise_kernel", "kernel", 55.0, 1.0, pid=0, tid=7, correlation=13),
        {"ph": "f", "id": 11, "pid": 0, "tid": 7, "ts": 10.0, "cat": "ac2g", "name": "ac2g"},
    ]
    path.write_text(json.dumps({"schemaVersion": 1, "traceEvents": ev, "deviceProperties": []}))


def test_gpu_kernels_go_to_the_launching_op(tmp_path):
    p = tmp_path / "gpu.json"
    write_gpu_trace(p)
    ev = events.from_chrome_trace(p)
    assert len(ev) == 10 and len(ev.kernel_ns) == 3
    ops, phases = optable.build(ev, {"unet.attn": "Attention"}, {"unet.attn": "spatial-self"})
    row = ops.set_index("op")
    assert row.loc["aten::scaled_dot_product_attention", "device_time_s"] == pytest.approx(7.5e-6)
    assert row.loc["aten::linear", "device_time_s"] == pytest.approx(5.25e-6)
    kernel = row.loc["aten::scaled_dot_product_attention", "kernel"]
    assert kernel == "aten::_scaled_dot_product_flash_attention | flash_fwd_kernel"
    assert row.loc["aten::scaled_dot_product_attention", "attention_kind"] == "spatial-self"
    assert row.loc["aten::linear", "flops"] == 2 * 2 * 64 * 320 * 320
    assert row.loc["aten::scaled_dot_product_attention", "seq_q"] == 64
    # wall time of the phase = ops + its module's and its own overhead
    denoise = ops[ops["phase"] == "denoise"]
    assert denoise["total_time_s"].sum() == pytest.approx(90e-6)
    assert phases.set_index("phase").loc["denoise", "time_s"] == pytest.approx(90e-6)


def test_times_are_read_exactly(tmp_path):
    """Kineto writes microseconds with 3 decimals; a parent and a child ending on the same nanosecond stay nested."""
    p = tmp_path / "t.json"
    p.write_text('{"traceEvents": [\n'
                 '{"ph": "X", "cat": "user_annotation", "name": "genprof.phase::a", "pid": 1, "tid": 1, '
                 '"ts": 5086675265299.540, "dur": 10.001},\n'
                 '{"ph": "X", "cat": "cpu_op", "name": "aten::relu", "pid": 1, "tid": 1, '
                 '"ts": 5086675265300.541, "dur": 9.000},\n'
                 '{"ph": "X", "cat": "cpu_op", "name": "aten::add", "pid": 1, "tid": 1, '
                 '"ts": 5086675265309.541, "dur": 1}]}')
    ev = events.from_chrome_trace(p)
    assert ev.start.tolist() == [5086675265299540, 5086675265300541, 5086675265309541]
    assert ev.end.tolist() == [5086675265309541, 5086675265309541, 5086675265310541]
    t = events.tree(ev)
    assert t.parent.tolist() == [-1, 0, -1]


@pytest.mark.parametrize("text,match", [
    ('{"traceEvents": [{"ph": "X", "name": "a", "ts": 1, "dur": 2', "truncated|not valid"),
    ('{"traceEvents": [{"ph": "X", "name": "a" "ts": 1}]}', "not valid trace JSON"),
    ('{"something": 1}', "no traceEvents"),
    ('{"traceEvents": []}', "no CPU events"),
])
def test_bad_trace_files_fail_with_one_line(tmp_path, text, match):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(GenprofError, match=match) as e:
        events.from_chrome_trace(p)
    assert "\n" not in str(e.value)


def test_missing_trace_file(tmp_path):
    with pytest.raises(GenprofError, match="not found"):
        events.from_chrome_trace(tmp_path / "nope.json")


def test_trace_mode_reports_profiler_cost(tmp_path):
    res = api.run("llm", out=tmp_path, size="tiny", repeats=1, warmup=0, mode="trace", threads=1)
    prof = res.meta["summary"]["profiler"]
    assert prof["events"] > 100 and prof["collect_s"] > 0 and prof["analyze_s"] > 0


def test_peak_memory_mark_nests():
    """Each monitor's peak is the largest RSS while it ran, also when an inner one resets the kernel's mark."""
    import psutil

    if not reset_hwm():
        pytest.skip("the kernel refuses to reset the peak-RSS mark here (the sampler is used instead)")

    rss = psutil.Process().memory_info
    with MemoryMonitor(torch.device("cpu")) as outer:
        a = np.ones(50_000_000)  # 400 MB touched (far above what other threads of the process may add meanwhile)
        with_a = rss().rss
        del a
        with MemoryMonitor(torch.device("cpu")) as inner:
            b = np.ones(2_500_000)  # 20 MB
            with_b = rss().rss
            del b
    assert outer.result()["rss_peak_method"] == "VmHWM"
    slack = 4 << 20  # the kernel batches RSS counters per thread (up to a few hundred kB off)
    assert outer.peak_rss >= with_a - slack  # the inner reset did not hide the outer peak
    assert with_b - slack <= inner.peak_rss < with_a - 200e6  # the inner one saw its own peak, not the outer one's


def test_a_run_split_into_profiler_sessions_gives_the_table_of_one_session(tmp_path, monkeypatch):
    """Trace mode ends a profiler session between steps once it has grown the process enough (bounded
    memory); with the bound at 0 every step ends one. The rows must be those of a single session."""
    import genprof
    from genprof.profiler import session

    one = genprof.run("llm", size="tiny", tokens=4, repeats=2, warmup=1, out=tmp_path, record_trace=True)
    monkeypatch.setattr(session, "SESSION_BYTES", 0)
    many = genprof.run("llm", size="tiny", tokens=4, repeats=2, warmup=1, out=tmp_path)
    assert one.ok and many.ok, (one.meta.get("traceback"), many.meta.get("traceback"))
    assert one.meta["summary"]["profiler"]["sessions"] == 1
    assert many.meta["summary"]["profiler"]["sessions"] == 2 * (1 + 4)  # per repeat: prefill, then each step
    keys = ["repeat", "phase", "step", "module", "op", "input_shapes"]
    a, b = (r.ops[r.ops["op"] != "[overhead]"].groupby(keys)[["calls", "flops", "bytes"]].sum()
            for r in (one, many))
    pd.testing.assert_frame_equal(a, b)
    pa, pb = (r.phases.groupby(["repeat", "phase", "step"]).size() for r in (one, many))
    pd.testing.assert_series_equal(pa, pb)
