"""Reading and counting with forked helper processes gives what one process gives, or falls back to it.

A trace file is read by two processes from both ends of its events array (tracefile._read_from_both_ends);
the op table's distinct signatures are counted by several (forked.split). Both are checked against the one
process path on the GPU traces of tests/data/traces, with slices small enough that every trace is cut many
times, and on traces written to break them: a `}, {` inside a string (a slice that does not parse alone),
a helper that dies, a helper that may keep only the last slices.
"""

from __future__ import annotations

import gzip
import json
import os
import time

import numpy as np
import pandas as pd
import psutil
import pytest

from conftest import TRACES
from genprof.profiler import events, forked, optable, tracefile

FIXTURES = sorted(TRACES.glob("*.json.gz"))
COLUMNS = ("name_id", "thread", "start", "end", "corr", "kernel_corr", "kernel_ns", "kernel_start", "kernel_kind",
           "kernel_device", "kernel_stream", "kernel_name_id")


def assert_same_events(a: events.EventTable, b: events.EventTable) -> None:
    for col in COLUMNS:
        assert np.array_equal(getattr(a, col), getattr(b, col)), col
    assert a.names == b.names and a.name_cat == b.name_cat and a.kernel_names == b.kernel_names
    assert a.args(range(len(a))) == b.args(range(len(b))) and a.meta == b.meta


@pytest.fixture
def small_slices(monkeypatch):
    """Hundreds of slices even in a small trace, and a front that starts late enough for the helper to have
    read the file and claimed slices from the back (on a trace this small the front would take them all)."""
    monkeypatch.setattr(tracefile, "_SLICE", 4 << 10)
    front = tracefile._Claims.front

    def late(self, index):
        if index == 0:
            time.sleep(0.3)
        return front(self, index)

    monkeypatch.setattr(tracefile._Claims, "front", late)


@pytest.fixture(autouse=True)
def one_python_thread():
    """genprof forks only where no other Python thread runs: tqdm's idle monitor thread, which progress bars
    of earlier tests start, is stopped first."""
    import threading

    try:
        from tqdm import tqdm
        from tqdm._monitor import TMonitor
    except ImportError:
        pass
    else:
        tqdm.monitor_interval = 0
        for t in threading.enumerate():
            if isinstance(t, TMonitor):  # one per tqdm class that started one (tqdm.auto's, ...)
                t.exit()
                t.tqdm_cls.monitor = None
    others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    assert not others, f"other Python threads run, so nothing forks: {others}"


def no_children_left() -> bool:
    return not psutil.Process().children()


@pytest.mark.parametrize("trace", FIXTURES, ids=lambda p: p.name)
def test_two_processes_read_what_one_reads(trace, small_slices):
    one = tracefile.read(trace, processes=1)
    two = tracefile.read(trace, processes=2)
    assert two.reading["processes"] == 2 and "fallback" not in two.reading, two.reading
    assert 0 < two.reading["helper_slices"] < two.reading["slices"]  # each side decoded some
    assert_same_events(one, two)
    assert no_children_left()


def test_a_helper_that_keeps_only_the_last_slices(monkeypatch, small_slices):
    """The helper keeps at most HELPER_TEXT characters of slices from the back: the front reads the rest."""
    trace = TRACES / "a100-ddp-step1011.json.gz"
    monkeypatch.setattr(tracefile, "HELPER_TEXT", 16 << 10)
    two = tracefile.read(trace, processes=2)
    assert 0 < two.reading["helper_slices"] <= 8 and two.reading["slices"] > 50, two.reading  # 16 kB of 4 kB slices
    assert_same_events(tracefile.read(trace, processes=1), two)


def write(path, events_list, **top) -> None:
    with gzip.open(path, "wt") as f:
        json.dump({"schemaVersion": 1, **top, "traceEvents": events_list, "traceName": "t"}, f, indent=1)


def op(i: int, name: str = "aten::add") -> dict:
    return {"ph": "X", "cat": "cpu_op", "name": name, "pid": 1, "tid": 1, "ts": 10 * i, "dur": 5,
            "args": {"Input Dims": [[4, 4], [4, 4]], "Input type": ["float", "float"]}}


