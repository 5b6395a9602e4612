"""The champion model: loaded once from the MLflow registry, scored as a native Booster."""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np


class ModelUnavailable(RuntimeError):
    """No usable champion: missing alias, missing tags, or an unreadable model."""


@dataclass(frozen=True)
class Champion:
    """A registered model version ready to score, with what it was promoted with.

    Score = predicted probability that the buyer is bad; premium iff score <= threshold.
    """

    name: str
    version: str
    booster: object
    threshold: float
    feature_columns: tuple[str, ...]
    feature_set_version: str
    loaded_at: float = field(default_factory=time.time)

    def score(self, rows: np.ndarray) -> np.ndarray:
        """Score feature rows (in `feature_columns` order) with the native Booster."""
        return np.asarray(self.booster.predict(rows, num_threads=1), dtype=np.float64)


def load_champion(
    tracking_uri: str, name: str = "buyer-quality", alias: str = "champion"
) -> Champion:
    """Load `models:/{name}@{alias}` and the tags it was registered with.

    The tracking URI is passed explicitly; no global MLflow state is changed.

    Raises:
        ModelUnavailable: The alias is not set, a tag is missing, or the model does not load.
    """
    # Imported here: MLflow is heavy and nothing may load at import time.
    import mlflow.lightgbm
    from mlflow.artifacts import download_artifacts
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        version = client.get_model_version_by_alias(name, alias)
        tags = version.tags or {}
        threshold = float(tags["threshold"])
        columns = tuple(json.loads(tags["feature_columns"]))
        feature_set_version = str(tags.get("feature_set_version", ""))
        # The version's own storage location: resolving "models:/..." would go through the
        # global registry URI instead of this one.
        location = client.get_model_version_download_uri(name, version.version)
        with tempfile.TemporaryDirectory(prefix="fastrefund-model-") as tmp:
            local = download_artifacts(
                artifact_uri=location, dst_path=tmp, tracking_uri=tracking_uri
            )
            booster = mlflow.lightgbm.load_model(local)
    except Exception as exc:  # noqa: BLE001 - any failure means there is no usable champion
        raise ModelUnavailable(f"models:/{name}@{alias}: {type(exc).__name__}: {exc}") from exc
    if not math.isfinite(threshold) or not columns:
        raise ModelUnavailable(f"models:/{name}@{alias}: bad threshold or feature_columns tags")
    n_features = getattr(booster, "num_feature", lambda: len(columns))()
    if n_features != len(columns):
        raise ModelUnavailable(
            f"models:/{name}@{alias}: the Booster takes {n_features} features, "
            f"the feature_columns tag lists {len(columns)}"
        )
    champion = Champion(
        name, str(version.version), booster, threshold, columns, feature_set_version
    )
    try:
        champion.score(np.zeros((1, len(columns))))  # fail now, not on the first request
    except Exception as exc:  # noqa: BLE001
        raise ModelUnavailable(f"models:/{name}@{alias}: cannot score: {exc}") from exc
    return champion
