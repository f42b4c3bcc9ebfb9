"""Run directories: atomic writes, failed runs kept, corrupt files reported by name."""

from __future__ import annotations

import warnings

import pytest

import genprof
from genprof import store
from genprof.errors import GenprofError


def test_load_runs_returns_one_table_over_many_runs(sd_run, llm_run, runs_dir):
    ops = genprof.load_runs(runs_dir)
    assert {sd_run.meta["run_id"], llm_run.meta["run_id"]} <= set(ops["run_id"])
    assert list(ops.columns[:4]) == ["run_id", "workload", "size", "optimizations"]
    runs = genprof.load_runs(runs_dir, table="runs")
    assert set(runs["status"]) == {"ok"} and {"stable-diffusion", "llm"} <= set(runs["workload"])
    phases = genprof.load_runs(runs_dir, table="phases")
    assert {"prefill", "decode", "denoise"} <= set(phases["phase"])


def test_run_json_records_spec_environment_and_status(sd_run):
    meta = store.read_run(sd_run.path)
    assert meta["status"] == "ok"
    assert meta["spec"]["workload"] == "stable-diffusion" and meta["spec"]["size"] == "tiny"
    env = meta["environment"]
    for key in ("python", "torch", "diffusers", "transformers", "device_name", "cpu_count"):
        assert env[key], key
    assert meta["info"]["parameters"]["unet"] > 0


def test_an_unfinished_run_is_invisible_and_a_committed_one_appears_whole(tmp_path):
    w = store.RunWriter(tmp_path, "r1")
    (w.path("ops.parquet")).write_bytes(b"partial")
    assert store.run_dirs(tmp_path) == []  # killed here: nothing half-written is visible
    w.commit({"run_id": "r1", "status": "ok", "spec": {}})
    assert store.run_dirs(tmp_path) == [tmp_path / "r1"]
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())


def test_corrupt_run_json_is_skipped_with_a_warning_naming_the_file(tmp_path, sd_run):
    import shutil

    shutil.copytree(sd_run.path, tmp_path / "good")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "run.json").write_text('{"run_id": "x", "stat')
    with pytest.warns(UserWarning, match=r"bad/run.json"):
        ops = genprof.load_runs(tmp_path)
    assert set(ops["run_id"]) == {sd_run.meta["run_id"]}


def test_truncated_op_table_is_reported_by_name(tmp_path, sd_run):
    import shutil

    d = tmp_path / "run"
    shutil.copytree(sd_run.path, d)
    data = (d / "ops.parquet").read_bytes()
    (d / "ops.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(GenprofError, match="corrupt .*ops.parquet"):
        store.read_table(d)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert genprof.load_runs(tmp_path).empty
    assert any("ops.parquet" in str(w.message) for w in caught)


def test_not_a_run_directory(tmp_path):
    with pytest.raises(GenprofError, match="not a genprof run directory"):
        store.read_run(tmp_path)
    with pytest.raises(GenprofError, match="does not exist"):
        genprof.load_runs(tmp_path / "missing")


def test_existing_run_directory_is_never_overwritten(tmp_path):
    (tmp_path / "r1").mkdir()
    with pytest.raises(GenprofError, match="already exists"):
        store.RunWriter(tmp_path, "r1")
