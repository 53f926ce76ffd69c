"""examples/analysis.ipynb executes without errors on a store this test creates (so it cannot rot), and is committed
executed on the demo's store (its tables and figure visible where the repository is browsed)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from ensemble_stats.testing import synthetic_ensemble

from .conftest import store_from_synthetic

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "analysis.ipynb"


def test_analysis_notebook_executes(tmp_path, monkeypatch):
    ds = synthetic_ensemble(gammas=[0.5, 0.75, 1.0], widths=[32, 64, 128], n_seeds=8, n_points=4, seed=41)
    store = store_from_synthetic(tmp_path / "nb.zarr", ds)
    monkeypatch.setenv("ENSEMBLE_STORE", str(store.path))
    monkeypatch.setenv("NOTEBOOK_FIGURE", str(tmp_path / "variance.png"))
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "cells fitted:" in text and "theory" in text
    assert (tmp_path / "variance.png").stat().st_size > 5000
    assert any("image/png" in o.get("data", {}) for o in outputs), "the figure is not shown inline"
    assert os.environ["ENSEMBLE_STORE"] == str(store.path)


def test_the_committed_notebook_carries_its_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "run top to bottom once, then commit"
    assert all(c.get("outputs") for c in code), "every code cell shows what it computed"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the figure is committed inline"
    text = "".join(o.get("text", "") for o in outputs)
    assert "cells fitted:" in text and "slope of log variance vs log N" in text
