#!/usr/bin/env bash
# GPU check: one script, a few minutes, on a machine with a CUDA GPU.
#   scripts/gpu_check.sh OUTDIR
# Prints and writes to OUTDIR: the environment, CUDA-event timing against wall
# time, the roofline peaks (bf16 8192^3 matmul TFLOP/s, device copy TB/s),
# stable-diffusion and llm at `small` traced on CUDA with kernel time
# attributed to ops, the SDPA attention backends timed side by side, the host
# time per op on CUDA against the CPU path genprof's host profile measures,
# this host's profile, and `llm` at paper size (Llama-2-7B, bf16, batch 1)
# decoding in eager mode (its random build on the host takes a minute or two).
# Never part of the tests. Wheels for missing packages (diffusers) may be
# carried in .whl/ (see docs/results/README.md).
set -uo pipefail
out="${1:-gpu-check-out}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
{ date -u +"%Y-%m-%dT%H:%M:%SZ"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; } \
  | tee "$out/environment.txt"
python3 scripts/gpu_check.py --out "$out" 2>&1 | tee "$out/gpu_check.log"