def test_a_cut_inside_a_string_falls_back_to_one_pass(tmp_path, small_slices):
    """A name holding `}, {` cuts a slice inside a string: that slice does not parse alone, and the file is
    read again in one pass, which decodes it object by object."""
    evs = [op(i, "aten::add" if i % 97 else 'odd"}, {"name') for i in range(3000)]
    trace = tmp_path / "odd.json.gz"
    write(trace, evs, deviceProperties=[{"id": 0, "name": "X"}])
    two = tracefile.read(trace, processes=2)
    assert "does not parse alone" in two.reading.get("fallback", ""), two.reading
    one = tracefile.read(trace, processes=1)
    assert_same_events(one, two)
    assert 'odd"}, {"name' in one.names and len(one) == 3000 and one.meta["deviceProperties"][0]["name"] == "X"
    assert no_children_left()


def test_a_helper_that_dies_costs_time_not_events(tmp_path, monkeypatch, small_slices):
    trace = tmp_path / "t.json.gz"
    write(trace, [op(i) for i in range(2000)])
    def claim_the_last_slice_and_die(path, claims):
        claims.back(sum(1 for _ in tracefile._event_chunks(path, {}, decode=False)) - 1)
        os._exit(3)

    monkeypatch.setattr(tracefile, "_helper", claim_the_last_slice_and_die)
    two = tracefile.read(trace, processes=2)
    assert "helper ended without its columns" in two.reading["fallback"] and len(two) == 2000
    assert no_children_left()


def test_a_front_that_reads_every_slice_does_not_wait_for_the_helper(tmp_path, monkeypatch):
    trace = tmp_path / "t.json.gz"
    write(trace, [op(i) for i in range(200)])
    monkeypatch.setattr(tracefile, "_helper", lambda *a: time.sleep(60))  # claims nothing, never ends
    t0 = time.perf_counter()
    two = tracefile.read(trace, processes=2)
    assert two.reading["helper_slices"] == 0 and "fallback" not in two.reading and len(two) == 200
    assert time.perf_counter() - t0 < 10 and no_children_left()


def test_a_name_keeps_the_category_of_its_first_event(tmp_path, small_slices):
    """The helper decodes its slices last first: a name whose events have two categories in its part takes
    the category of the first one in file order, as one pass does."""
    evs = [op(i) for i in range(3000)]
    evs[2200] = {**op(2200, "step"), "cat": "cpu_op"}
    evs[2900] = {**op(2900, "step"), "cat": "user_annotation"}
    trace = tmp_path / "cats.json.gz"
    write(trace, evs)
    one, two = tracefile.read(trace, processes=1), tracefile.read(trace, processes=2)
    assert two.reading["helper_slices"] > two.reading["slices"] // 2  # both events in the helper's part
    assert_same_events(one, two)
    assert one.name_cat[one.names.index("step")] == "cpu_op"


def test_forked_split_computes_what_one_process_computes():
    parent = os.getpid()
    assert forked.split(lambda part: [x * x for x in part], [[1, 2], [3], [4, 5]]) == [[1, 4], [9], [16, 25]]

    def fails_in_a_child(part):
        if os.getpid() != parent:
            raise RuntimeError("a child that fails")
        return sum(part)

    assert forked.split(fails_in_a_child, [[1, 2], [3, 4]]) == [3, 7]  # its part computed here again
    assert no_children_left()


def test_a_child_that_takes_too_long_is_not_waited_for(monkeypatch):
    parent = os.getpid()
    monkeypatch.setattr(forked, "WAIT_S", 0.5)

    def slow_in_a_child(part):
        if os.getpid() != parent:
            time.sleep(30)
        return sum(part)

    t0 = time.perf_counter()
    assert forked.split(slow_in_a_child, [[1], [2, 3]]) == [1, 5]
    assert time.perf_counter() - t0 < 10 and no_children_left()


@pytest.mark.parametrize("trace", [TRACES / "a100-ddp-step1011.json.gz", TRACES / "gpu-sampled.json.gz"],
                         ids=lambda p: p.name)
def test_counting_shared_out_gives_the_same_op_table(trace, monkeypatch):
    from genprof.profiler import replay

    ev = events.from_chrome_trace(trace)
    monkeypatch.setattr(optable, "COUNT_SHARE", 10 ** 9)
    alone = optable.build_tables(ev, {}, {}).ops
    replay._replay.cache_clear()
    before = forked.STATS["children"]
    monkeypatch.setattr(optable, "COUNT_SHARE", 8)
    processes = forked.processes  # two processes share the counting, however many CPUs this machine has
    monkeypatch.setattr(forked, "processes", lambda want, limit=True: processes(min(want, 2), limit=False))
    shared = optable.build_tables(ev, {}, {}).ops
    assert forked.STATS["children"] > before  # the split did run in a child
    pd.testing.assert_frame_equal(alone, shared, check_exact=True)
    assert alone["flops"].sum() > 0
    assert no_children_left()
