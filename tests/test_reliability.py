"""Bad inputs: every row of docs/reliability.md is a test here.

Four tables: CLI options of `genprof sweep`, inputs of the other commands
(spec checks, paths), sweep files, and damaged run files (read by `load_runs`,
`genprof report`, and a resuming sweep). Parsing and checking cases run the
CLI in this process (`run_cli_inproc`: the entry point's own exit codes and
error lines); the few that are about the installed entry point run it as a
process (`run_cli`).
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
from conftest import run_cli, run_cli_inproc
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
    ("timeout-zero", [*CHEAP, "--timeout", "0"], "--timeout must be a finite number of seconds > 0"),
    ("timeout-nan", [*CHEAP, "--timeout", "nan"], "--timeout must be a finite number of seconds > 0, got nan"),
    ("missing-sweep-file", ["--file", "/nonexistent/s.toml"], "does not exist"),
]


@pytest.mark.parametrize("args,needle", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_option(args, needle, tmp_path):
    out = tmp_path / "runs"
    one_line_error(run_cli_inproc("sweep", *args, "--out", str(out)), needle)
    assert not out.exists() or not any(out.iterdir())  # nothing written for a refused sweep


def test_cli_option_of_the_wrong_type_is_a_usage_error(tmp_path):
    r = run_cli_inproc("sweep", "--workload", "llm", "--batch", "two", "--out", str(tmp_path))
    assert r.returncode == 2 and "Invalid value" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------- other inputs

INPUT_CASES = [
    # (id, arguments with {tmp} {file} {empty} {run} {copy} filled in, text in the one-line error)
    ("set-not-an-integer", ["run", "llm", "--set", "prompt_len=abc"],
     "--set prompt_len='abc' has the wrong type for llm: expected an integer"),
    ("set-below-its-bound", ["run", "stable-diffusion", "--set", "latent=0"], "--set latent=0 is too small"),
    ("steps-beyond-the-scheduler", ["run", "stable-diffusion", "--steps", "2000"],
     "must be <= 1000 (the scheduler's 1000 training timesteps)"),
    ("tokens-beyond-the-positions", ["run", "llm", "--tokens", "1000000"], "--tokens 1000000 is too large"),
    ("prompt-and-tokens-beyond-the-positions", ["run", "llm", "--set", "prompt_len=4000", "--tokens", "200"],
     "more than the model's 4096 positions"),
    ("repeats-beyond-its-bound", ["run", "llm", "--repeats", "1000000000"], "must be <= 1000"),
    ("batch-beyond-its-bound", ["run", "llm", "--batch", "1000000"], "--batch 1000000 is too large"),
    ("config-unknown-key", ["run", "llm", "--set", 'config={"bogus": 1}'], "--set config: unknown key 'bogus'"),
    ("config-value-of-the-wrong-type", ["run", "llm", "--set", 'config={"hidden_size": "wide"}'],
     "--set config.hidden_size='wide' has the wrong type"),
    ("config-the-model-refuses", ["run", "llm", "--set", 'config={"hidden_size": 65}'],
     "a dry run on the meta device"),
    ("prepack-bin-below-the-longest-prompt", ["run", "llm", "--opt", "prepack:bin=1"],
     "prepack:bin=1 is smaller than the longest prompt"),
    ("weights-directory-missing", ["run", "llm", "--weights", "{tmp}/nowhere"], "does not exist"),
    ("weights-directory-empty", ["run", "llm", "--weights", "{empty}"], "the directory is empty"),
    ("run-out-is-a-file", ["run", "llm", "--out", "{file}"], "--out {file}: a file is in the way"),
    ("sweep-out-is-a-file", ["sweep", *CHEAP, "--out", "{file}"], "a file is in the way"),
    ("report-out-under-a-file", ["report", "{run}", "--out", "{file}/r.html"], "is a file, not a folder"),
    ("report-of-an-empty-folder", ["report", "{empty}", "--out", "{tmp}/r.html"], "no readable genprof run"),
    ("report-of-a-file", ["report", "{file}", "--out", "{tmp}/r.html"], "neither a run directory nor a folder"),
    ("suite-cuda-without-gpu", ["suite", "--device", "cuda", "--size", "tiny"], "CUDA is not available"),
    ("compare-a-run-with-its-copy", ["compare", "{run}", "{copy}"], "are the same run"),
]


@pytest.mark.parametrize("args,needle", [c[1:] for c in INPUT_CASES], ids=[c[0] for c in INPUT_CASES])
def test_cli_input(args, needle, good_runs, tmp_path):
    if "cuda" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("not a folder")
    shutil.copytree(good_runs[0], tmp_path / "copy")
    fill = {"tmp": tmp_path, "file": tmp_path / "file", "empty": tmp_path / "empty", "run": good_runs[0],
            "copy": tmp_path / "copy"}
    def filled(text: str) -> str:
        for k, v in fill.items():
            text = text.replace("{" + k + "}", str(v))
        return text

    args = [filled(a) for a in args]
    if args[0] in ("run", "sweep", "suite") and "--out" not in args:
        args += ["--out", str(tmp_path / "runs")]
    one_line_error(run_cli_inproc(*args), filled(needle))
    assert not (tmp_path / "runs").exists() and not (tmp_path / "r.html").exists()  # nothing written


def test_a_run_that_would_not_fit_in_memory_is_refused_with_the_estimate(tmp_path, monkeypatch):
    from genprof import estimate

    monkeypatch.setattr(estimate, "available_bytes", lambda device: 64 << 20)
    r = run_cli_inproc("run", "llm", "--batch", "4096", "--out", str(tmp_path / "runs"))
    one_line_error(r, "llm at size 'tiny', batch 4096 needs about", "parameters", "only 64 MiB is free")
    assert not (tmp_path / "runs").exists()


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
    one_line_error(run_cli_inproc("sweep", "--file", str(f), "--out", str(tmp_path / "runs")), needle)
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


def _in_summary(key, value):
    def change(m):
        m["summary"][key] = value
        return m
    return change


def _nested(depth: int) -> Callable[[Path], None]:
    def f(p: Path) -> None:
        meta = json.loads(p.read_text())
        text = json.dumps(meta)[:-1] + ', "info": ' + "[" * depth + "]" * depth + "}"
        p.write_text(text)
    return f


def _spec_of_an_older_genprof(m):
    for key in ("threads", "params"):  # fields RunSpec gained later
        m["spec"].pop(key)
    m.pop("format_version")
    return m


def _retable(change: Callable, metadata: dict | None = None) -> Callable[[Path], None]:
    """Rewrite a parquet table: a valid file whose columns or metadata are changed."""
    def f(p: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(change(pq.read_table(p).to_pandas()), preserve_index=False)
        if metadata is not None:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
        pq.write_table(table, p)
    return f


@dataclass
class RunCase:
    id: str
    file: str  # the damaged file, relative to the run directory
    damage: Callable[[Path], None]
    warned: bool = True  # load_runs / the report skip the run with a warning naming the file
    rerun: bool = True  # a resuming sweep does not count the run as done (and says why)
    needle: str = ""  # in the warning, besides the file's name
    loads: bool = False  # an older but valid file: read as it is, no warning, counted as done


def run_case(case_id: str) -> "RunCase":
    return next(c for c in RUN_CASES if c.id == case_id)


RUN_CASES = [
    RunCase("run.json-truncated", "run.json", _truncate),
    RunCase("run.json-empty", "run.json", lambda p: p.write_bytes(b"")),
    RunCase("run.json-binary", "run.json", lambda p: p.write_bytes(b"\xff\xfe\x00\x81garbage")),
    RunCase("run.json-a-list", "run.json", lambda p: p.write_text("[1, 2]")),
    RunCase("run.json-without-status", "run.json", _rewrite_json(_drop("status"))),
    RunCase("run.json-is-a-directory", "run.json", lambda p: (p.unlink(), p.mkdir())),
    RunCase("run.json-spec-not-a-table", "run.json", _rewrite_json(_set("spec", "llm")), needle="spec: expected an object"),
    RunCase("run.json-summary-not-a-table", "run.json", _rewrite_json(_set("summary", [1])),
            needle="summary: expected an object, got a list"),
    RunCase("run.json-total-a-list", "run.json", _rewrite_json(_in_summary("total", [1, 2])),
            needle="summary.total: expected an object, got a list"),
    RunCase("run.json-run_id-an-object", "run.json", _rewrite_json(_set("run_id", {"a": 1})),
            needle="run_id: expected a string, got an object"),
    RunCase("run.json-without-summary", "run.json", _rewrite_json(_drop("summary")), needle="summary is missing"),
    RunCase("run.json-median-a-string", "run.json", _rewrite_json(_in_summary("derived", {"ttft_s": "fast"})),
            needle="summary.derived.ttft_s: expected a number"),
    RunCase("run.json-nested-200000-deep", "run.json", _nested(200_000), needle="nested too deeply"),
    RunCase("run.json-nested-100-deep", "run.json", _nested(100), needle="nested more than 64 levels"),
    RunCase("run.json-newer-format", "run.json", _rewrite_json(_set("format_version", 99)),
            needle="newer than this genprof reads"),
    RunCase("run.json-of-an-older-genprof", "run.json", _rewrite_json(_spec_of_an_older_genprof), warned=False,
            rerun=False, loads=True),
    RunCase("ops.parquet-truncated", "ops.parquet", _truncate),
    RunCase("ops.parquet-empty", "ops.parquet", lambda p: p.write_bytes(b"")),
    RunCase("ops.parquet-not-parquet", "ops.parquet", lambda p: p.write_text("run_id,op\nx,y\n")),
    RunCase("ops.parquet-missing", "ops.parquet", lambda p: p.unlink()),
    RunCase("ops.parquet-wrong-dtype", "ops.parquet", _retable(lambda df: df.assign(flops=df["flops"].astype(str))),
            needle="column 'flops' holds string values"),
    RunCase("ops.parquet-missing-column", "ops.parquet", _retable(lambda df: df.drop(columns=["family"])),
            needle="column 'family' is missing"),
    RunCase("ops.parquet-newer-format", "ops.parquet", _retable(lambda df: df, {b"genprof.table": b"ops/9"}),
            needle="newer than this genprof reads"),
    RunCase("ops.parquet-of-an-older-genprof", "ops.parquet", _retable(lambda df: df.drop(columns=["kernel"]), {}),
            warned=False, rerun=False, loads=True),
    RunCase("phases.parquet-truncated", "phases.parquet", _truncate),
    RunCase("phases.parquet-wrong-dtype", "phases.parquet",
            _retable(lambda df: df.assign(time_s=df["time_s"].astype(str))), needle="column 'time_s'"),
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
        assert any(bad.name in m and case.file in m and case.needle in m for m in messages), messages
        assert bad.name not in set(tables["ops"]["run_id"]) or case.file == "phases.parquet"
    if case.loads:  # read as it is, its missing fields and columns filled in
        assert not messages, messages
        assert {bad.name, good_id} <= set(tables["runs"]["run_id"]) and bad.name in set(tables["ops"]["run_id"])
        assert (tables["ops"]["kernel"].notna()).all()
        assert store.read_run(bad)["spec"]["params"] == {}
    # the HTML report: a note naming the file when the run was skipped. A skipped run never reaches the
    # drawing, so the page is drawn (about 3 s) only where the damaged run is drawn, or for the first case.
    from genprof.reports import html as H

    if case.loads or case is RUN_CASES[0]:
        page = H.render_report([root])
        assert good_id in page and (bad.name in page if case.loads else True)
        report_notes = _notes(page)
    else:
        report_notes = H._load([root])["notes"]
    if case.warned:
        assert any(bad.name in n and case.file in n for n in report_notes), report_notes
    # a resuming sweep does not count the damaged run as done, and says which file
    notes: list[str] = []
    found = sw.index(root, notes)
    if case.rerun:
        assert key not in found or not found[key].ok
        assert any(case.file in n for n in notes), notes
    if case.loads:
        assert found[key].ok == [bad] and not notes, notes


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
    tmp = root / f"{store.TMP_PREFIX}{good_runs[1].name}@{store.HOST}@999999999"  # a gone process of this host
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
