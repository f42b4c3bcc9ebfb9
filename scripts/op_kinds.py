"""Every op kind the suite runs, and how its FLOPs and bytes are counted: the table of docs/op-table.md.

Traces every registered workload at `tiny` (1 step or 2 tokens: every phase
and kind of step, as the cross-check test runs them) and, for each top-level
op of the op table, asks `counting.explain` which rules counted it (a replay's
FLOPs formula and bytes rule, or a fallback). One row per op kind: its family,
the rules seen (an op can be a view in one call and a copy in another:
`reshape`, `contiguous`, `to`), and the workloads that run it. Writes the
table between the `op-kinds` markers of docs/op-table.md.

    python scripts/op_kinds.py            # about 15 s on 2 cores (15 workloads)
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import genprof  # noqa: E402
from genprof import api  # noqa: E402
from genprof.profiler import counting, measure_trace, taxonomy  # noqa: E402
from genprof.reports.markdown import to_markdown  # noqa: E402

BEGIN, END = "<!-- op-kinds:begin -->", "<!-- op-kinds:end -->"


def survey(names: list[str]) -> dict[str, dict]:
    """op -> {"flops": set of FLOPs rules, "bytes": set of bytes rules, "workloads": set}."""
    seen: dict[str, dict] = defaultdict(lambda: {"flops": set(), "bytes": set(), "workloads": set()})
    count, depth, current = counting.count, [0], [""]

    def spy(op, *args, **kw):  # the op table's call; the ops a fallback counts in its place are nested
        depth[0] += 1
        try:
            c = counting.explain(op, *args, **kw)
        finally:
            depth[0] -= 1
        if depth[0] == 0:
            seen[op]["flops"].add(c.flops_rule)
            seen[op]["bytes"].add(c.bytes_rule)
            seen[op]["workloads"].add(current[0])
        return c.flops, c.bytes

    counting.count = spy
    try:
        for name in names:
            current[0] = name
            wl = genprof.workloads.get(name)
            spec = api.make_spec(name, size="tiny", mode="trace", **{wl.counted_by: 1 if wl.counted_by == "steps" else 2})
            measure_trace(api.build(spec), torch.device("cpu"), 1, 0, {})
    finally:
        counting.count = count
    return seen


def table(seen: dict[str, dict]) -> str:
    rows = []
    for op in sorted(seen, key=lambda o: (taxonomy.family(o, ""), o)):
        s = seen[op]
        rows.append({"op": f"`{op}`", "family": taxonomy.family(op, ""),
                     "FLOPs": "; ".join(sorted(s["flops"])), "bytes": "; ".join(sorted(s["bytes"])),
                     "workloads": len(s["workloads"])})
    import pandas as pd

    return to_markdown(pd.DataFrame(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "op-table.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    names = genprof.workloads.names()
    t0 = time.perf_counter()
    seen = survey(names)
    body = (f"{len(seen)} op kinds in {len(names)} workloads ({', '.join(names)}) at `tiny`, "
            f"from `python scripts/op_kinds.py`. Family by op name (an op inside an attention module "
            f"can be Attention instead); workloads: how many run it.\n\n{table(seen)}")
    doc = args.doc.read_text()
    doc = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: f"{BEGIN}\n{body}\n{END}", doc, flags=re.S)
    args.doc.write_text(doc)
    print(f"{len(seen)} op kinds, {time.perf_counter() - t0:.0f} s; wrote {args.doc}")


if __name__ == "__main__":
    main()
