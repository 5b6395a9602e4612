"""The champion model: loaded once from the MLflow registry, scored as a native Booster."""

from __future__ import annotations

import ctypes
import logging
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelcontract import CHAMPION, MODEL_NAME, ModelVersionTags

logger = logging.getLogger("serving")

# LightGBM C API constants (c_api.h).
_PREDICT_NORMAL = 0  # probabilities, the objective's transform applied
_DTYPE_FLOAT64 = 1


PARALLEL_ROWS = 64  # from this many rows a matrix is scored on `Champion.batch_threads`


class ModelUnavailable(RuntimeError):
    """No usable champion: missing alias, missing tags, or an unreadable model."""


@dataclass(frozen=True)
class Champion:
    """A registered model version ready to score, with what it was promoted with.

    Score = predicted probability that the buyer is bad; premium iff score <= threshold.
    """

    name: str
    version: str
    booster: Any  # a lightgbm.Booster (tests use stand-ins with the same `predict`)
    threshold: float
    feature_columns: tuple[str, ...]
    feature_set_version: str
    loaded_at: float = field(default_factory=time.time)
    score_one: Callable[[np.ndarray], float] | None = None  # a fast path for a single row
    # Threads for a matrix of at least `PARALLEL_ROWS` rows (a batch): LightGBM splits the rows
    # between them. 1,000 rows of the 300-tree champion, alone in a process: 28 ms on one
    # thread, 15 ms on two; but in the server on this 2-core machine, with the client and the
    # checkpoint thread on the other core, two threads measured no faster (8,700-9,100 vs
    # 9,200-9,500 batch decisions/s), so one is the default. Small inputs always use one.
    batch_threads: int = 1

    def score(self, rows: np.ndarray) -> np.ndarray:
        """Score feature rows (in `feature_columns` order) with the native Booster."""
        if self.score_one is not None and len(rows) < PARALLEL_ROWS:
            # A few rows (one request, or the requests of one event-loop turn): the fast
            # single-row path, row by row; after the first row the trees are in cache.
            return np.array([self.score_one(row) for row in rows], dtype=np.float64)
        threads = self.batch_threads if len(rows) >= PARALLEL_ROWS else 1
        return np.asarray(self.booster.predict(rows, num_threads=threads), dtype=np.float64)

    def score_rows(self, rows: Sequence[np.ndarray]) -> list[float]:
        """`score` for rows given one by one, as the store returns them; a list of floats."""
        if self.score_one is not None and len(rows) < PARALLEL_ROWS:
            return [self.score_one(row) for row in rows]
        scores = self.score(np.stack(rows))
        if scores.shape != (len(rows),):  # e.g. a model with several outputs a row
            raise ValueError(f"expected one score a row, got shape {scores.shape}")
        return scores.tolist()


class SingleRowScorer:
    """LightGBM's fast single-row prediction, set up once for a Booster.

    `Booster.predict` converts its input, parses its parameters and prepares a predictor on
    every call: ~60 us for one row, three times the tree walk itself. LightGBM's C API can do
    that preparation once (`LGBM_BoosterPredictForMatSingleRowFastInit`) and then score a row
    with `LGBM_BoosterPredictForMatSingleRowFast`; this calls them through the library handle
    the lightgbm package loaded, as its own code does. The answer equals `Booster.predict`
    (see the tests).
    """

    def __init__(self, booster: Any):
        from lightgbm.basic import _LIB, _safe_call  # LightGBM's own ctypes handle

        self._check = _safe_call
        self._booster = booster  # the C config points into it: keep it alive as long
        self.n_features = int(booster.num_feature())
        if booster.num_model_per_iteration() != 1:
            raise ValueError("one output per row expected (a binary or regression model)")
        # The iterations `Booster.predict` uses by default: the best one if training set it.
        iterations = int(getattr(booster, "best_iteration", 0) or 0)
        config = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(_PREDICT_NORMAL),
                ctypes.c_int(0),  # start iteration
                ctypes.c_int(iterations if iterations > 0 else -1),
                ctypes.c_int(_DTYPE_FLOAT64),
                ctypes.c_int32(self.n_features),
                b"num_threads=1",
                ctypes.byref(config),
            )
        )
        self._config = config
        weakref.finalize(self, _LIB.LGBM_FastConfigFree, config)
        # The call itself through a handle of our own on the same library, with its argument
        # types declared (LightGBM's handle is left as it is): pointers pass as plain ints and
        # the outputs are allocated once, which takes ~10 us off every row (cold caches).
        predict = ctypes.CDLL(_LIB._name).LGBM_BoosterPredictForMatSingleRowFast
        predict.argtypes = [ctypes.c_void_p] * 4
        predict.restype = ctypes.c_int
        self._predict = predict
        self._result, self._length = ctypes.c_double(), ctypes.c_int64()
        self._outputs = (ctypes.addressof(self._length), ctypes.addressof(self._result))

    def __call__(self, row: np.ndarray) -> float:
        """The probability for one feature row (float64, in the model's column order).

        Not for concurrent use: one scorer answers one row at a time (the event loop).

        Raises:
            ValueError: The row does not have the model's number of features.
        """
        if row.dtype != np.float64 or not row.flags.c_contiguous:
            row = np.ascontiguousarray(row, dtype=np.float64)
        if row.shape != (self.n_features,):
            raise ValueError(f"expected {self.n_features} features, got shape {row.shape}")
        if self._predict(self._config.value, row.ctypes.data, *self._outputs) != 0:
            self._check(-1)  # raises LightGBM's error for the failed call
        return self._result.value


def _single_row_scorer(booster: Any) -> SingleRowScorer | None:
    """The fast path when it can be set up; otherwise `Booster.predict` serves alone."""
    try:
        return SingleRowScorer(booster)
    except Exception as exc:  # noqa: BLE001 - an optimization must not take the model down
        logger.warning(
            "fast single-row scoring unavailable", extra={"fields": {"error": repr(exc)}}
        )
        return None


def champion_version(
    tracking_uri: str, name: str = MODEL_NAME, alias: str = CHAMPION
) -> str | None:
    """The version `models:/{name}@{alias}` points at now; None when the alias is not set.

    One registry query (no download): cheap enough to ask every minute.

    Raises:
        Exception: The registry cannot be asked (MLflow's own error).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None  # no such model or alias yet: nothing to load
        raise


def load_champion(tracking_uri: str, name: str = MODEL_NAME, alias: str = CHAMPION) -> Champion:
    """Load `models:/{name}@{alias}` and the tags it was registered with (the contract's
    `ModelVersionTags`: a finite threshold, a non-empty list of feature columns).

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
        tags = ModelVersionTags.parse(version.tags, f"version {version.version}")
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
    columns = tags.feature_columns
    n_features = getattr(booster, "num_feature", lambda: len(columns))()
    if n_features != len(columns):
        raise ModelUnavailable(
            f"models:/{name}@{alias}: the Booster takes {n_features} features, "
            f"the feature_columns tag lists {len(columns)}"
        )
    champion = Champion(
        name,
        str(version.version),
        booster,
        tags.threshold,
        columns,
        tags.feature_set_version,
        score_one=_single_row_scorer(booster),
    )
    try:
        probe = np.zeros((2, len(columns)))  # fail now, not on the first request
        champion.score(probe[:1])
        champion.score(probe)
    except Exception as exc:  # noqa: BLE001
        raise ModelUnavailable(f"models:/{name}@{alias}: cannot score: {exc}") from exc
    return champion
