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


TRACES = Path(__file__).resolve().parent / "data" / "traces"


@pytest.fixture(scope="session")
def imported_runs(tmp_path_factory) -> dict[str, Path]:
    """`genprof import` (the real entry point) of the A100 DDP step and of a two-rank folder (the sampled trace
    as rank 0 and, with its rank rewritten, as rank 1): run directories by name."""
    import gzip
    import json

    tmp = tmp_path_factory.mktemp("imported")
    ranks = tmp / "ranks"
    ranks.mkdir()
    shutil.copy(TRACES / "gpu-sampled.json.gz", ranks / "rank-0.json.gz")
    data = json.loads(gzip.decompress((TRACES / "gpu-sampled.json.gz").read_bytes()))
    data["distributedInfo"]["rank"] = 1
    (ranks / "rank-1.json").write_text(json.dumps(data))
    out = tmp / "runs"
    r = run_cli("import", str(TRACES / "a100-ddp-step1011.json.gz"), str(ranks), "--out", str(out))
    assert r.returncode == 0, r.stderr
    paths = [Path(line.split("run: ", 1)[1].strip()) for line in r.stdout.splitlines() if line.startswith("run: ")]
    assert len(paths) == 3, r.stdout
    return {"ddp": paths[0], "rank0": paths[1], "rank1": paths[2], "out": out}


def run_cli_inproc(*args: str) -> subprocess.CompletedProcess:
    """The CLI in this process, through `genprof.cli.main` (the entry point's own exit codes and error lines),
    with typer's CliRunner capturing the streams: for cases about parsing and checks, where a new process
    (about 2 s of imports) adds nothing."""
    import signal

    from typer.testing import CliRunner

    from genprof import cli

    term = signal.getsignal(signal.SIGTERM)  # `sweep` installs a handler; keep the test process's
    code = 0
    with CliRunner().isolation() as (out, err, _):
        try:
            cli.main(list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        finally:
            cli._state["debug"] = False
            signal.signal(signal.SIGTERM, term)
            sys.stdout.flush()
            sys.stderr.flush()
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    return subprocess.CompletedProcess(["genprof", *args], code, stdout, stderr)
