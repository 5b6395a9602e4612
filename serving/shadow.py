"""The challenger in shadow: `@challenger`, when it is another version than the champion,
scored on every decision's feature row beside the champion and recorded, never acted on.

Loading it is as careful as loading the champion about what it runs, and not about the gate:
the challenger is the version the gate has not judged yet (training aliases a new version
`challenger` before any gate run), so no verdict is asked for. The rest holds: the tags read
(`ModelVersionTags`, threshold in (0, the policy's max_premium_threshold]), the `MLmodel` file
names a native Booster or the logistic regression's document (`modelcontract.artifact.
model_file`, read before any model code), the model file's sha256 checked when the version
carries one (a gate that judged it wrote it), and the Booster read from its text file by
LightGBM, the document by pydantic (no unpickling).

A challenger that fails to load is logged and there is no shadow; one that fails to score a
row is logged and that decision is recorded without it. Neither ever changes an answer or
fails a decision (`serving.service`).
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any

import numpy as np

from modelcontract import CHALLENGER, MODEL_NAME, GateTags, ModelVersionTags
from modelcontract.artifact import LINEAR_FAMILY, ArtifactError, file_sha256, model_file
from modelcontract.linear import LinearModel
from serving.model import Champion, ModelUnavailable, SingleRowScorer

logger = logging.getLogger("serving")


def load_challenger(
    tracking_uri: str,
    name: str = MODEL_NAME,
    alias: str = CHALLENGER,
    max_threshold: float = 0.5,
) -> Champion:
    """Load `models:/{name}@{alias}` to score in shadow (a `Champion` that never decides).

    Args:
        tracking_uri: The registry.
        name: The registered model.
        alias: The alias to follow.
        max_threshold: The policy's `max_premium_threshold`.

    Raises:
        ModelUnavailable: The alias is not set, a tag is missing or refused, the files are not
            a Booster's, the sha256 recorded for it does not match, or it does not score.
    """
    import lightgbm as lgb
    from mlflow.artifacts import download_artifacts
    from mlflow.tracking import MlflowClient

    where = f"models:/{name}@{alias}"
    try:
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        version = client.get_model_version_by_alias(name, alias)
        label = f"version {version.version}"
        tags = ModelVersionTags.parse(version.tags, label)
    except Exception as exc:  # noqa: BLE001 - any failure: no shadow
        raise ModelUnavailable(f"{where}: {type(exc).__name__}: {exc}") from exc
    if not 0.0 < tags.threshold <= max_threshold:
        raise ModelUnavailable(
            f"{where}: {label}'s threshold {tags.threshold} is outside (0, {max_threshold}]"
        )
    try:
        recorded: str | None = GateTags.parse(version.tags, label).model_sha256
    except Exception:  # noqa: BLE001 - not judged by a gate yet: nothing to check against
        recorded = version.tags.get("model_sha256") or None
    try:
        location = client.get_model_version_download_uri(name, version.version)
        with tempfile.TemporaryDirectory(prefix="fastrefund-shadow-") as tmp:
            local = download_artifacts(
                artifact_uri=location, dst_path=tmp, tracking_uri=tracking_uri
            )
            # A Booster, or the logistic regression's document when the search chose it.
            family, path = model_file(local)
            digest = file_sha256(path)
            if recorded is not None and digest != recorded:
                raise ArtifactError(
                    f"the model file's sha256 is {digest}, the version records {recorded}"
                )
            if family == LINEAR_FAMILY:
                booster: Any = LinearModel.from_json(path.read_bytes())
            else:
                booster = lgb.Booster(model_file=str(path))
    except Exception as exc:  # noqa: BLE001
        raise ModelUnavailable(f"{where}: {type(exc).__name__}: {exc}") from exc
    columns = tags.feature_columns
    if booster.num_feature() != len(columns):
        raise ModelUnavailable(
            f"{where}: the Booster takes {booster.num_feature()} features, "
            f"the feature_columns tag lists {len(columns)}"
        )
    try:
        fast: Any = (
            booster.score_one if isinstance(booster, LinearModel) else SingleRowScorer(booster)
        )
    except Exception as exc:  # noqa: BLE001 - Booster.predict serves alone, slower
        logger.warning(
            "challenger: fast single-row scoring unavailable",
            extra={"fields": {"error": repr(exc)}},
        )
        fast = None
    challenger = Champion(
        name,
        str(version.version),
        booster,
        tags.threshold,
        columns,
        tags.feature_set_version,
        score_one=fast,
    )
    try:
        challenger.score(np.zeros((1, len(columns))))
    except Exception as exc:  # noqa: BLE001
        raise ModelUnavailable(f"{where}: cannot score: {exc}") from exc
    return challenger
