"""The model and the two baselines a risk team would start from, fitted on the same rows.

Every scorer maps a feature frame to P(bad), so they are judged by the same metrics and
the same threshold policy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Protocol

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from modelcontract.linear import LinearModelSpec
from training.config import ModelParams

# The hand rule looks at these counts, worst first: confirmed abuse outranks any number of
# disputes, which outrank any number of recent refunds.
HAND_RULE_COLUMNS = ("confirmed_abuse_total", "disputes_365d", "refunds_90d")
_HAND_RULE_CAP = 9

# The run's baselines, fitted on the same rows as the model and logged with its run as plain
# numbers (no pickle): the promotion gate scores them on its month and refuses a challenger
# significantly worse than one of them.
BASELINE_ARTIFACTS = {
    "hand_rule": "baselines/hand_rule.json",
    "logistic": "baselines/logistic.json",
}


class Scorer(Protocol):
    """Anything that maps a feature frame to P(bad) per row."""

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """P(bad) for each row of `frame`."""
        ...


def usable_cores() -> int:
    """Cores this process may run on (cgroup/affinity aware, unlike OpenMP's default)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def lightgbm_params(params: ModelParams) -> dict:
    """LightGBM's parameter dict, deterministic for a fixed seed.

    Threads default to the usable cores: OpenMP's own default counts the host's CPUs and
    oversubscribes a container (7x slower measured on a 2-core machine).
    """
    return {
        "objective": "binary",
        "metric": ["binary_logloss", "auc"],
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "min_data_in_leaf": params.min_data_in_leaf,
        "feature_fraction": params.feature_fraction,
        "bagging_fraction": params.bagging_fraction,
        "bagging_freq": 1,
        "lambda_l2": params.lambda_l2,
        "seed": params.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": params.num_threads or usable_cores(),
        "verbosity": -1,
    }


def fit_lightgbm(
    train_x: pd.DataFrame,
    train_y: np.ndarray,
    valid_x: pd.DataFrame,
    valid_y: np.ndarray,
    params: ModelParams,
) -> lgb.Booster:
    """Boost on the training rows, stopping when validation log loss stops improving.

    Returns:
        The Booster cut to its best iteration; its feature names are the frame's columns.
    """
    train_set = lgb.Dataset(train_x, label=train_y, free_raw_data=True)
    valid_set = lgb.Dataset(valid_x, label=valid_y, reference=train_set)
    booster = lgb.train(
        lightgbm_params(params),
        train_set,
        num_boost_round=params.num_boost_round,
        valid_sets=[valid_set],
        valid_names=["valid"],
        callbacks=[
            lgb.early_stopping(params.early_stopping_rounds, first_metric_only=True, verbose=False)
        ],
    )
    # Keep only the trees up to the best iteration, so the logged model is what was judged.
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))


@dataclass
class BoosterScorer:
    """A LightGBM Booster as a Scorer (input in the Booster's feature order)."""

    booster: lgb.Booster

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """P(bad) for each row of `frame`."""
        columns = self.booster.feature_name()
        return np.asarray(self.booster.predict(frame[columns].to_numpy(np.float64)))


