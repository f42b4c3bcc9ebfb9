"""Host time and overlap: the queue model against a call-by-call simulation, fused norms, host profiles,
the measuring command, and the kernel count against a TorchDispatchMode."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import genprof
from genprof.roofline import overlap
from genprof.roofline.hardware import HardwareProfile
from genprof.roofline.host import HostProfile, load_host

# ridge 10 FLOP/B; 1 s per 10 bytes; every kernel at least 0.5 s on the device
TOY = HardwareProfile("toy", "toy", "gpu", {"fp32": 100.0, "tf32": 100.0, "bf16": 100.0}, 10.0, launch_s=0.5)
HOST = HostProfile("h", "toy cpu", {"aten::add": 1.0, "aten::mm": 3.0, "aten::view": 0.25, "aten::layer_norm": 2.0},
                   default_op_s=1.5, python_s={"w": 0.75}, default_python_s=9.0, launch_s=0.5, graph_replay_s=4.0)


def _ops(rows):
    base = dict(run_id="r", workload="w", size="tiny", optimizations="baseline", repeat=0, phase="p", step=0,
                part="", module="m", module_type="", attention_kind="", calls=1, total_time_s=0.0, flops=0,
                bytes=0, seq_q=0, seq_kv=0, batch_heads=0, head_dim=0, input_shapes="", family="Elementwise")
    return pd.DataFrame([{**base, **r} for r in rows])


def _reference(ops: pd.DataFrame, regime: str) -> dict[tuple, float]:
    """Call by call: the host issues each call after its host time; a kernel starts when issued and the
    previous kernel is done, and runs max(bytes / 10, 0.5) s; a step ends when host and device are done."""
    ends = {}
    for key, g in ops.groupby(["repeat", "phase", "step"], sort=False):
        host = HOST.graph_replay_s if regime == "graphs" else 0.0
        dev = 0.0
        for r in g.itertuples():
            module = r.family == "Overhead"
            kernel = not module and (r.bytes > 0 or r.flops > 0)
            for _ in range(int(r.calls)):
                if regime == "eager":
                    host += HOST.python_s["w"] if module else HOST.op_s.get(r.op, 1.5) + (0.5 if kernel else 0.0)
                if kernel:
                    dev = max(dev, host) + max(r.bytes / r.calls / 10.0, 0.5)
        ends[key] = max(host, dev)
    return ends


STEPS = _ops([
    # step 0: host-bound start (small kernels), then a long kernel the host outruns
    dict(op="[overhead]", family="Overhead", calls=2), dict(op="aten::add", bytes=6, calls=3),
    dict(op="aten::view", calls=2), dict(op="aten::mm", family="Linear", flops=200, bytes=80, calls=1),
    dict(op="aten::add", bytes=2, calls=4),
    # step 1: device-bound
    dict(op="aten::mm", family="Linear", flops=500, bytes=300, calls=2, step=1),
    dict(op="[overhead]", family="Overhead", calls=1, step=1), dict(op="aten::add", bytes=40, calls=1, step=1),
    # a phase without steps
    dict(op="aten::add", bytes=1, calls=5, phase="q", step=-1),
])


@pytest.mark.parametrize("regime", ["eager", "graphs"])
def test_queue_model_equals_a_call_by_call_simulation(regime):
    seg = overlap.segments(STEPS, TOY, HOST, regime)
    want = _reference(STEPS, regime)
    got = {(r.repeat, r.phase, r.step): r.combined_s for r in seg.itertuples()}
    assert got == pytest.approx(want)
    # device time: the roofline as the projection has it; busy time: every kernel at least the floor
    s0 = seg[(seg["phase"] == "p") & (seg["step"] == 0)].iloc[0]
    assert s0["device_s"] == pytest.approx(3 * 0.2 + 8 + 4 * 0.05)  # mm: 80 B -> 8 s (compute 2 s)
    assert s0["busy_s"] == pytest.approx(3 * 0.5 + 8 + 4 * 0.5)
    assert s0["kernels"] == 8 and s0["ops"] == 10
    if regime == "eager":
        assert s0["host_s"] == pytest.approx(2 * 0.75 + 3 * 1.5 + 2 * 0.25 + 3.5 + 4 * 1.5)


def test_verdicts_host_bound_eager_device_bound_with_graphs():
    ph = overlap.phases(STEPS, TOY, HOST).set_index(["phase", "regime"])
    assert ph.loc[("q", "eager"), "bound"] == "host"  # five tiny adds: 7.5 s of host, 2.5 s of device
    assert ph.loc[("q", "eager"), "ratio"] == pytest.approx(7.5 / 2.5)
    assert ph.loc[("p", "graphs"), "bound"] == "device"
    assert ph.loc[("p", "eager"), "steps"] == 2 and ph.loc[("p", "eager"), "kernels_per_step"] == 5.5


def test_fused_norm_is_one_kernel_per_norm_call_at_its_largest_pass():
    norm = dict(module="norm", family="Normalization")
    ops = _ops([dict(op="aten::mm", family="Linear", flops=100, bytes=20),
                dict(op="[overhead]", family="Overhead", module="norm"),
                dict(op="aten::pow", bytes=30, **norm), dict(op="aten::mean", bytes=12, **norm),
                dict(op="aten::view", **norm), dict(op="aten::mul", bytes=20, calls=2, **norm),
                dict(op="aten::add", bytes=10)])
    line = overlap.timeline(ops, TOY)
    fused = overlap.fuse_norms(line)
    assert list(fused["op"]) == ["aten::mm", "[module call]", "[fused norm]", "aten::add"]
    f = fused[fused["op"] == "[fused norm]"].iloc[0]
    assert f["calls"] == 1 and f["time_s"] == pytest.approx(3.0) and f["bytes"] == 30
    eager, fused_seg = (overlap.segments(ops, TOY, HOST, r).iloc[0] for r in ("eager", "eager+fused-norm"))
    # host: four norm ops (pow, mean, view, 2 x mul) become one fused norm call priced as a layer_norm
    assert eager["host_s"] - fused_seg["host_s"] == pytest.approx((1.5 + 1.5 + 0.25 + 2 * 1.5 + 4 * 0.5) - (2.0 + 0.5))


def test_host_profile_loads_by_name_and_refuses_unknown_ones(tmp_path):
    prof = load_host()
    assert prof.cpu and prof.op_s["aten::linear"] > 0 and prof.measured_on["threads"] == 1
    assert "load_average_before" in prof.measured_on and prof.launch_s > 0
    with pytest.raises(genprof.GenprofError, match=r"unknown host profile 'xeon'; valid: a JSON file or one of"):
        load_host("xeon")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x"}))
    with pytest.raises(genprof.GenprofError, match="is not a host profile"):
        load_host(bad)


def test_host_profile_command_measures_and_writes_a_profile(tmp_path, monkeypatch):
    from conftest import run_cli_inproc
    from genprof.roofline import hardware

    local = HardwareProfile("local", "test cpu", "cpu", {"fp32": 1e11, "tf32": 1e11, "bf16": 1e11}, 2e10)
    monkeypatch.setattr(hardware, "measure_local", lambda **kw: local)  # this CPU's peaks: not what is tested
    out = tmp_path / "host.json"
    r = run_cli_inproc("host-profile", "--only", "phenaki", "--repeats", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    prof = load_host(out)
    assert prof.measured_on["workloads"] == ["phenaki"] and prof.measured_on["threads"] == 1
    assert prof.op_s["aten::linear"] > 0 and "phenaki" in prof.python_s
    assert "left_out_error" in r.stdout and str(out) in r.stdout
    r = run_cli_inproc("host-profile", "--only", "gpt4")
    assert r.returncode == 2 and r.stderr.strip().startswith("error: unknown suite workload 'gpt4'")


def test_kernels_per_step_match_the_ops_a_dispatch_mode_sees(tmp_path):
    """Independent count: the ATen ops a TorchDispatchMode sees in one bfloat16 decode step whose output is
    new memory (not a view or an input returned as it is), against the projection's kernels."""
    import contextlib

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from genprof import api
    from genprof.roofline import PROFILES

    def storages(x):
        return {t.untyped_storage().data_ptr() for t in (x if isinstance(x, (list, tuple)) else [x])
                if isinstance(t, torch.Tensor)}

    class Count(TorchDispatchMode):
        kernels = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            new = storages(out)
            if new and not new & set().union(set(), *(storages(a) for a in args)):
                Count.kernels += 1
            return out

    class StepOne:
        phase_name = ""

        @contextlib.contextmanager
        def phase(self, name):
            self.phase_name = name
            yield

        @contextlib.contextmanager
        def step(self, index):
            with Count() if (self.phase_name, index) == ("decode", 1) else contextlib.nullcontext():
                yield

    built = api.build(api.make_spec("llm", size="tiny", device="cpu", dtype="bfloat16", tokens=2))
    with torch.inference_mode():
        built.run(StepOne())
    res = genprof.run("llm", size="tiny", device="cpu", dtype="bfloat16", tokens=2, repeats=1, warmup=0, out=tmp_path)
    seg = overlap.segments(res.ops, PROFILES["h100"], load_host(), dtype="bfloat16")
    table = seg.loc[(seg["phase"] == "decode") & (seg["step"] == 1), "kernels"].iloc[0]
    assert Count.kernels > 90 and table == Count.kernels
