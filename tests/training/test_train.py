"""Registering a trained model: a failure after the version is created leaves no version."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from modelcontract import MODEL_NAME
from training import registry
from training.config import TrainConfig
from training.train import fit_and_evaluate, load_training_data, log_and_register


def registered_versions(uri: str) -> int:
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return len(client.search_model_versions(f"name = '{MODEL_NAME}'"))


@pytest.mark.slow
def test_failed_alias_move_leaves_no_version(
    tracking: str, small_config: TrainConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = registry.connect()
    data = load_training_data(small_config)
    evaluation = fit_and_evaluate(data.split, small_config)

    def refuse(*args: object) -> None:
        raise RuntimeError("registry went away")

    monkeypatch.setattr(client, "set_registered_model_alias", refuse)
    with pytest.raises(RuntimeError, match="registry went away"):
        log_and_register(client, data, evaluation, small_config)
    assert registered_versions(tracking) == 0
