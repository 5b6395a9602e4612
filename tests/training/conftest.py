"""Fixtures for the training tests: a small simulated world and MLflow in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import DataChecks, ModelParams, SearchParams, SnapshotParams, TrainConfig


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3,000-buyer, 420-day simulated world on disk, truth.parquet included."""
    from features.simulate import simulate, write_world

    directory = tmp_path_factory.mktemp("world")
    write_world(simulate(buyers=3000, days=420, seed=7), directory)
    return directory


@pytest.fixture
def small_config(small_world: Path) -> TrainConfig:
    """Training settings sized for the small world: few rounds, 90 days of history."""
    return TrainConfig(
        data_dir=small_world,
        snapshots=SnapshotParams(min_history_days=90),
        model=ModelParams(
            num_boost_round=80, early_stopping_rounds=20, learning_rate=0.1, num_threads=1
        ),
        checks=DataChecks(min_train_rows=500, min_eval_rows=200, min_positives=5),
        search=SearchParams(trials=3),  # a tiny search: the suite trains many times
        progress=False,
    )


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """MLflow pointed at SQLite in tmp_path, run from tmp_path (artifacts in tmp_path/mlruns)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri
