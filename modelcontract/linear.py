"""The logistic-regression model as a small JSON document, and its scorer (NumPy only).

When logistic regression wins the model search (`training.search`), training registers it as
this document instead of a pickled scikit-learn pipeline: the numbers of each step
(median imputation with missing flags, signed log1p, standardisation, the coefficients), so
serving and the promotion gate score it with a few NumPy operations, without scikit-learn,
pandas or unpickling. `LinearModel` offers what serving and the gate use of a LightGBM
Booster (`predict`, `num_feature`, `feature_name`), plus each feature's term of the score.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

LINEAR_FORMAT = "fastrefund-linear-v1"


class LinearModelSpec(BaseModel):
    """The fitted numbers, step by step, as `LogisticBaseline`'s pipeline applies them.

    x -> fill missing with `fill_values`; append a 0/1 flag for each feature in
    `missing_flags` (1 when it was missing) -> sign(v) log1p(|v|) -> (v - mean) / scale ->
    P(bad) = 1 / (1 + exp(-(intercept + coef . v))).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["fastrefund-linear-v1"] = "fastrefund-linear-v1"
    feature_columns: tuple[str, ...] = Field(min_length=1)
    fill_values: tuple[float, ...]
    missing_flags: tuple[int, ...] = Field(
        description="Indices of the features that get a missing flag, in flag order."
    )
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float

    @model_validator(mode="after")
    def _consistent(self) -> LinearModelSpec:
        n = len(self.feature_columns)
        width = n + len(self.missing_flags)
        if len(self.fill_values) != n:
            raise ValueError(f"fill_values has {len(self.fill_values)} values for {n} features")
        for name in ("mean", "scale", "coef"):
            if len(getattr(self, name)) != width:
                raise ValueError(f"{name} has {len(getattr(self, name))} values, not {width}")
        if any(not 0 <= i < n for i in self.missing_flags):
            raise ValueError("missing_flags names a feature index out of range")
        numbers = (*self.fill_values, *self.mean, *self.scale, *self.coef, self.intercept)
        if not all(math.isfinite(v) for v in numbers):
            raise ValueError("every number must be finite")
        if any(s <= 0 for s in self.scale):
            raise ValueError("every scale must be positive")
        return self


class LinearModel:
    """Scores feature rows (in `feature_columns` order, NaN for missing) like the pipeline."""

    def __init__(self, spec: LinearModelSpec):
        self.spec = spec
        self._fill = np.array(spec.fill_values, dtype=np.float64)
        self._flags = np.array(spec.missing_flags, dtype=np.intp)
        mean = np.array(spec.mean, dtype=np.float64)
        scale = np.array(spec.scale, dtype=np.float64)
        coef = np.array(spec.coef, dtype=np.float64)
        # Standardisation folded into the weights: logit = bias + weights . v.
        self._weights = coef / scale
        self._bias = float(spec.intercept - np.dot(coef, mean / scale))
        self._centre = mean  # a term is measured from the training mean (its expected value)

    @classmethod
    def from_json(cls, text: str | bytes) -> LinearModel:
        """Read the document training logged (`LinearModelSpec`).

        Raises:
            pydantic.ValidationError: It is not a consistent linear model document.
        """
        return cls(LinearModelSpec.model_validate_json(text))

    def to_json(self) -> str:
        """The document, exact (floats written as their shortest round-trip text)."""
        return self.spec.model_dump_json(indent=1)

    def num_feature(self) -> int:
        """How many inputs a row has."""
        return len(self.spec.feature_columns)

    def feature_name(self) -> list[str]:
        """The input columns in order (as `Booster.feature_name`)."""
        return list(self.spec.feature_columns)

    def _inputs(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.float64)
        missing = np.isnan(rows)
        filled = np.where(missing, self._fill, rows)
        values = np.concatenate([filled, missing[..., self._flags].astype(np.float64)], axis=-1)
        return np.sign(values) * np.log1p(np.abs(values))

    def raw_score(self, rows: np.ndarray) -> np.ndarray:
        """The log-odds of bad for each row."""
        rows = np.asarray(rows, dtype=np.float64)
        if rows.shape[-1] != self.num_feature():
            raise ValueError(f"expected {self.num_feature()} features, got shape {rows.shape}")
        return self._inputs(rows) @ self._weights + self._bias

    def predict(self, rows: np.ndarray, num_threads: int = 1) -> np.ndarray:
        """P(bad) for each row (`num_threads` accepted as a Booster's, unused)."""
        return 1.0 / (1.0 + np.exp(-self.raw_score(rows)))

    def score_one(self, row: np.ndarray) -> float:
        """P(bad) of one row, as a float."""
        return float(self.predict(row))

    def contributions(self, row: np.ndarray) -> np.ndarray:
        """Each feature's term of one row's log-odds, measured from the training mean (its
        missing flag's term included), then the expected value: they sum to the log-odds."""
        row = np.asarray(row, dtype=np.float64)
        if row.shape != (self.num_feature(),):
            raise ValueError(f"expected {self.num_feature()} features, got shape {row.shape}")
        terms = (self._inputs(row) - self._centre) * self._weights
        n = self.num_feature()
        per_feature = terms[:n].copy()
        np.add.at(per_feature, self._flags, terms[n:])
        expected = self._bias + float(np.dot(self._centre, self._weights))
        return np.append(per_feature, expected)
