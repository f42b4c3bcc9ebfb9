"""Shared fixtures: one traced tiny run per workload per test session (models are cached)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import genprof

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def sd_run(runs_dir):
    res = genprof.run("stable-diffusion", size="tiny", mode="trace", repeats=2, warmup=1, out=runs_dir)
    assert res.ok, res.meta.get("traceback")
    return res


@pytest.fixture(scope="session")
def llm_run(runs_dir):
    res = genprof.run("llm", size="tiny", mode="trace", tokens=8, repeats=2, warmup=1, out=runs_dir)
    assert res.ok, res.meta.get("traceback")
    return res


def genprof_exe() -> str:
    """The installed console script (the real entry point), next to this Python."""
    exe = Path(sys.executable).parent / "genprof"
    return str(exe) if exe.exists() else shutil.which("genprof") or "genprof"


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([genprof_exe(), *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)
