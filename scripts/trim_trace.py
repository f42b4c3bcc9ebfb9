"""Cut one profiler step out of a Kineto trace: a small, real test fixture from a large trace.

Keeps the trace's metadata (deviceProperties, distributedInfo, ...) and its
`M` (process/thread name) events, every CPU event that lies wholly inside the
time window of `ProfilerStep#N`, and every GPU event (kernel, memcpy, memset)
that starts inside it, or up to `--gpu-before` microseconds before it. Nothing
else is changed, so the cut is as real as the source: GPU work launched before
the window keeps its correlation id and has no launch in the cut (device work
without a launch, as in a trace whose recording began while the GPU was still
busy), and launches near the window's end whose kernels ran after it are kept
without their kernels.

    python scripts/trim_trace.py ../shared/traces/a100-ddp-train.json.gz \
        tests/data/traces/a100-ddp-step.json.gz --step 1011 --gpu-before 3000
"""

from __future__ import annotations

import argparse
import gzip
import json
from decimal import Decimal
from pathlib import Path

GPU = {"kernel", "gpu_memcpy", "gpu_memset"}


def trim(src: Path, dst: Path, step: int, gpu_before: float = 0.0) -> dict:
    opener = gzip.open if src.read_bytes()[:2] == b"\x1f\x8b" else open
    with opener(src, "rt") as f:
        data = json.load(f, parse_float=Decimal)  # times stay exactly as written
    events = data["traceEvents"]
    name = f"ProfilerStep#{step}"
    window = [e for e in events if e.get("ph") == "X" and e.get("name") == name]
    if not window:
        raise SystemExit(f"{src}: no {name}")
    lo, hi = window[0]["ts"], window[0]["ts"] + window[0]["dur"]
    kept = []
    for e in events:
        if e.get("ph") == "M":
            kept.append(e)
        elif e.get("ph") != "X":
            continue
        elif e.get("cat") in GPU and lo - Decimal(str(gpu_before)) <= e["ts"] < hi:
            kept.append(e)
        elif e.get("cat") not in GPU and lo <= e["ts"] and e["ts"] + e["dur"] <= hi:
            kept.append(e)
    data["traceEvents"] = kept
    text = json.dumps(data, separators=(",", ":"), default=_number)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=9, mtime=0) as f:
        f.write(text.encode())  # no name or time in the header: the same cut, the same bytes
    return {"events": len(kept), "of": len(events), "bytes": dst.stat().st_size}


def _number(x):
    if isinstance(x, Decimal):
        if x == x.to_integral_value():
            return int(x)
        if Decimal(repr(float(x))) != x:
            raise SystemExit(f"{x} does not survive a float: this trace cannot be cut without changing it")
        return float(x)
    raise TypeError(type(x))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--step", type=int, required=True, help="N of the ProfilerStep#N to keep.")
    ap.add_argument("--gpu-before", type=float, default=0.0, help="Also keep GPU events that start up to this many "
                    "microseconds before the step (their launches are not kept).")
    args = ap.parse_args()
    print(trim(args.src, args.dst, args.step, args.gpu_before))


if __name__ == "__main__":
    main()
