"""GPU timing of paper-size denoising steps of flux and cogvideox, beside their roofline projection.

For each workload: build it once at `paper` size in bfloat16 on the GPU
(random weights, initialized on the host in float32, then moved: about 70 GB
of host memory and a few minutes for flux with its T5-XXL), then run
two denoising steps per inference in trace mode with each attention backend
that can run there (`attn=flash`, `efficient`, `cudnn`; `math` only where the
Lq x Lk scores fit: Flux's 24 x 4608^2 do, CogVideoX's 96 x 17776^2 bf16
scores, 61 GB a layer, do not), and project the same run on the profile of the
GPU it ran on (`genprof project RUN --hw h200`). Prints per backend the median
denoising step time, the projected step time and the decode time; writes the
run directories under OUT/runs and a summary to OUT/gpu_modern.json.

  python scripts/gpu_modern.py --out OUT            # on a CUDA machine (H100/H200: ~80 GB for flux)
  python scripts/gpu_modern.py --device cpu --size tiny --out /tmp/x   # the same path, checked on a CPU

Never part of the tests.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import genprof
from genprof.errors import GenprofError
from genprof.roofline import get_profile, project_run
from genprof.roofline.project import summarize

BACKENDS = {"flux": ("flash", "efficient", "cudnn", "math"), "cogvideox": ("flash", "efficient", "cudnn")}


def step_stats(meta: dict) -> dict:
    steps = meta["summary"]["steps"].get("denoise", {}).get("step", {})
    phases = meta["summary"]["phases"]
    return {"denoise_step_median_s": steps.get("median_s"), "decode_median_s": phases.get("decode", {}).get("median_s"),
            "text_encoder_median_s": phases.get("text_encoder", {}).get("median_s")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu-modern-out")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", default="paper")
    ap.add_argument("--hw", default="h200", help="profile to project on (the GPU it runs on)")
    ap.add_argument("--only", nargs="*", default=list(BACKENDS))
    args = ap.parse_args()
    out = Path(args.out)
    dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    hw = get_profile(args.hw)
    results = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device}
    for name in args.only:
        for backend in BACKENDS[name]:
            t0 = time.perf_counter()
            try:
                res = genprof.run(name, size=args.size, device=args.device, dtype=dtype, steps=2, repeats=2,
                                  warmup=1, optimizations=[f"attn={backend}"], out=out / "runs")
            except GenprofError as e:  # a backend this device lacks
                results[f"{name} attn={backend}"] = {"status": "refused", "reason": str(e)}
                print(name, backend, "refused:", e, flush=True)
                continue
            row = {"status": res.meta["status"], "reason": res.meta.get("reason", ""),
                   "wall_s": time.perf_counter() - t0, "run": str(res.path)}
            if res.ok:
                row.update(step_stats(res.meta))
                proj, _ = project_run(res.path, hw)
                den = summarize(proj[proj["phase"] == "denoise"], "phase")
                row["projected_denoise_step_s"] = float(den["time_s"].sum()) / 2  # two steps a repeat
            results[f"{name} attn={backend}"] = row
            print(name, backend, json.dumps(row, default=str), flush=True)
            torch.cuda.empty_cache() if args.device.startswith("cuda") else None
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_modern.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {out / 'gpu_modern.json'}")


if __name__ == "__main__":
    main()
