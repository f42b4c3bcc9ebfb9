"""Bad inputs: every row of docs/reliability.md is a test here.

Three tables: CLI options of `genprof sweep`, sweep files, and damaged run
files (read by `load_runs`, `genprof report`, and a resuming sweep).
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

import genprof
from conftest import run_cli
from genprof import store
from genprof import sweep as sw


def one_line_error(r, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


# ---------------------------------------------------------------------------------------------- CLI options

CHEAP = ["--workload", "llm", "--size", "tiny", "--repeats", "1", "--warmup", "0"]

CLI_CASES = [
    # (id, arguments after `sweep`, text in the one-line error)
    ("no-workload", ["--size", "tiny"], "needs at least one workload"),
    ("unknown-workload", ["--workload", "nope"], "unknown workload 'nope'"),
    ("unknown-size", ["--workload", "llm", "--size", "huge"], "tiny, small, paper"),
    ("batch-zero", [*CHEAP, "--batch", "0"], "batch must be an integer >= 1"),
    ("repeats-zero", ["--workload", "llm", "--repeats", "0"], "repeats must be an integer >= 1"),
    ("unknown-mode", ["--workload", "llm", "--mode", "fast"], "timing, trace"),
    ("unknown-dtype", ["--workload", "llm", "--dtype", "int3"], "float32, float16, bfloat16"),
    ("unknown-device", ["--workload", "llm", "--device", "tpu"], "unknown device"),
    ("cuda-without-gpu", [*CHEAP, "--device", "cuda"], "CUDA is not available"),
    ("unknown-optimization", [*CHEAP, "--opt", "warp=9"], "unknown optimization"),
    ("bad-opt-syntax", [*CHEAP, "--opt", "attn:backend"], "expected key=value"),
    ("option-a-workload-refuses", [*CHEAP, "--steps", "3"], "steps=3"),
    ("all-combinations-refused", [*CHEAP, "--steps", "3", "--skip-invalid"], "no valid run"),
    ("bad-set", [*CHEAP, "--set", "nokey"], "bad --set"),
    ("unknown-set-key", [*CHEAP, "--set", "warp=1"], "unknown --set key"),
    ("unknown-executor", [*CHEAP, "--executor", "slurm"], "valid: local, ray"),
    ("timeout-zero", [*CHEAP, "--timeout", "0"], "--timeout must be > 0"),
    ("missing-sweep-file", ["--file", "/nonexistent/s.toml"], "does not exist"),
]


@pytest.mark.parametrize("args,needle", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_option(args, needle, tmp_path):
    out = tmp_path / "runs"
    one_line_error(run_cli("sweep", *args, "--out", str(out)), needle)
    assert not out.exists() or not any(out.iterdir())  # nothing written for a refused sweep


def test_cli_option_of_the_wrong_type_is_a_usage_error(tmp_path):
    r = run_cli("sweep", "--workload", "llm", "--batch", "two", "--out", str(tmp_path))
    assert r.returncode == 2 and "Invalid value" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------- sweep files

FILE_CASES = [
    # (id, file name, content, text in the one-line error)
    ("toml-syntax", "s.toml", '[axes\nworkload = ["llm"]\n', "does not parse"),
    ("yaml-syntax", "s.yaml", "axes: [workload: llm\n", "does not parse"),
    ("wrong-extension", "s.json", '{"axes": {}}', "must end in .toml, .yaml or .yml"),
    ("not-utf8", "s.toml", b"\xff\xfe[axes]\n", "not UTF-8"),
    ("empty-file", "s.toml", "", "needs at least one workload"),
    ("top-level-not-a-table", "s.yaml", "- llm\n- tiny\n", "expected a table"),
    ("unknown-top-key", "s.toml", '[axis]\nworkload = ["llm"]\n', "unknown key 'axis'"),
    ("axes-not-a-table", "s.toml", "axes = 3\n", "'axes' must be a table"),
    ("unknown-axis", "s.toml", '[axes]\nworkload = ["llm"]\ncolour = ["red"]\n', "unknown sweep axis 'colour'"),
    ("unknown-base-field", "s.toml", '[base]\nworkload = "llm"\nspeed = 3\n', "unknown sweep field 'speed'"),
    ("empty-axis", "s.toml", '[axes]\nworkload = ["llm"]\nbatch = []\n', "sweep axis 'batch' is empty"),
    ("wrong-value-type", "s.toml", '[axes]\nworkload = ["llm"]\nbatch = ["two"]\n', "bad value for batch: 'two'; expected an integer"),
    ("nested-list-value", "s.toml", '[axes]\nworkload = ["llm"]\nbatch = [[1, 2]]\n', "expected a single value"),
    ("workload-not-a-name", "s.toml", "[axes]\nworkload = [3]\n", "bad value for workload: 3; expected a string"),
    ("bool-for-integer", "s.toml", '[axes]\nworkload = ["llm"]\nbatch = [true]\n', "bad value for batch: True"),
    ("string-for-bool", "s.toml", '[base]\nworkload = "llm"\nrecord_trace = "yes"\n', "expected true or false"),
    ("bad-optimization-value", "s.toml", '[axes]\nworkload = ["llm"]\nopt = [3]\n', "bad optimizations value 3"),
    ("bad-params-value", "s.toml", '[axes]\nworkload = ["llm"]\nparams = [3]\n', "bad params value 3"),
    ("per-workload-unknown", "s.toml", '[axes]\nworkload = ["llm"]\n[workload.dalle]\nsteps = 2\n',
     "settings for unknown workload 'dalle'"),
    ("per-workload-not-a-table", "s.toml", '[axes]\nworkload = ["llm"]\n[workload]\nllm = 3\n',
     "workload.llm must be a table"),
    ("skip-invalid-not-bool", "s.toml", 'skip_invalid = "yes"\n[axes]\nworkload = ["llm"]\n',
     "skip_invalid must be true or false"),
]


@pytest.mark.parametrize("name,content,needle", [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_sweep_file(name, content, needle, tmp_path):
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    f = tmp_path / name
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    one_line_error(run_cli("sweep", "--file", str(f), "--out", str(tmp_path / "runs")), needle)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# ---------------------------------------------------------------------------------------------- run files


@pytest.fixture(scope="module")
def good_runs(tmp_path_factory) -> list[Path]:
    """Two real tiny runs (trace mode, with the Chrome trace kept)."""
    out = tmp_path_factory.mktemp("good")
    paths = []
    for batch in (1, 2):
        res = genprof.run("llm", size="tiny", tokens=2, repeats=1, warmup=0, batch=batch, record_trace=True,
                          out=out)
        assert res.ok, res.meta.get("traceback")
        paths.append(res.path)
    return paths


def _truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _rewrite_json(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def f(p: Path) -> None:
        meta = json.loads(p.read_text())
        p.write_text(json.dumps(change(meta)))
    return f


def _set(key, value):
    def change(m):
        m[key] = value
        return m
    return change


def _drop(key):
    def change(m):
        m.pop(key)
        return m
    return change


@dataclass
class RunCase:
    id: str
    file: str  # the damaged file, relative to the run directory
    damage: Callable[[Path], None]
    warned: bool = True  # load_runs / the report skip the run with a warning naming the file
    rerun: bool = True  # a resuming sweep does not count the run as done (and says why)


def run_case(case_id: str) -> "RunCase":
    return next(c for c in RUN_CASES if c.id == case_id)


RUN_CASES = [
    RunCase("run.json-truncated", "run.json", _truncate),
    RunCase("run.json-empty", "run.json", lambda p: p.write_bytes(b"")),
    RunCase("run.json-binary", "run.json", lambda p: p.write_bytes(b"\xff\xfe\x00\x81garbage")),
    RunCase("run.json-a-list", "run.json", lambda p: p.write_text("[1, 2]")),
    RunCase("run.json-without-status", "run.json", _rewrite_json(_drop("status"))),
    RunCase("run.json-is-a-directory", "run.json", lambda p: (p.unlink(), p.mkdir())),
    RunCase("run.json-spec-not-a-table", "run.json", _rewrite_json(_set("spec", "llm"))),
    RunCase("run.json-summary-not-a-table", "run.json", _rewrite_json(_set("summary", [1])), rerun=False),
    RunCase("ops.parquet-truncated", "ops.parquet", _truncate),
    RunCase("ops.parquet-empty", "ops.parquet", lambda p: p.write_bytes(b"")),
    RunCase("ops.parquet-not-parquet", "ops.parquet", lambda p: p.write_text("run_id,op\nx,y\n")),
    RunCase("ops.parquet-missing", "ops.parquet", lambda p: p.unlink()),
    RunCase("phases.parquet-truncated", "phases.parquet", _truncate),
    RunCase("trace.json.gz-truncated", "trace.json.gz", _truncate, warned=False),  # no reader opens traces
    RunCase("trace.json.gz-not-gzip", "trace.json.gz", lambda p: p.write_text("{}"), warned=False),
]


def _damaged(good_runs: list[Path], tmp_path: Path, case: RunCase) -> tuple[Path, Path]:
    root = tmp_path / "runs"
    for p in good_runs:
        shutil.copytree(p, root / p.name)
    bad = root / good_runs[0].name
    case.damage(bad / case.file)
    return root, bad


def _check_run_case(case: RunCase, good_runs: list[Path], tmp_path: Path) -> None:
    root, bad = _damaged(good_runs, tmp_path, case)
    key = sw.key_of_run(store.read_run(good_runs[0]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tables = {t: genprof.load_runs(root, t) for t in ("runs", "ops", "phases")}
    messages = [str(w.message) for w in caught]
    good_id = good_runs[1].name
    assert good_id in set(tables["runs"]["run_id"]) and good_id in set(tables["ops"]["run_id"])
    if case.warned:
        assert any(bad.name in m and case.file in m for m in messages), messages
        assert bad.name not in set(tables["ops"]["run_id"]) or case.file == "phases.parquet"
    # the HTML report: written, with a note naming the file when the run was skipped
    from genprof.reports.html import render_report

    html = render_report([root])
    assert good_id in html
    if case.warned:
        assert any(bad.name in n and case.file in n for n in _notes(html)), _notes(html)
    # a resuming sweep does not count the damaged run as done, and says which file
    notes: list[str] = []
    found = sw.index(root, notes)
    if case.rerun:
        assert key not in found or not found[key].ok
        assert any(case.file in n for n in notes), notes


def _notes(html: str) -> list[str]:
    """The notes of the report (corrupt runs skipped, ...)."""
    import re

    return re.findall(r'<p class="note">(.*?)</p>', html, flags=re.S)


@pytest.mark.parametrize("case", RUN_CASES, ids=[c.id for c in RUN_CASES])
def test_run_file(case, good_runs, tmp_path):
    _check_run_case(case, good_runs, tmp_path)


def test_leftover_tmp_folder_is_invisible_and_removed_by_the_next_sweep(good_runs, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(good_runs[0], root / good_runs[0].name)
    tmp = root / f"{store.TMP_PREFIX}{good_runs[1].name}-999999999"  # a process that no longer exists
    shutil.copytree(good_runs[1], tmp)
    _truncate(tmp / "ops.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert set(genprof.load_runs(root)["run_id"]) == {good_runs[0].name}
    assert sw.clean_stale_tmp(root) == [tmp] and not tmp.exists()


def test_report_cli_on_a_damaged_store_names_the_file_and_exits_0(good_runs, tmp_path):
    root, bad = _damaged(good_runs, tmp_path, run_case("run.json-truncated"))
    r = run_cli("report", str(root), "--out", str(tmp_path / "r.html"))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert f"{bad.name}/run.json" in (tmp_path / "r.html").read_text()


def test_report_and_show_cli_on_a_missing_or_corrupt_path_is_one_line(good_runs, tmp_path):
    one_line_error(run_cli("report", str(tmp_path / "missing"), "--out", str(tmp_path / "r.html")), "does not exist")
    root, bad = _damaged(good_runs, tmp_path, run_case("ops.parquet-truncated"))
    one_line_error(run_cli("show", str(bad)), "corrupt", "ops.parquet")


def test_resume_reruns_a_damaged_run(good_runs, tmp_path):
    """A resuming sweep runs again a spec whose stored run is damaged (truncated op table)."""
    root, bad = _damaged(good_runs, tmp_path, run_case("ops.parquet-truncated"))
    meta = store.read_run(good_runs[0])
    spec = genprof.RunSpec.from_dict(meta["spec"])
    res = sw.run_sweep([spec], root, report=False)
    assert [e.status for e in res.entries] == ["done"]
    assert any("ops.parquet" in n for n in res.notes)
    assert sw.index(root)[sw.spec_key(spec)].ok == [res.entries[0].path]
