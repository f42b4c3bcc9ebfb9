"""The GPU check behind scripts/gpu_check.sh: environment, timers, roofline peaks, traced runs,
attention backends, host cost per op, and the eager decode rate of `llm` at paper size.

`host_cost_per_op` measures what the host-aware projection stands in for
(docs/roofline.md, "host time"): the host time of one dispatched op on this
device (a loop of small ops with no synchronization inside: the host is the
bottleneck) beside the same op on this host's CPU with tensors as small (the
path genprof's host profile measures, genprof.study.host) and on the meta device. `host_profile` writes this host's profile (OUT/host-profile.json,
`genprof host-profile --only llm`). `llm_decode_eager` times `llm` at
`--decode-size` (paper: Llama-2-7B, bf16, batch 1) decoding in eager mode: the
tokens/s to set beside the projection of the same step.

`roofline_peaks` measures what the GPU profiles' efficiencies rest on
(genprof/roofline/hardware.py): a bf16 8192^3 matmul in TFLOP/s and the
device-to-device copy bandwidth of a 2 GiB tensor in TB/s (bytes read + written),
each the median of several timed samples after a warm-up, beside the figures
the H200 profile carries from an earlier run.

Each section is independent: one that fails prints its reason and the rest go
on. Results: OUT/gpu_check.json plus the run directories under OUT/runs.
Runs on the CPU too (`--device cpu`), which is how it is checked without a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import traceback
from pathlib import Path

import torch


def section(name, results):
    def wrap(fn):
        print(f"\n== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            results[name] = fn()
            print(json.dumps(results[name], indent=1, default=str)[:4000])
        except Exception as e:  # keep going: every section reports on its own
            results[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            print(results[name]["traceback"])
        print(f"({time.perf_counter() - t0:.1f} s)", flush=True)
        return fn
    return wrap


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu-check-out")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", default="small")
    ap.add_argument("--decode-size", default="paper", help="size of the eager decode run (tiny on a CPU)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(args.device)
    results: dict = {}

    @section("environment", results)
    def _env():
        from genprof import store
        return store.environment(args.device) | {"python_executable": platform.python_version()}

    @section("cuda_events_vs_wall", results)
    def _timers():
        from genprof.profiler.timers import make_timer, synchronize
        n = 4096 if dev.type == "cuda" else 512
        a = torch.randn(n, n, device=dev, dtype=torch.bfloat16 if dev.type == "cuda" else torch.float32)
        timer, rows = make_timer(dev), []
        for _ in range(3):
            a @ a
        for _ in range(10):
            synchronize(dev)
            w0 = time.perf_counter()
            s = timer.mark()
            for _ in range(10):
                a @ a
            e = timer.mark()
            timer.finish()
            wall = time.perf_counter() - w0
            rows.append((timer.elapsed_s(s, e), wall))
        ev = sorted(r[0] for r in rows)[5]
        wall = sorted(r[1] for r in rows)[5]
        return {"timer": timer.kind, "median_timer_s": ev, "median_wall_s": wall, "ratio": ev / wall,
                "matmul_tflops": 10 * 2 * n ** 3 / ev / 1e12}

    @section("roofline_peaks", results)
    def _peaks():
        from genprof.roofline.hardware import PROFILES
        from genprof.profiler.timers import synchronize
        cuda = dev.type == "cuda"
        n, dtype = (8192, torch.bfloat16) if cuda else (1024, torch.float32)
        copy_bytes = 2 * 2**30 if cuda else 64 * 2**20

        def median_s(fn, reps: int, samples: int = 7) -> float:
            for _ in range(3):  # warm-up
                fn()
            synchronize(dev)
            ts = []
            for _ in range(samples):
                t0 = time.perf_counter()
                for _ in range(reps):
                    fn()
                synchronize(dev)
                ts.append((time.perf_counter() - t0) / reps)
            return sorted(ts)[len(ts) // 2]

        def matmul_s() -> float:
            a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
            c = torch.empty(n, n, device=dev, dtype=dtype)
            return median_s(lambda: torch.mm(a, b, out=c), reps=10)

        def copy_s() -> float:
            src = torch.empty(copy_bytes // 4, device=dev, dtype=torch.float32).normal_()
            dst = torch.empty_like(src)
            return median_s(lambda: dst.copy_(src), reps=10)

        mm_s, cp_s = matmul_s(), copy_s()  # each frees its tensors on return
        tflops, tbps = 2 * n**3 / mm_s / 1e12, 2 * copy_bytes / cp_s / 1e12  # copy: read + write
        res = {"matmul": f"{n}^3 {str(dtype).replace('torch.', '')}", "matmul_s": mm_s, "matmul_tflops": tflops,
               "copy_gib": copy_bytes / 2**30, "copy_s": cp_s, "copy_tbps": tbps}
        h200 = PROFILES["h200"]
        res["h200_profile"] = {"reported_bf16_tflops": h200.measured_flops.get("bf16", 0) / 1e12,
                               "reported_copy_tbps": (h200.measured_bandwidth_Bps or 0) / 1e12}
        if cuda:  # the fractions of each GPU profile's datasheet peaks these reach
            res["fraction_of_datasheet"] = {
                name: {"eff_compute": tflops * 1e12 / PROFILES[name].peak_flops["bf16"],
                       "eff_memory": tbps * 1e12 / PROFILES[name].bandwidth_Bps} for name in ("a100", "h100", "h200")}
        print(f"matmul {res['matmul']}: {tflops:.4g} TFLOP/s; copy {res['copy_gib']:.3g} GiB: {tbps:.4g} TB/s "
              f"(read + written)", flush=True)
        return res

    @section("attention_backends", results)
    def _attn():
        from torch.nn.attention import SDPBackend, sdpa_kernel
        dtype = torch.float16 if dev.type == "cuda" else torch.float32
        q = torch.randn(2, 8, 4096, 64, device=dev, dtype=dtype)
        ref = torch.nn.functional.scaled_dot_product_attention(q, q, q)
        res = {}
        for b in (SDPBackend.MATH, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                  SDPBackend.CUDNN_ATTENTION):
            try:
                with sdpa_kernel(b):
                    for _ in range(2):
                        o = torch.nn.functional.scaled_dot_product_attention(q, q, q)
                    ts = []
                    for _ in range(5):
                        if dev.type == "cuda":
                            torch.cuda.synchronize()
                        t0 = time.perf_counter()
                        torch.nn.functional.scaled_dot_product_attention(q, q, q)
                        if dev.type == "cuda":
                            torch.cuda.synchronize()
                        ts.append(time.perf_counter() - t0)
                res[b.name] = {"median_s": sorted(ts)[2], "max_abs_diff_vs_default": float((o - ref).abs().max())}
            except RuntimeError as e:
                res[b.name] = {"unavailable": str(e).splitlines()[0][:200]}
        return res

    for workload, extra in (("llm", {}), ("stable-diffusion", {})):
        @section(f"trace_{workload}_{args.size}", results)
        def _trace(workload=workload, extra=extra):
            import genprof
            from genprof.reports import breakdown
            res = genprof.run(workload, size=args.size, device=args.device, mode="trace", repeats=2,
                              warmup=1, out=out / "runs", **extra)
            if not res.ok:
                return {"status": "failed", "reason": res.meta["reason"]}
            fam = breakdown(res.ops, "family")
            return {"status": "ok", "run": str(res.path), "phases": res.meta["summary"]["phases"],
                    "device_time_s_total": float(res.ops["device_time_s"].sum() / 2),
                    "cpu_time_s_total": float(res.ops["total_time_s"].sum() / 2),
                    "family_share": dict(zip(fam["family"], fam["share"].round(4))),
                    "memory": res.meta["summary"]["memory"]}

        @section(f"timing_{workload}_{args.size}", results)
        def _timing(workload=workload):
            import genprof
            res = genprof.run(workload, size=args.size, device=args.device, mode="timing", repeats=5,
                              warmup=2, out=out / "runs")
            return res.meta.get("summary", {}).get("phases", res.meta.get("reason"))

    @section("host_cost_per_op", results)
    def _host_cost():
        from genprof.profiler.timers import synchronize

        def per_op_us(device: torch.device, op, n: int = 1000) -> float:  # fewer than the launch queue holds
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
            x, w = torch.zeros(8, 64, device=device, dtype=dtype), torch.zeros(64, 64, device=device, dtype=dtype)
            for _ in range(200):
                op(x, w)
            synchronize(device)
            ts = []
            for _ in range(7):
                t0 = time.perf_counter()
                for _ in range(n):
                    op(x, w)
                ts.append((time.perf_counter() - t0) / n * 1e6)  # host time: no wait inside the loop
                synchronize(device)
            return sorted(ts)[len(ts) // 2]

        ops = {"add_": lambda x, w: x.add_(1.0), "linear": lambda x, w: torch.nn.functional.linear(x, w),
               "layer_norm": lambda x, w: torch.nn.functional.layer_norm(x, (64,))}
        res = {}
        for name, op in ops.items():
            here, cpu = per_op_us(dev, op), per_op_us(torch.device("cpu"), op)
            res[name] = {"device_us_per_op": here, "cpu_us_per_op": cpu, "device_over_cpu": here / cpu,
                         "meta_us_per_op": per_op_us(torch.device("meta"), op, n=500)}
        return res

    @section("host_profile", results)
    def _host_profile():
        from genprof.roofline.host import save_host
        from genprof.study import host
        prof, cal = host.measure_host_profile(("llm",), repeats=3, command="scripts/gpu_check.py")
        path = save_host(prof, out / "host-profile.json")
        return {"cpu": prof.cpu, "path": str(path), "median_us_per_op": prof.default_op_s * 1e6,
                "op_kinds": len(prof.op_s), "checks": cal["checks"].to_dict("records")}

    @section(f"llm_decode_eager_{args.decode_size}", results)
    def _decode():
        import genprof
        tokens = 64
        res = genprof.run("llm", size=args.decode_size, device=args.device, batch=1, tokens=tokens,
                          dtype="bfloat16" if dev.type == "cuda" else "float32", mode="timing", repeats=3,
                          warmup=1, out=out / "runs")
        if not res.ok:
            return {"status": "failed", "reason": res.meta["reason"]}
        summary = res.meta["summary"]
        return {"status": "ok", "run": str(res.path), "tokens": tokens, "derived": summary.get("derived"),
                "phases": {k: v.get("median_s") for k, v in summary["phases"].items()},
                "stability": summary.get("stability")}

    (out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwrote {out / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