@dataclass
class HandRule:
    """Points from recent refunds, disputes and confirmed abuse, worst count first.

    The ordering is fixed by hand; fitting only maps points to an observed bad rate
    (monotone, so the hand ordering is kept) to make its scores comparable as probabilities.
    """

    columns: tuple[str, ...] = HAND_RULE_COLUMNS
    calibration: IsotonicRegression = field(
        default_factory=lambda: IsotonicRegression(
            y_min=1e-4, y_max=1 - 1e-4, increasing=True, out_of_bounds="clip"
        )
    )

    def points(self, frame: pd.DataFrame) -> np.ndarray:
        """The hand score: a lexicographic count of the worst signals first."""
        total = np.zeros(len(frame))
        for column in self.columns:
            counts = frame[column].fillna(0).clip(0, _HAND_RULE_CAP).to_numpy(np.float64)
            total = total * (_HAND_RULE_CAP + 1) + counts
        return total

    def fit(self, frame: pd.DataFrame, bad: np.ndarray) -> HandRule:
        """Learn the bad rate at each points level on the training rows."""
        self.calibration.fit(self.points(frame), bad)
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """P(bad) for each row of `frame`."""
        return self.calibration.predict(self.points(frame))

    def to_document(self) -> dict:
        """The fitted rule as plain numbers (logged with the run, read back by the gate
        without unpickling): its columns and the calibration's steps."""
        return {
            "columns": list(self.columns),
            "cap": _HAND_RULE_CAP,
            "points": [float(v) for v in self.calibration.X_thresholds_],
            "bad_rate": [float(v) for v in self.calibration.y_thresholds_],
        }


@dataclass(frozen=True)
class FrozenHandRule:
    """A fitted `HandRule` read back from `to_document`: the same points and the same
    piecewise-linear calibration (clipped at both ends, as the isotonic fit predicts)."""

    columns: tuple[str, ...]
    points_at: np.ndarray
    bad_rate: np.ndarray

    @classmethod
    def from_document(cls, document: dict) -> FrozenHandRule:
        """Read `HandRule.to_document`.

        Raises:
            ValueError: It is not such a document.
        """
        try:
            columns = tuple(str(c) for c in document["columns"])
            points = np.asarray(document["points"], dtype=np.float64)
            rates = np.asarray(document["bad_rate"], dtype=np.float64)
            cap = int(document["cap"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a hand rule document: {exc!r}") from None
        if cap != _HAND_RULE_CAP or points.shape != rates.shape or len(points) == 0:
            raise ValueError("not a hand rule document of this version")
        return cls(columns, points, rates)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """P(bad) for each row of `frame`."""
        points = HandRule(columns=self.columns).points(frame)
        return np.interp(points, self.points_at, self.bad_rate)


def _signed_log1p(values: np.ndarray) -> np.ndarray:
    # Counts and amounts are heavy-tailed; a linear model needs them on a log scale.
    return np.sign(values) * np.log1p(np.abs(values))


@dataclass
class LogisticBaseline:
    """Logistic regression on all features: median-imputed (with missing flags), log-scaled."""

    columns: list[str]
    seed: int = 0
    pipeline: Pipeline = field(init=False)

    def __post_init__(self) -> None:
        self.pipeline = make_pipeline(
            # keep_empty_features: a feature never seen filled keeps its column (filled with
            # 0), so the fitted numbers map one to one onto the exported document.
            SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
            FunctionTransformer(_signed_log1p),
            StandardScaler(),
            LogisticRegression(C=1.0, max_iter=2000, random_state=self.seed),
        )

    def fit(self, frame: pd.DataFrame, bad: np.ndarray) -> LogisticBaseline:
        """Fit on the training rows."""
        self.pipeline.fit(frame[self.columns].to_numpy(np.float64), bad)
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """P(bad) for each row of `frame`."""
        return self.pipeline.predict_proba(frame[self.columns].to_numpy(np.float64))[:, 1]

    def to_spec(self) -> LinearModelSpec:
        """The fitted numbers as the registered document (`modelcontract.linear`), which
        scores every row as this pipeline does (tests), without scikit-learn."""
        imputer, _, scaler, logistic = (step for _, step in self.pipeline.steps)
        flags = imputer.indicator_.features_ if imputer.indicator_ is not None else []
        return LinearModelSpec(
            feature_columns=tuple(self.columns),
            fill_values=tuple(float(v) for v in imputer.statistics_),
            missing_flags=tuple(int(i) for i in flags),
            mean=tuple(float(v) for v in scaler.mean_),
            scale=tuple(float(v) for v in scaler.scale_),
            coef=tuple(float(v) for v in logistic.coef_[0]),
            intercept=float(logistic.intercept_[0]),
        )
