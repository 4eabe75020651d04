"""The notebooks in ``notebooks/`` run headless from top to bottom, and are committed with their outputs cleared.

They run in order in one temporary folder: ``02_train_short`` trains a short runlocal run that ``03_retrieval``
then reads (``JSBIR_NOTEBOOK_RUN``), on a synthetic set prepared there (``JSBIR_DATA_DIR``); each kernel sees one
CPU device.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the test extra (pip install -e '.[test]') runs the notebooks")
nbclient = pytest.importorskip("nbclient", reason="the test extra (pip install -e '.[test]') runs the notebooks")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 600  # one cell trains a short run on a machine shared with other jobs


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["01_explore_data.ipynb", "02_train_short.ipynb", "03_retrieval.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    dirty = [i for i, cell in enumerate(code) if cell.outputs or cell.execution_count is not None]
    assert not dirty, f"{path.name}: code cells {dirty} hold outputs; clear them before committing"


@pytest.fixture(scope="module")
def notebook_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("notebooks")
    saved = {k: os.environ.get(k) for k in ("JSBIR_DATA_DIR", "JSBIR_NOTEBOOK_RUN", "XLA_FLAGS")}
    os.environ.update(JSBIR_DATA_DIR=str(tmp / "tfds"), JSBIR_NOTEBOOK_RUN=str(tmp / "run"), XLA_FLAGS="")
    yield tmp
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, notebook_env):
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()  # raises CellExecutionError naming the cell and its traceback
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.output_type == "error"]
    assert not errors
    figures = [o for cell in notebook.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert figures, f"{path.name} drew nothing"
    if path.stem == "02_train_short":
        assert (notebook_env / "run" / "report.json").exists()
