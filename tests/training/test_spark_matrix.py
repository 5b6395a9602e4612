"""The training matrix built by an engine, and `train --matrix` reading it.

Spark runs in local[2] (one session for the whole run) on the small training world.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import features
from training.__main__ import app
from training.config import SnapshotParams, TrainConfig
from training.errors import TrainingDataError
from training.matrix import matrix_columns, read_matrix
from training.snapshots import build_snapshots, snapshot_dates
from training.train import load_training_data

PARAMS = SnapshotParams(min_history_days=90)


@pytest.fixture(scope="module")
def matrices(spark, small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The matrix of the small world built by `training snapshots` with each engine."""
    out = tmp_path_factory.mktemp("matrices")
    built = {}
    for engine in ("pandas", "spark"):
        args = ["snapshots", "--data", str(small_world), "--out", str(out / engine)]
        args += ["--engine", engine, "--min-history-days", "90"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert f"engine {engine}" in result.output
        built[engine] = out / engine
    return built


@pytest.mark.slow
def test_the_spark_matrix_equals_build_snapshots_row_for_row(
    matrices: dict, small_world: Path
) -> None:
    log = features.load_log(small_world)
    want = build_snapshots(log, snapshot_dates(log, PARAMS), PARAMS)
    assert want["bad"].sum() > 20 and want["as_of"].nunique() >= 4
    for engine, folder in matrices.items():
        got, meta = read_matrix(folder, PARAMS, features.fingerprint(small_world))
        assert meta["engine"] == engine
        assert list(got.columns) == list(want.columns) == list(matrix_columns())
        assert got.dtypes.to_dict() == want.dtypes.to_dict()
        keys = ["buyer_id", "as_of", "bad"]
        pd.testing.assert_frame_equal(got[keys], want[keys], check_exact=True)
        values = got[features.FEATURE_COLUMNS].to_numpy()
        expected = want[features.FEATURE_COLUMNS].to_numpy()
        assert np.allclose(values, expected, rtol=0, atol=1e-9, equal_nan=True), engine


@pytest.mark.slow
def test_training_reads_the_matrix_into_the_same_split(
    matrices: dict, small_config: TrainConfig
) -> None:
    direct = load_training_data(small_config).split
    from_matrix = load_training_data(
        small_config.model_copy(update={"matrix_dir": matrices["spark"]})
    )
    for name in ("train", "valid", "test"):
        a, b = getattr(from_matrix.split, name), getattr(direct, name)
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=0, atol=1e-9)
    assert from_matrix.split.purged == direct.purged
    assert from_matrix.fingerprint == features.fingerprint(small_config.data_dir)


@pytest.mark.slow
def test_a_matrix_built_with_other_settings_or_data_is_refused(matrices: dict) -> None:
    folder = matrices["pandas"]
    with pytest.raises(TrainingDataError, match=r"horizon_days=90 \(this run: 60\)"):
        read_matrix(folder, SnapshotParams(min_history_days=90, horizon_days=60))
    with pytest.raises(TrainingDataError, match="built from other data"):
        read_matrix(folder, PARAMS, "0" * 64)
    with pytest.raises(TrainingDataError, match="not a training matrix"):
        read_matrix(folder.parent, PARAMS)
