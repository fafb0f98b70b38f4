"""The notebooks run top to bottom in fast mode, and are committed without outputs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import REPO

NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = {
    "01_cnn_lstm_walkthrough.ipynb",
    "02_image_captioning.ipynb",
    "03_video_description.ipynb",
}


def test_the_notebooks_are_there():
    assert EXPECTED <= {path.name for path in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(path: Path):
    nbformat = pytest.importorskip(
        "nbformat", reason="nbformat is a dev dependency (pip install -e '.[dev]')"
    )
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, f"{path.name} has no code"
    for number, cell in enumerate(code, 1):
        assert cell.outputs == [], f"{path.name}: code cell {number} holds outputs; clear them"
        assert cell.execution_count is None, (
            f"{path.name}: code cell {number} has an execution count"
        )
    assert notebook.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.slow  # a kernel start, then a tiny training run: 5-15 s each with one thread
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_fast_mode(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    nbformat = pytest.importorskip(
        "nbformat", reason="nbformat is a dev dependency (pip install -e '.[dev]')"
    )
    nbclient = pytest.importorskip(
        "nbclient", reason="nbclient is a dev dependency (pip install -e '.[dev]')"
    )
    pytest.importorskip(
        "ipykernel", reason="ipykernel is a dev dependency (pip install -e '.[dev]')"
    )
    # The kernel inherits this environment.
    monkeypatch.setenv("LRCN_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # Tiny models on a busy 2-core machine train about 4x faster with one thread than with two.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' run folders (tempfile.mkdtemp)
    # Only the kernelspec of this interpreter's environment (not one in the user's ~/.local).
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    before = set(NOTEBOOK_DIR.rglob("*"))
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the failing cell
    seconds = time.perf_counter() - start
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.get("output_type") == "error"
    ]
    assert not errors
    streams = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.get("output_type") == "stream"
    )
    assert "fast mode: True" in streams
    assert set(NOTEBOOK_DIR.rglob("*")) == before, "a notebook wrote files next to itself"
    print(f"{path.name}: {seconds:.1f} s")
