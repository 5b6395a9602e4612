"""Batch scores: every buyer of a log as of a date, scored by the registry's champion.

`python -m serving score` computes the features with an engine (pandas in one process, or
Spark on a cluster: the same `features.build_features` per buyer partition) and scores
them with `models:/buyer-quality@champion` as serving loads it (`serving.model.load_champion`:
the version, its threshold and feature list tags). It writes buyer_id, as_of, score,
premium (score <= the version's threshold) and model_version as a Parquet dataset folder.

On Spark the scores are computed by the native LightGBM Booster in `mapInPandas`, not by
`mlflow.pyfunc.spark_udf`. Both were measured on the same features (benchmarks/bench_spark.py,
docs/spark.md): the Booster path is faster because it is one `Booster.predict` call per Arrow
batch on a NumPy matrix, where the pyfunc UDF wraps each batch in a pandas frame, checks it
against the signature and goes through the pyfunc wrapper (and loads the model from the
artifacts in every Python worker); and its scores are the Booster's by construction, the
ones serving answers with.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import features
from features.engines import DEFAULT_MASTER, feature_columns, open_log
from modelcontract.artifact import LINEAR_FAMILY
from modelcontract.linear import LinearModel

SCORE_COLUMNS = {
    "buyer_id": "string",
    "as_of": "timestamp",
    "score": "double",
    "premium": "bool",
    "model_version": "string",
}

# One Booster per model per process: a Spark Python worker scores many batches and tasks.
_BOOSTERS: dict[str, Any] = {}


@dataclass(frozen=True)
class BatchScorer:
    """What a process needs of the champion to score: picklable, sent to Spark's workers."""

    # The Booster as LightGBM's model text (exact: thresholds in full precision), or the
    # linear model's JSON document (family "logistic").
    model: str
    feature_columns: tuple[str, ...]
    threshold: float
    version: str
    family: str = "lightgbm"

    @classmethod
    def from_champion(cls, champion: Any) -> BatchScorer:
        """From a `serving.model.Champion` (its model, tags and version)."""
        linear = isinstance(champion.booster, LinearModel)
        return cls(
            champion.booster.to_json() if linear else champion.booster.model_to_string(),
            tuple(champion.feature_columns),
            float(champion.threshold),
            str(champion.version),
            LINEAR_FAMILY if linear else "lightgbm",
        )

    def booster(self) -> Any:
        """The model (a Booster or a LinearModel), built once per process."""
        key = hashlib.sha256(f"{self.family}:{self.model}".encode()).hexdigest()
        if key not in _BOOSTERS:
            if self.family == LINEAR_FAMILY:
                _BOOSTERS[key] = LinearModel.from_json(self.model)
            else:
                import lightgbm as lgb

                _BOOSTERS[key] = lgb.Booster(model_str=self.model)
        return _BOOSTERS[key]

    def score(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Score feature rows (buyer_id, as_of and at least the model's feature columns)."""
        rows = frame[list(self.feature_columns)].to_numpy(dtype=np.float64)
        scores = (
            np.asarray(self.booster().predict(rows, num_threads=1), dtype=np.float64)
            if len(rows)
            else np.empty(0)
        )
        return pd.DataFrame(
            {
                "buyer_id": frame["buyer_id"].reset_index(drop=True),
                "as_of": frame["as_of"].reset_index(drop=True),
                "score": scores,
                "premium": scores <= self.threshold,
                "model_version": self.version,
            }
        )


@dataclass(frozen=True)
class ScoreReport:
    """What a scoring run wrote."""

    out: Path
    as_of: str
    rows: int
    premium: int
    model_version: str
    threshold: float
    engine: str


def _score_partition(log: features.TransactionLog, as_of: pd.Timestamp, scorer: BatchScorer):
    """The pandas engine's job: features of one partition, scored."""
    return scorer.score(features.build_features(log, as_of, partitions=1))


def _score_batches(batches: Iterator[pd.DataFrame], scorer: BatchScorer) -> Iterator[pd.DataFrame]:
    """The Spark engine's scorer: each Arrow batch of features, scored (in mapInPandas)."""
    for batch in batches:
        yield scorer.score(batch)


def score_log(
    data_dir: str | Path,
    as_of: object,
    out: str | Path,
    champion: Any,
    engine: str = "pandas",
    master: str = DEFAULT_MASTER,
    partitions: int | None = None,
) -> ScoreReport:
    """Score every buyer registered before T with `champion` and write the scores to `out`.

    Args:
        data_dir: The log.
        as_of: The as-of date D (features known at D 00:00 UTC); None: the end of the log.
        out: The dataset folder to write (replaced whole, atomically).
        champion: A `serving.model.Champion` (`load_champion`).
        engine: "pandas" or "spark".
        master: Spark's master URL.
        partitions: Buyer partitions (default: the engine's rule).

    Raises:
        ValueError: The as-of date is outside the log, or the champion was trained on
            another feature set.
        features.LogFileError, features.LogValidationError: The log cannot be used.
        features.engines.EngineUnavailable: Spark cannot start.
    """
    if champion.feature_set_version != features.FEATURE_SET_VERSION:
        raise ValueError(
            f"the champion (version {champion.version}) was trained on feature set "
            f"{champion.feature_set_version!r}; this code computes "
            f"{features.FEATURE_SET_VERSION!r}"
        )
    log = open_log(data_dir, engine=engine, master=master, partitions=partitions)
    if as_of is None:
        known_at = log.span.last_as_of()
        if known_at is None:
            raise ValueError("the log has no end (no meta.json and no timestamps); give --as-of")
    else:
        known_at = log.span.check_as_of(as_of)
    scorer = BatchScorer.from_champion(champion)
    metadata = {
        "kind": "batch-scores",
        "as_of": known_at.date().isoformat(),
        "model_version": scorer.version,
        "threshold": scorer.threshold,
        "feature_set_version": features.FEATURE_SET_VERSION,
        "engine": engine,
    }
    out = Path(out)
    if engine == "spark":
        from features.engines.spark import SparkLog, spark_schema
        from features.engines.spark_session import quiet_pandas3_warning

        assert isinstance(log, SparkLog)
        log.check_unique_ids()
        feats = log.frame(
            partial(features.build_features, as_of_dates=known_at, partitions=1), feature_columns()
        )
        with quiet_pandas3_warning():
            scored = feats.mapInPandas(
                partial(_score_batches, scorer=scorer), spark_schema(SCORE_COLUMNS)
            )
        rows = log.write(scored, out, metadata)
    else:
        job = partial(_score_partition, as_of=known_at, scorer=scorer)
        rows = log.map_partitions(job, SCORE_COLUMNS, out, metadata)
    premium = int(pd.read_parquet(out, columns=["premium"])["premium"].sum())
    return ScoreReport(
        out, known_at.date().isoformat(), rows, premium, scorer.version, scorer.threshold, engine
    )
