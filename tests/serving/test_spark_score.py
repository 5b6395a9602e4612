"""Batch scores on Spark and in pandas, and the online store fed with prebuilt features.

Spark runs in local[2] (one session for the whole run) on a small simulated world, with a
small champion registered in a temporary MLflow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import features
from features.__main__ import app as features_cli
from features.engines import read_metadata
from features.simulate import simulate, write_world
from serving.__main__ import app as cli
from serving.materialize import materialize
from serving.policy import load_policy
from serving.store import OnlineStore
from tests.serving.champions import register_champion, training_frame

AS_OF = "2025-09-01"
pytestmark = pytest.mark.slow  # Spark jobs and an MLflow model


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("spark-score")
    directory = root / "log"
    write_world(simulate(buyers=500, shops=30, days=300, seed=5), directory)
    log = features.load_log(directory)
    frame, y = training_frame(log, "2025-05-01")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    version, booster, threshold = register_champion(uri, root / "artifacts", frame, y)
    return {
        "dir": directory,
        "log": log,
        "uri": uri,
        "version": version,
        "booster": booster,
        "threshold": threshold,
        "root": root,
    }


@pytest.fixture
def tracking(world: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTREFUND_MLFLOW_TRACKING_URI", world["uri"])


@pytest.mark.parametrize("engine", ["pandas", "spark"])
def test_batch_scores_are_the_boosters_on_every_buyer(
    spark, world: dict, tracking: None, tmp_path: Path, engine: str
) -> None:
    out = tmp_path / "scores"
    args = ["score", "--engine", engine, "--data", str(world["dir"]), "--as-of", AS_OF]
    result = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"version {world['version']}" in result.output

    scores = pd.read_parquet(out).sort_values("buyer_id", ignore_index=True)
    feats = features.build_features(world["log"], AS_OF)
    expected = world["booster"].predict(feats[features.FEATURE_COLUMNS].to_numpy(np.float64))
    assert list(scores.columns) == ["buyer_id", "as_of", "score", "premium", "model_version"]
    assert scores["buyer_id"].tolist() == feats["buyer_id"].tolist()
    np.testing.assert_allclose(scores["score"].to_numpy(), expected, rtol=0, atol=1e-12)
    assert scores["premium"].dtype == bool
    assert scores["premium"].tolist() == (expected <= world["threshold"]).tolist()
    assert 0 < scores["premium"].sum() < len(scores)
    assert set(scores["model_version"]) == {world["version"]}
    assert (scores["as_of"] == pd.Timestamp(AS_OF, tz="UTC")).all()
    assert read_metadata(out)["model_version"] == world["version"]


def test_scoring_without_a_champion_is_one_clear_error(
    world: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTREFUND_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none.db'}")
    args = ["score", "--data", str(world["dir"]), "--as-of", AS_OF, "--out", str(tmp_path / "s")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "models:/buyer-quality@champion" in result.output
    assert not (tmp_path / "s").exists()


def test_materialize_from_spark_features_fills_the_same_store(
    spark, world: dict, tmp_path: Path
) -> None:
    built = tmp_path / "features"
    args = ["build", "--engine", "spark", "--data", str(world["dir"]), "--as-of", AS_OF]
    result = CliRunner().invoke(features_cli, [*args, "--out", str(built)])
    assert result.exit_code == 0, result.output
    policy = load_policy()
    computed = materialize(world["dir"], AS_OF, tmp_path / "a.db", policy)
    prebuilt = materialize(world["dir"], AS_OF, tmp_path / "b.db", policy, features_path=built)
    assert (prebuilt.buyers, prebuilt.revoked_buyers, prebuilt.eligible_shops) == (
        computed.buyers,
        computed.revoked_buyers,
        computed.eligible_shops,
    )
    a, b = OnlineStore.open(tmp_path / "a.db"), OnlineStore.open(tmp_path / "b.db")
    for buyer_id in world["log"].buyers["buyer_id"].head(200):
        left, right = a.buyer(buyer_id), b.buyer(buyer_id)
        assert (left is None) == (right is None)
        if left is not None and right is not None:
            np.testing.assert_allclose(left.features, right.features, rtol=0, atol=1e-9)
            assert (left.order_count, left.revoked) == (right.order_count, right.revoked)

    with pytest.raises(ValueError, match=r"no rows as of 2025-08-01 \(it holds \['2025-09-01'\]\)"):
        materialize(world["dir"], "2025-08-01", tmp_path / "c.db", policy, features_path=built)
    assert not (tmp_path / "c.db").exists()
