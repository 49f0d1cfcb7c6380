"""The notebooks run top to bottom at their default (small) sizes, as a user would run them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fraudgen.schema import SCENARIOS

nbformat = pytest.importorskip("nbformat", reason="nbformat/nbclient/ipykernel (dev extra) execute notebooks")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run the notebook in a fresh kernel; return the text of every output."""
    # one BLAS/OpenMP thread: the kernel shares a small machine with the rest of the suite
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()  # raises CellExecutionError naming the cell on any exception or failed assert
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", output
            texts.append(output.get("text", ""))
            texts.append(str(output.get("data", {}).get("text/plain", "")))
    return texts


def test_quickstart_generates_inspects_and_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.get("outputs") for cell in code_cells), "commit notebooks without outputs"
    texts = "\n".join(execute("quickstart.ipynb", monkeypatch))
    assert "fraud rate:" in texts
    for scenario in SCENARIOS:
        assert scenario in texts


def test_train_detector_reports_per_scenario_recall(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = execute("train_detector.ipynb", monkeypatch)
    table = next(t for t in texts if "recall" in t and "precision" in t and "AP" in t)
    for scenario in SCENARIOS:
        assert scenario in table
    summary = next(t for t in texts if "best single feature" in t)
    assert "full model AP" in summary


def test_notebooks_are_committed_clean_and_self_contained() -> None:
    # the notebooks import only the library and public packages; no path hacks or secrets in them
    for path in NOTEBOOKS.glob("*.ipynb"):
        text = path.read_text(encoding="utf-8")
        assert "sys.path" not in text and "os.environ[" not in text, path
        assert os.path.getsize(path) < 64_000, f"{path.name}: strip outputs before committing"
