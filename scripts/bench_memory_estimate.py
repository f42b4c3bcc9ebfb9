"""The memory estimate (genprof.estimate) against the peak a real run reaches, one configuration per process.

For each configuration a fresh process (so that no earlier allocation is
cached by the allocator) estimates the run, then builds it for real on the
CPU and runs one inference under `torch.inference_mode`:
- parameters: RSS high-water mark during the build, minus the RSS before it
  (the kernel's VmHWM, reset first; genprof.profiler.memory);
- activations: the high-water mark during the inference minus the RSS after
  the build;
and compares both with the estimate's two terms. The kernel's numbers include
what the estimate leaves out (allocator caching and fragmentation, library
buffers): the ratio measured / estimated says how much.

    python scripts/bench_memory_estimate.py                  # the table of docs/reliability.md
    python scripts/bench_memory_estimate.py --one llm tiny 256 '{"tokens": 256}'   # one, as JSON
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CONFIGS = [  # workload, size, batch, other RunSpec fields
    ("llm", "tiny", 512, {"tokens": 64}),  # the two of tests/test_checks.py
    ("stable-diffusion", "tiny", 64, {}),
    ("stable-diffusion", "tiny", 16, {}),  # activations of a few MB: the libraries' own buffers dominate
    ("llm", "tiny", 256, {"tokens": 256}),
    ("llm", "small", 8, {}),
    ("llm", "small", 8, {"tokens": 256}),
    ("stable-diffusion", "small", 2, {"steps": 2}),
    ("phenaki", "small", 2, {}),
    ("llava", "small", 4, {}),
]


def measure_one(workload: str, size: str, batch: int, extra: dict) -> dict:
    """In this process: the estimate, then the real build and one inference, measured by the kernel."""
    import psutil
    import torch

    from genprof import api, estimate, workloads
    from genprof.profiler.memory import read_hwm, reset_hwm
    from genprof.phases import NullPhases
    from genprof.workloads.base import count_parameters

    torch.set_num_threads(2)
    spec = api.make_spec(workload, size=size, batch=batch, **extra)
    wl = workloads.get(workload)
    est = estimate.estimate(wl, spec)
    rss = psutil.Process().memory_info().rss
    if not reset_hwm():
        raise SystemExit("needs Linux's VmHWM reset (/proc/self/clear_refs)")
    built = wl.build(spec)
    after_build = psutil.Process().memory_info().rss
    build_peak = read_hwm() - rss
    reset_hwm()
    with torch.inference_mode():
        built.run(NullPhases())
    act_peak = read_hwm() - after_build
    real_params = sum(count_parameters(built.parts).values())
    return {"workload": workload, "size": size, "batch": batch, "extra": extra,
            "parameters": est.parameters, "parameters_built": real_params,
            "est_parameter_bytes": est.parameter_bytes, "measured_build_bytes": build_peak,
            "est_activation_bytes": est.activation_bytes, "measured_activation_bytes": act_peak,
            "ratio_activations": act_peak / est.activation_bytes if est.activation_bytes else None,
            "ratio_total": (build_peak + act_peak) / est.total_bytes}


def measure(workload: str, size: str, batch: int, extra: dict) -> dict:
    """`measure_one` in a fresh process."""
    out = subprocess.run([sys.executable, __file__, "--one", workload, size, str(batch), json.dumps(extra)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", nargs=4, metavar=("WORKLOAD", "SIZE", "BATCH", "JSON"))
    args = ap.parse_args()
    if args.one:
        w, s, b, extra = args.one
        print(json.dumps(measure_one(w, s, int(b), json.loads(extra))))
        return
    mib = 2 ** 20
    print("| workload | size | batch | other | parameters (est. = built) | est. parameters MiB | measured build MiB "
          "| est. activations MiB | measured inference MiB | measured / est. (activations) | measured / est. (total) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for w, s, b, extra in CONFIGS:
        r = measure(w, s, b, extra)
        same = "yes" if r["parameters"] == r["parameters_built"] else f"no ({r['parameters_built']})"
        other = ", ".join(f"{k}={v}" for k, v in extra.items()) or "-"
        print(f"| {w} | {s} | {b} | {other} | {r['parameters'] / 1e6:.3g}M ({same}) | "
              f"{r['est_parameter_bytes'] / mib:.1f} | {r['measured_build_bytes'] / mib:.1f} | "
              f"{r['est_activation_bytes'] / mib:.1f} | {r['measured_activation_bytes'] / mib:.1f} | "
              f"{r['ratio_activations']:.2f} | {r['ratio_total']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
