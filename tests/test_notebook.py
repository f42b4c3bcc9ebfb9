"""examples/characterize.ipynb runs top to bottom without error (and is committed without outputs)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "characterize.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None, "clear the notebook's outputs before committing"


def test_notebook_runs(tmp_path, monkeypatch, sd_run, llm_run):
    # The session's tiny runs stand in for the notebook's own (same genprof.run calls), to keep this fast.
    runs = tmp_path / "runs"
    for res in (sd_run, llm_run):
        shutil.copytree(res.path, runs / res.path.name)
    out = tmp_path / "out"
    monkeypatch.setenv("GENPROF_RUNS", str(runs))
    monkeypatch.setenv("GENPROF_OUT", str(out))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()  # raises on the first cell that fails: that is the check that every cell runs
    except Exception as e:  # CellExecutionError carries the cell and the traceback
        pytest.fail(f"notebook failed:\n{e}", pytrace=False)
    assert (out / "report.html").stat().st_size > 10_000
    assert (out / "family_breakdown.png").stat().st_size > 5_000 and (out / "family_breakdown.svg").exists()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "the figure cell displayed no image"
