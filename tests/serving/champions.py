"""Train a small LightGBM champion on a simulated world and register it in a temporary MLflow
the way training does (native Booster, signature, input example, the tags serving reads) and
stamp it as the promotion gate would (verdict, model file sha256)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.models import infer_signature

import features
from modelcontract import GateTags
from modelcontract.artifact import booster_file, file_sha256

MODEL = "buyer-quality"


def training_frame(log: features.TransactionLog, as_of: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Features as of `as_of` and the matured bad label (NA as good, for a tiny test model)."""
    frame = features.build_features(log, [as_of])
    label = features.labels(log, as_of, horizon_days=60, maturity_days=20)
    merged = frame.merge(label[["buyer_id", "bad"]], on="buyer_id", how="left")
    return merged, merged["bad"].fillna(0).astype(int).to_numpy()


def stamp_promoted(
    client: MlflowClient, tracking_uri: str, version: str, verdict: str = "promoted"
) -> str:
    """Give a version the tags the promotion gate writes (`GateTags`: the verdict, a run id,
    its model file's sha256), as if the gate had judged it; returns the sha256."""
    location = client.get_model_version_download_uri(MODEL, version)
    with tempfile.TemporaryDirectory() as tmp:
        local = download_artifacts(artifact_uri=location, dst_path=tmp, tracking_uri=tracking_uri)
        digest = file_sha256(booster_file(local))
    tags = GateTags(gate_verdict=verdict, gate_run_id="test-gate", model_sha256=digest)  # type: ignore[arg-type]
    for key, value in tags.to_tags().items():
        client.set_model_version_tag(MODEL, version, key, value)
    return digest


def register_champion(
    tracking_uri: str,
    artifacts: Path,
    frame: pd.DataFrame,
    y: np.ndarray,
    threshold_quantile: float = 0.5,
    seed: int = 0,
    alias: str | None = "champion",
) -> tuple[str, lgb.Booster, float]:
    """Log, register and alias a Booster; returns (version, booster, threshold)."""
    columns = list(features.FEATURE_COLUMNS)
    x = frame[columns].to_numpy(dtype=np.float64)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 8, "seed": seed, "num_threads": 1},
        lgb.Dataset(x, label=y, feature_name=columns),
        num_boost_round=15 + seed,
    )
    threshold = float(np.quantile(booster.predict(x), threshold_quantile))
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        client = MlflowClient(tracking_uri)
        name = f"serving-tests-{artifacts.name}"
        experiment = client.get_experiment_by_name(name)
        experiment_id = (
            experiment.experiment_id
            if experiment
            else client.create_experiment(name, artifact_location=artifacts.resolve().as_uri())
        )
        example = pd.DataFrame(x[:2], columns=columns)
        with mlflow.start_run(experiment_id=experiment_id):
            info = mlflow.lightgbm.log_model(
                booster,
                name="model",
                signature=infer_signature(example, booster.predict(x[:2])),
                input_example=example,
                registered_model_name=MODEL,
            )
        version = str(info.registered_model_version)
        for key, value in {
            "threshold": str(threshold),
            "feature_columns": json.dumps(columns),
            "feature_set_version": features.FEATURE_SET_VERSION,
            "data_window": "test",
            "target_bad_rate": "0.05",
        }.items():
            client.set_model_version_tag(MODEL, version, key, value)
        stamp_promoted(client, tracking_uri, version)
        if alias:
            client.set_registered_model_alias(MODEL, alias, version)
    finally:
        mlflow.set_tracking_uri(previous)
    return version, booster, threshold
