"""Analyst notebooks run top to bottom without error."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# what each notebook prints when it has done its job
MARKERS = {"quickstart.ipynb": "pooled MSE ratio:", "ensemble_trends.ipynb": "pooled trend map:"}
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("SPATIALMETA_SHARED_DATA", str(SHARED))  # the kernel inherits it
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert MARKERS[path.name] in text


def test_there_is_a_notebook():
    assert NOTEBOOKS, "notebooks/ has no notebook"
    assert {p.name for p in NOTEBOOKS} == set(MARKERS), "give every notebook a marker"
