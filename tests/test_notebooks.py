"""Analyst notebooks run top to bottom without error."""

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# what each notebook prints when it has done its job
MARKERS = {
    "01_quickstart.ipynb": "pooled MSE ratio:",
    "02_regional_forecast.ipynb": "regional forecast done:",
    "03_meta_analysis.ipynb": "meta-analysis done:",
    "04_scheduled_flows.ipynb": "flows done:",
    "ensemble_trends.ipynb": "pooled trend map:",
}
BUDGET_S = 180  # the bound for each notebook on 2 cores
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("SPATIALMETA_SHARED_DATA", str(SHARED))  # the kernel inherits it
    nb = nbformat.read(path, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        f"{path.name} is stored with outputs; clear them before committing"
    )
    start = time.perf_counter()
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert MARKERS[path.name] in text
    elapsed = time.perf_counter() - start
    assert elapsed < BUDGET_S, f"{path.name} took {elapsed:.0f} s (bound {BUDGET_S} s)"


def test_there_is_a_notebook():
    assert NOTEBOOKS, "notebooks/ has no notebook"
    assert {p.name for p in NOTEBOOKS} == set(MARKERS), "give every notebook a marker"
