"""Serving trusts nothing the registry hands over: a version is loaded only with the gate's
verdict, a threshold within the policy's cap, an `MLmodel` naming a native Booster and the
model file the gate recorded; the Booster is read from its file, never unpickled."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from mlflow import MlflowClient

import features
from modelcontract.artifact import file_sha256
from serving.model import ModelUnavailable, load_champion
from tests.serving.champions import MODEL, register_champion

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, pd.DataFrame, str]:
    """A registry with one champion version, promoted as the gate would."""
    root = tmp_path_factory.mktemp("trust")
    rng = np.random.default_rng(0)
    columns = list(features.FEATURE_COLUMNS)
    frame = pd.DataFrame(rng.random((300, len(columns))), columns=columns)
    uri, artifacts = f"sqlite:///{root / 'mlflow.db'}", root / "artifacts"
    y = (frame.iloc[:, 0] > 0.8).astype(int).to_numpy()
    version, _, _ = register_champion(uri, artifacts, frame, y, threshold_quantile=0.1)
    return uri, artifacts, frame, version


@contextmanager
def retagged(registry, **tags: str) -> Iterator[None]:
    """The champion with these tags changed ("" deletes one), put back afterwards."""
    uri, _, _, version = registry
    client = MlflowClient(uri)
    before = client.get_model_version(MODEL, version).tags
    for key, value in tags.items():
        if value == "":
            client.delete_model_version_tag(MODEL, version, key)
        else:
            client.set_model_version_tag(MODEL, version, key, value)
    try:
        yield
    finally:
        for key in tags:
            if key in before:
                client.set_model_version_tag(MODEL, version, key, before[key])
            else:
                client.delete_model_version_tag(MODEL, version, key)


def _load(registry) -> str:
    return load_champion(registry[0], MODEL, "champion", 0.5).version


def test_a_promoted_version_loads(registry) -> None:
    assert _load(registry) == registry[3]


@pytest.mark.parametrize("threshold", ["1.0", "0.5000001", "0", "-0.01"])
def test_a_threshold_outside_the_policy_cap_is_refused(registry, threshold: str) -> None:
    with retagged(registry, threshold=threshold):
        with pytest.raises(ModelUnavailable, match=r"outside \(0, 0.5\]"):
            _load(registry)


def test_an_alias_set_by_hand_without_a_gate_verdict_is_refused(registry) -> None:
    with retagged(registry, gate_verdict="", gate_run_id=""):
        with pytest.raises(ModelUnavailable, match="tag gate_verdict: missing"):
            _load(registry)
    with retagged(registry, gate_verdict="refused"):
        with pytest.raises(ModelUnavailable, match="refused by the promotion gate"):
            _load(registry)
    # A forced promotion is the gate's record of an operator's decision: it serves.
    with retagged(registry, gate_verdict="forced", gate_reason="incident 42"):
        assert _load(registry) == registry[3]


def test_a_model_file_other_than_the_one_the_gate_recorded_is_refused(registry) -> None:
    with retagged(registry, model_sha256="0" * 64):
        with pytest.raises(ModelUnavailable, match="sha256"):
            _load(registry)
    with retagged(registry, model_sha256=""):
        with pytest.raises(ModelUnavailable, match="tag model_sha256: missing"):
            _load(registry)


class _Payload:
    """Unpickling this writes a file: the proof that a load ran the registry's code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


def test_a_model_class_that_mlflow_would_unpickle_is_refused_before_reading(
    registry, tmp_path: Path
) -> None:
    uri, artifacts, frame, _ = registry
    y = (frame.iloc[:, 0] > 0.8).astype(int).to_numpy()
    version, _, _ = register_champion(uri, artifacts, frame, y, threshold_quantile=0.1, seed=1)
    client = MlflowClient(uri)
    folder = Path(urlsplit(client.get_model_version_download_uri(MODEL, version)).path)
    described = yaml.safe_load((folder / "MLmodel").read_text())
    described["flavors"]["lightgbm"].update(
        model_class="lightgbm.sklearn.LGBMClassifier", serialization_format="pickle"
    )
    (folder / "MLmodel").write_text(yaml.safe_dump(described))
    marker = tmp_path / "marker"
    (folder / "model.lgb").write_bytes(pickle.dumps(_Payload(marker)))
    # Even with the gate's digest of that very file.
    client.set_model_version_tag(MODEL, version, "model_sha256", file_sha256(folder / "model.lgb"))
    with pytest.raises(ModelUnavailable, match="model_class"):
        _load(registry)
    assert not marker.exists()


def test_mlflow_pickle_switch_is_off_while_serving(client: TestClient) -> None:
    assert os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"
