"""An attribution of GPU time written apart from genprof: plain `json`, a stack walk per thread, correlation ids.

What a trace file says, read independently of genprof's reader and op table
(tests/test_foreign_traces.py checks genprof against it, and
scripts/bench_analysis.py reports the same checks for every trace it reads):
the total device time (kernels, memcpy, memset), the device time under each
outermost namespaced `cpu_op` above each launch, and the names of wrappers
(annotations, Python frames, ProfilerStep, autograd engine and nodes,
optimizer steps, nn.Module ranges).
"""

from __future__ import annotations

import gzip
import json
import re
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
WRAPPER = re.compile(r"^(ProfilerStep#|autograd::engine::|##.*##$|nn\.Module: |Optimizer\.|torch::autograd::)|"
                     r"Backward\d*$")


class Independent:
    """What a trace says, read with json and a stack walk per thread: total device time, device time per
    outermost namespaced cpu_op above each launch (by the launch's correlation id), the wrapper names."""

    def __init__(self, path: Path):
        raw = Path(path).read_bytes()
        data = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw, parse_float=Decimal)
        xs = [e for e in data["traceEvents"] if e.get("ph") == "X"]
        gpu = [e for e in xs if e.get("cat") in GPU_CATS]
        cpu = [e for e in xs if e.get("cat") not in GPU_CATS]
        self.total_s = float(sum(Decimal(e["dur"]) for e in gpu)) / 1e6
        self.wrappers = {e["name"] for e in cpu if e.get("cat") in ("user_annotation", "python_function")
                         or WRAPPER.search(e["name"])}
        parent: dict[int, dict] = {}
        threads = defaultdict(list)
        for e in cpu:
            threads[(e["pid"], e["tid"])].append(e)
        for evs in threads.values():
            stack: list[dict] = []
            for e in sorted(evs, key=lambda e: (e["ts"], -e["dur"])):
                while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"]:
                    stack.pop()
                if stack:
                    parent[id(e)] = stack[-1]
                stack.append(e)
        launch = {}
        for e in cpu:
            c = (e.get("args") or {}).get("correlation")
            if e.get("cat") in ("cuda_runtime", "cuda_driver") and c and c not in launch:
                launch[c] = e
        self.by_op: dict[str, float] = defaultdict(float)
        for k in gpu:
            node, op = launch.get(k["args"].get("correlation")), None
            while node is not None:
                if node.get("cat") == "cpu_op" and re.match(r"^\w+::", node["name"]) \
                        and not node["name"].startswith(("autograd::", "torch::", "profiler::")):
                    op = node["name"]
                node = parent.get(id(node))
            if op is not None:
                self.by_op[op] += float(k["dur"]) / 1e6

    def top_aten(self, n: int = 5) -> list[tuple[str, float]]:
        """The n aten ops with the most device time, and that time (seconds)."""
        return sorted(((op, t) for op, t in self.by_op.items() if op.startswith("aten::")), key=lambda x: -x[1])[:n]

    def check(self, ops) -> dict:
        """An op table against this attribution: device time, share on wrappers, worst top-aten-op deviation."""
        got = ops.groupby("op")["device_time_s"].sum()
        dev = [abs(got.get(op, 0.0) / t - 1) for op, t in self.top_aten(5)]
        return {"trace_device_s": self.total_s, "device_s": float(ops["device_time_s"].sum()),
                "wrapper_share": float(ops.loc[ops["op"].isin(self.wrappers), "device_time_s"].sum() / self.total_s),
                "top5_max_deviation": max(dev) if dev else None}
