"""Every notebook runs top to bottom on a small world, so none can rot."""

from __future__ import annotations

import os
from pathlib import Path

import nbclient
import nbformat
import pytest

from features.simulate import simulate, write_world

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated world that every notebook reads through FASTREFUND_DATA."""
    data = tmp_path_factory.mktemp("world")
    write_world(simulate(buyers=3_000, shops=150, days=480, seed=3), data)
    return data


def test_notebooks_are_found_and_stored_without_outputs() -> None:
    assert len(NOTEBOOKS) >= 1
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert code, f"{path.name} has no code"
        assert all(not cell.outputs and cell.execution_count is None for cell in code), (
            f"{path.name} is stored with outputs; strip them"
        )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(
    path: Path, small_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTREFUND_DATA", str(small_world))
    monkeypatch.setenv("FASTREFUND_WORKDIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(env=dict(os.environ))
