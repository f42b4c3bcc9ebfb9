"""Traces recorded by others on real GPUs (tests/data/traces, and ../shared/traces where present): GPU time is
conserved and goes where an independent correlation-id attribution (plain json:
tests/independent_attribution.py) puts it; no wrapper is an op; the reference builder agrees; scopes, families and streams on a hand-written trace; the
`genprof import` command and the commands that read its runs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import reference_optable as ref
from conftest import TRACES, run_cli
from genprof import importer, load_runs
from genprof.cli import app
from genprof.errors import GenprofError
from genprof.profiler import events, kernels, naming, optable
from independent_attribution import WRAPPER, Independent

FIXTURES = sorted(TRACES.glob("*.json.gz"))
SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces"  # the whole traces, beside a checkout that has them
CONTRACT = FIXTURES + sorted(SHARED.glob("*.json.gz"))


@pytest.mark.parametrize("trace", CONTRACT, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_gpu_time_is_conserved_and_goes_to_the_launching_op(trace, tmp_path):
    ops = importer.import_trace(trace, tmp_path).ops
    ind = Independent(trace)
    assert ind.total_s > 0
    assert ops["device_time_s"].sum() == pytest.approx(ind.total_s, rel=1e-9)  # every device event, once
    assert ops.loc[ops["op"].isin(ind.wrappers), "device_time_s"].sum() == 0  # a wrapper is never an op
    assert not ops["op"].map(lambda s: bool(WRAPPER.search(s))).any()
    top = ind.top_aten(5)
    got = ops.groupby("op")["device_time_s"].sum()
    assert top
    for op, t in top:
        assert got.get(op, 0.0) == pytest.approx(t, rel=0.03), op


@pytest.mark.parametrize("trace", FIXTURES, ids=lambda p: p.name)
def test_vectorized_tables_equal_the_reference(trace):
    expect, expect_phases, expect_kernels = ref.build_all(ref.from_chrome_trace(trace), {}, {})
    got = optable.build_tables(events.from_chrome_trace(trace), {}, {})
    ref.assert_same_table(expect, got.ops)
    ref.assert_same_phases(expect_phases, got.phases)
    kk = ["repeat", "kernel", "kind", "device", "stream", "op", "family"]
    ka, kb = (k.groupby(kk)[["calls", "time_s"]].sum() for k in (expect_kernels, got.kernels))
    pd.testing.assert_frame_equal(ka, kb, check_dtype=False)


def x(name, cat, ts, dur, tid=1, pid=1, **args):
    return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur, "args": args}


def write_trace(path: Path) -> None:
    """A training step with what real traces hold: ProfilerStep, a `## forward ##` annotation, an nn.Module range,
    a compiled region with an extern GEMM and a Triton kernel (launched through the driver), an NCCL kernel
    launched outside any op on its own stream, an optimizer step, autograd work on its own thread, and a
    kernel whose launch the trace does not hold."""
    ev = [
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 1, "args": {"name": "main"}},
        x("ProfilerStep#3", "user_annotation", 0, 1000),
        x("## forward ##", "user_annotation", 10, 490),
        x("nn.Module: Linear_0", "python_function", 20, 180),
        x("aten::linear", "cpu_op", 30, 120, **{"Input Dims": [[4, 8], [16, 8], [16]], "Input type": ["float"] * 3}),
        x("aten::addmm", "cpu_op", 40, 100),
        x("cudaLaunchKernel", "cuda_runtime", 50, 5, correlation=1),
        x("CompiledFunction", "cpu_op", 210, 190),
        x("aten::mm", "cpu_op", 220, 40),
        x("cudaLaunchKernel", "cuda_runtime", 225, 5, correlation=2),
        x("triton_poi_fused_add_0", "cpu_op", 270, 30),
        x("cuLaunchKernel", "cuda_driver", 275, 5, correlation=3),
        x("nccl:all_reduce", "user_annotation", 410, 40),
        x("record_param_comms", "cpu_op", 415, 30),
        x("cudaLaunchKernel", "cuda_runtime", 420, 5, correlation=4),
        x("Optimizer.step#Adam.step", "user_annotation", 600, 300),
        x("aten::_foreach_add_", "cpu_op", 610, 90),
        x("cudaLaunchKernel", "cuda_runtime", 620, 5, correlation=5),
        x("autograd::engine::evaluate_function: MmBackward0", "cpu_op", 520, 70, tid=2),
        x("MmBackward0", "cpu_op", 521, 68, tid=2),
        x("aten::mm", "cpu_op", 530, 50, tid=2),
        x("cudaLaunchKernel", "cuda_runtime", 535, 5, tid=2, correlation=6),
        x("void at::native::vectorized_elementwise_kernel<4>(int)", "kernel", 5, 10, pid=0, tid=7, correlation=99,
          stream=7, device=0),
        x("sm80_xmma_gemm_f32f32_tn(Params)", "kernel", 100, 20, pid=0, tid=7, correlation=1, stream=7, device=0),
        x("void cutlass::Kernel<cutlass_80_tensorop_s1688gemm_64x64>(Params)", "kernel", 300, 40, pid=0, tid=7,
          correlation=2, stream=7, device=0),
        x("triton_poi_fused_add_0", "kernel", 350, 10, pid=0, tid=7, correlation=3, stream=7, device=0),
        x("ncclDevKernel_AllReduce_Sum_f32_RING_LL(ncclDevComm*)", "kernel", 300, 200, pid=0, tid=21,
          correlation=4, stream=21, device=0),
        x("ampere_sgemm_32x32_sliced1x4_tn", "kernel", 600, 40, pid=0, tid=7, correlation=6, stream=7, device=0),
        x("void multi_tensor_apply_kernel<AdamFunctor<float>>(int)", "kernel", 700, 20, pid=0, tid=7,
          correlation=5, stream=7, device=0),
        {"ph": "s", "id": 1, "pid": 1, "tid": 1, "ts": 50, "cat": "ac2g", "name": "ac2g"},
    ]
    path.write_text(json.dumps({"schemaVersion": 1, "deviceProperties": [{"id": 0, "name": "NVIDIA H100"}],
                                "distributedInfo": {"rank": 2, "world_size": 4}, "traceEvents": ev}))


def test_scopes_families_and_streams_of_a_hand_written_trace(tmp_path):
    p = tmp_path / "step.json"
    write_trace(p)
    res = importer.import_trace(p, tmp_path / "runs")
    ops = res.ops.set_index(["scope", "op"])
    row = lambda scope, op: ops.loc[(scope, op)]  # noqa: E731
    linear = row("## forward ##", "aten::linear")
    assert (linear["phase"], linear["step"], linear["module"], linear["module_type"], linear["family"]) == \
        ("forward", 3, "Linear_0", "Linear", "Linear")
    assert linear["device_time_s"] == pytest.approx(20e-6) and linear["flops"] == 2 * 4 * 8 * 16
    assert row("CompiledFunction", "aten::mm")["family"] == "Linear"
    triton = row("triton_poi_fused_add_0", "triton_poi_fused_add_0")  # a kernel launched outside any op
    assert (triton["family"], triton["device_time_s"]) == ("Compiled", pytest.approx(10e-6))
    nccl = row("record_param_comms", "ncclDevKernel_AllReduce_Sum_f32_RING_LL")
    assert (nccl["family"], nccl["phase"], nccl["calls"]) == ("Communication", "forward", 1)
    opt = row("Optimizer.step#Adam.step", "aten::_foreach_add_")
    assert (opt["family"], opt["phase"], opt["device_time_s"]) == ("Optimizer", "optimizer", pytest.approx(20e-6))
    back = row("MmBackward0", "aten::mm")
    assert (back["phase"], back["step"], back["family"]) == ("backward", 3, "Linear")
    orphan = row(optable.NO_LAUNCH, "at::native::vectorized_elementwise_kernel<4>")
    assert (orphan["step"], orphan["family"], orphan["device_time_s"]) == (3, "Elementwise", pytest.approx(10e-6))
    assert not res.ops["op"].str.contains("ProfilerStep|##|nn.Module|Optimizer|evaluate_function|Backward").any()
    assert res.ops["device_time_s"].sum() == pytest.approx(340e-6)
    assert res.ops["total_time_s"].sum() == pytest.approx(1070e-6)  # both threads' CPU time, each event once
    gpu = res.meta["summary"]["gpu"]["devices"]["0"]
    assert (gpu["sum_s"], gpu["busy_s"], gpu["overlap_s"]) == (pytest.approx(340e-6), pytest.approx(290e-6),
                                                              pytest.approx(50e-6))
    assert gpu["streams"]["21"]["busy_s"] == pytest.approx(200e-6)
    src = res.meta["source"]
    assert (src["rank"], src["world_size"], src["device"]["name"], src["time_span_s"]) == \
        (2, 4, "NVIDIA H100", pytest.approx(1000e-6))
    phases = pd.read_parquet(res.path / "phases.parquet").set_index(["phase", "step"])["time_s"]
    assert phases[("total", -1)] == pytest.approx(1000e-6) and phases[("total", 3)] == pytest.approx(1000e-6)
    assert phases[("forward", 3)] == pytest.approx(490e-6)
    k = pd.read_parquet(res.path / "kernels.parquet")
    assert k["time_s"].sum() == pytest.approx(340e-6)
    assert k.set_index("kernel").loc["sm80_xmma_gemm_f32f32_tn(Params)", "op"] == "aten::linear"


@pytest.mark.parametrize("name,family", [
    ("void cutlass::Kernel<cutlass_80_tensorop_s1688gemm_64x64_16x6_nn_align4>(Params)", "Linear"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "Linear"),
    ("ampere_sgemm_32x32_sliced1x4_tn", "Linear"),
    ("Cijk_Alik_Bljk_SB_Bias_AS_SAV_UserArgs_MT64x16x32", "Linear"),
    ("triton_tem_fused_mm_0", "Linear"),
    ("sm80_xmma_fprop_implicit_gemm_indexed_tf32f32_tf32f32_f32_nhwckrsc_nchw", "Convolution"),
    ("cudnn_ampere_scudnn_128x64_relu_xregs_large_nn_v1", "Convolution"),
    ("void flash_fwd_kernel<Flash_fwd_kernel_traits<128, 64>>(Flash_fwd_params)", "Attention"),
    ("fmha_cutlassF_f16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel)", "Attention"),
    ("ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t(ncclWorkElem)", "Communication"),
    ("triton_poi_fused_convolution_relu_0", "Compiled"),
    ("Memcpy HtoD (Pinned -> Device)", "Memory"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>(int)", "Elementwise"),
    ("void bounds_check_indices_kernel<long>(at::GenericPackedTensorAccessor<long, 1ul>, cublasLt_t)", "Other"),
])
def test_kernel_names_say_the_family(name, family):
    assert kernels.family(name) == family


@pytest.mark.parametrize("name,cat,kind", [
    ("aten::mm", "cpu_op", naming.OP), ("c10d::allreduce_", "cpu_op", naming.OP),
    ("fbgemm::permute_sparse_features", "cpu_op", naming.OP), ("FlashAttnFunc", "cpu_op", naming.OP),
    ("lazyllm::score", "user_annotation", naming.SCOPE), ("record_param_comms", "cpu_op", naming.SCOPE),
    ("ProfilerStep#12", "user_annotation", naming.F_STEP), ("## forward ##", "user_annotation", naming.F_PHASE),
    ("autograd::engine::evaluate_function: AddmmBackward0", "cpu_op", naming.AUTOGRAD),
    ("AddmmBackward0", "cpu_op", naming.AUTOGRAD), ("torch::autograd::AccumulateGrad", "cpu_op", naming.AUTOGRAD),
    ("torch::distributed::reducer::mul_out", "cpu_op", naming.SCOPE),
    ("Optimizer.step#FusedAdam.step", "user_annotation", naming.OPTIMIZER),
    ("CompiledFunctionBackward", "cpu_op", naming.COMPILED), ("Torch-Compiled Region: 0/0", "cpu_op", naming.COMPILED),
    ("nn.Module: Linear_0", "python_function", naming.F_MODULE), ("cudaLaunchKernel", "cuda_runtime", naming.RUNTIME),
    ("genprof.module::unet.conv_in", "cpu_op", naming.MODULE),
])
def test_names_are_ops_scopes_or_launches(name, cat, kind):
    assert naming.classify_name(name, cat)[0] == kind


def test_import_writes_runs_that_show_compare_and_project_read(imported_runs):
    meta = json.loads((imported_runs["ddp"] / "run.json").read_text())
    src = meta["source"]
    assert src["device"]["name"] == "NVIDIA A100-PG509-200" and src["device"]["compute_capability"] == "8.0"
    assert (src["rank"], src["world_size"], src["backend"]) == (3, 8, "nccl") and src["time_span_s"] > 0.07
    assert src["file"].endswith("a100-ddp-step1011.json.gz") and src["torch"] is None  # the trace does not say
    assert src["start_utc"].startswith("2022-08-22")
    for name in ("ops.parquet", "phases.parquet", "kernels.parquet"):
        assert (imported_runs["ddp"] / name).is_file()
    ranks = [json.loads((imported_runs[r] / "run.json").read_text())["source"]["rank"] for r in ("rank0", "rank1")]
    assert ranks == [0, 1]
    k = load_runs(imported_runs["out"], "kernels")
    assert k["run_id"].nunique() == 3 and k["time_s"].sum() > 0
    show = run_cli("show", str(imported_runs["ddp"]))
    assert show.returncode == 0, show.stderr
    for text in ("GPU time by operator family", "Communication", "busy", "backward", "forward"):
        assert text in show.stdout
    # compare and project read them too (the same commands, in process: one interpreter start less each)
    cli = CliRunner()
    cmp_ = cli.invoke(app, ["compare", str(imported_runs["rank0"]), str(imported_runs["rank1"])])
    assert cmp_.exit_code == 0 and "per operator family" in cmp_.stdout, cmp_.stdout
    proj = cli.invoke(app, ["project", str(imported_runs["ddp"]), "--hw", "a100"])
    assert proj.exit_code == 0 and "projection on" in proj.stdout and "Linear" in proj.stdout, proj.stdout


def test_import_of_a_bad_path_is_one_line(tmp_path):
    r = run_cli("import", str(tmp_path / "missing.json.gz"), "--out", str(tmp_path / "runs"))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"error: trace file not found: "
                                                                  f"{tmp_path / 'missing.json.gz'}"], r.stderr
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.json").write_text('{"a": 1}')
    for path, needle in ((tmp_path / "empty", "holds no trace files"), (tmp_path / "x.json", "no traceEvents")):
        with pytest.raises(GenprofError, match=needle) as e:
            importer.import_traces([path], tmp_path / "runs")
        assert "\n" not in str(e.value)
    assert not (tmp_path / "runs").exists()


def test_reading_in_small_blocks_changes_nothing(monkeypatch):
    """The reader decodes a block of events per json call, cut at the last `}, {`: with 1 kB blocks (hundreds of
    cuts, some inside strings and nested objects, events longer than a block) it reads what it reads whole."""
    from genprof.profiler import tracefile

    whole = tracefile.read(TRACES / "mi250-rocm.json.gz")
    monkeypatch.setattr(tracefile, "_BLOCK", 1 << 10)
    small = tracefile.read(TRACES / "mi250-rocm.json.gz")
    for col in ("name_id", "thread", "start", "end", "corr", "kernel_corr", "kernel_ns", "kernel_start",
                "kernel_stream", "kernel_name_id"):
        assert (getattr(whole, col) == getattr(small, col)).all(), col
    assert whole.names == small.names and whole.kernel_names == small.kernel_names
    assert whole.args(range(len(whole))) == small.args(range(len(small))) and whole.meta == small.meta
