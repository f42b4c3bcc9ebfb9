"""Run folders for the report tests, built from the session's tiny runs by copying and editing.

Not a test module: plain functions imported by test_reports.py and
test_report_browser.py (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pandas as pd


EVIL = "<script>alert(1)</script>"
EVIL_WORKLOAD = f"evil{EVIL}"
FAILED_REASON = "RuntimeError: out of memory <b>not bold</b>"
# The ids of the figures and tables every report over mixed_root shows.
FIGURES = ("fig-family-breakdown", "fig-attention-kinds", "fig-seq-lengths", "fig-step-times", "fig-speedups")
TABLES = ("table-summary", "table-environment", "table-family", "table-phases", "table-derived", "table-top-ops",
          "table-seq", "table-optimizations", "table-failed")


def clone_run(src: Path, root: Path, run_id: str, edit: Callable[[dict[str, Any]], None] | None = None,
              **columns: Any) -> Path:
    """Copy a run directory under `root` as `run_id`; edit its run.json and set op-table columns."""
    dst = root / run_id
    shutil.copytree(src, dst)
    meta = json.loads((dst / "run.json").read_text())
    meta["run_id"] = run_id
    if edit:
        edit(meta)
    (dst / "run.json").write_text(json.dumps(meta))
    ops_path = dst / "ops.parquet"
    if ops_path.exists():
        ops = pd.read_parquet(ops_path)
        ops = ops.assign(run_id=run_id, **columns)
        ops.to_parquet(ops_path, index=False)
    return dst


def write_failed_run(root: Path, run_id: str = "sd_failed", reason: str = FAILED_REASON) -> Path:
    d = root / run_id
    d.mkdir(parents=True)
    meta = {"format_version": 1, "run_id": run_id, "created": "2026-01-01T00:00:00Z", "status": "failed",
            "reason": reason, "traceback": f"Traceback (most recent call last):\n  ...\n{reason}\n",
            "spec": {"workload": "stable-diffusion", "size": "tiny", "batch": 1, "mode": "trace", "device": "cpu",
                     "dtype": "float32", "repeats": 2, "warmup": 1, "optimizations": []},
            "environment": {"python": "3.11", "torch": "2.13.0+cpu", "device_name": "cpu"}}
    (d / "run.json").write_text(json.dumps(meta))
    return d


def write_corrupt_run(root: Path, name: str = "broken") -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "run.json").write_text('{"run_id": "broken", "stat')
    return d


def mixed_root(root: Path, sd_run, llm_run, evil: bool = False) -> Path:
    """The session's SD and LLM runs, an optimized SD run (twice as fast, with quality metrics),
    a failed run, a corrupt run and, with evil=True, a run whose workload name is a script tag."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(sd_run.path, root / sd_run.path.name)
    shutil.copytree(llm_run.path, root / llm_run.path.name)

    def optimized(meta: dict[str, Any]) -> None:
        meta["spec"]["optimizations"] = ["attn=test"]
        meta["summary"]["total"]["median_s"] = sd_run.meta["summary"]["total"]["median_s"] / 2
        meta["summary"]["quality"] = {"clip_score": 0.3125, "fid": {"value": 12.5}}

    clone_run(sd_run.path, root, "sd_optimized", optimized, optimizations="attn=test")
    write_failed_run(root)
    write_corrupt_run(root)
    if evil:
        def rename(meta: dict[str, Any]) -> None:
            meta["spec"]["workload"] = EVIL_WORKLOAD

        clone_run(sd_run.path, root, "evil_run", rename, workload=EVIL_WORKLOAD)
    return root


def timing_root(root: Path, sd_run) -> Path:
    """A folder holding only a timing-mode run: what `--mode timing` stores (run.json and
    phases.parquet, no op table), made from the session's SD run so that nothing runs again."""
    def timing(meta: dict[str, Any]) -> None:
        meta["spec"]["mode"] = "timing"
        meta["summary"]["mode"] = "timing"
        meta["summary"]["timer"] = "perf_counter"
        for key in ("family_share", "family_time_s", "flops_per_repeat", "bytes_per_repeat", "unclassified_ops"):
            meta["summary"].pop(key, None)

    root.mkdir(parents=True, exist_ok=True)
    d = clone_run(sd_run.path, root, "sd_timing", timing)
    (d / "ops.parquet").unlink()
    assert not list(d.glob("trace*"))
    return root
