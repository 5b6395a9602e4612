"""The gate's noise: a seeded paired bootstrap of the AUC and coverage differences.

One month of labels holds a few hundred bad buyers at most, so two models' AUCs 0.005 apart
may be the same model. The gate resamples the month's buyers with replacement, the same
resample for every model (paired: the models' errors on one buyer move together, so the
difference is far less noisy than either figure), and reads percentile intervals of

- the ROC AUC difference, challenger minus the other model, and
- the coverage at the target bad rate (the largest premium share whose bad rate stays at or
  below the target on the resampled rows: the same policy as `choose_threshold`), its
  difference and each model's own.

A challenger is significantly worse than another model when the whole interval of either
difference lies below zero. Pure NumPy: a resample is a vector of counts, and each figure is
a few `bincount`s over the models' distinct scores, so 1,000 rounds of 20,000 rows take about
a second per model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A point estimate (on the rows as they are) and its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float

    def text(self, digits: int = 4) -> str:
        """E.g. "+0.0012 [-0.0030, +0.0051]"."""
        return f"{self.estimate:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"

    def as_list(self) -> list[float]:
        """[estimate, low, high], rounded for a tag."""
        return [round(v, 5) for v in (self.estimate, self.low, self.high)]


@dataclass(frozen=True)
class Comparison:
    """The challenger against one other model on the same resamples."""

    other: str  # e.g. "champion", "logistic", "hand_rule"
    auc_difference: Interval  # challenger - other
    coverage_difference: Interval  # challenger - other, at the target bad rate
    challenger_coverage: Interval
    other_coverage: Interval

    @property
    def significantly_worse(self) -> bool:
        """The whole interval of the AUC or of the coverage difference is below zero."""
        return self.auc_difference.high < 0 or self.coverage_difference.high < 0

    def reason(self, confidence: float) -> str | None:
        """Why the challenger is refused against this model, or None."""
        if not self.significantly_worse:
            return None
        level = f"{confidence:.0%}"
        return (
            f"significantly worse than {self.other} ({level} paired bootstrap): AUC difference "
            f"{self.auc_difference.text()}, coverage difference "
            f"{self.coverage_difference.text(3)}"
        )

    def as_metrics(self) -> dict[str, float]:
        """MLflow metrics under bootstrap/<other>/..."""
        metrics = {}
        for name in ("auc_difference", "coverage_difference", "other_coverage"):
            interval = getattr(self, name)
            for part in ("estimate", "low", "high"):
                metrics[f"bootstrap/{self.other}/{name}_{part}"] = getattr(interval, part)
        return {k: float(v) for k, v in metrics.items() if math.isfinite(v)}


class _Scored:
    """One model's scores grouped by distinct value, ascending (ties move together)."""

    def __init__(self, scores: np.ndarray):
        values, self.group = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
        self.groups = len(values)

    def figures(self, bad_w: np.ndarray, good_w: np.ndarray, target: float) -> tuple[float, float]:
        """(AUC, coverage at target) for row weights split into bad and good."""
        bad = np.bincount(self.group, weights=bad_w, minlength=self.groups)
        good = np.bincount(self.group, weights=good_w, minlength=self.groups)
        n_bad, n_good = bad.sum(), good.sum()
        below = np.cumsum(good) - good  # good rows scored strictly lower
        auc = (
            float(np.dot(bad, below + 0.5 * good) / (n_bad * n_good))
            if n_bad and n_good
            else math.nan
        )
        total = np.cumsum(bad + good)
        rate = np.cumsum(bad) / np.where(total > 0, total, 1)
        allowed = (rate <= target) & (total > 0)
        coverage = float(total[allowed].max() / total[-1]) if allowed.any() else 0.0
        return auc, coverage


def _interval(estimate: float, samples: np.ndarray, confidence: float) -> Interval:
    tail = (1 - confidence) / 2 * 100
    finite = samples[np.isfinite(samples)]
    if len(finite) == 0:
        return Interval(estimate, math.nan, math.nan)
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high))


def paired_bootstrap(
    bad: np.ndarray,
    challenger: np.ndarray,
    others: dict[str, np.ndarray],
    target_bad_rate: float,
    rounds: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Comparison]:
    """Compare the challenger's scores with each other model's on the same resamples.

    Args:
        bad: The rows' labels (1 bad, 0 not).
        challenger: The challenger's P(bad) on the rows.
        others: Each other model's P(bad) on the same rows, by name.
        target_bad_rate: The bad rate the coverage is read at.
        rounds: Resamples.
        confidence: The intervals' coverage (0.95: 2.5th to 97.5th percentile).
        seed: The resamples' seed (same seed and rows, same intervals).
    """
    bad = np.asarray(bad, dtype=np.float64)
    n = len(bad)
    models = {"challenger": _Scored(challenger), **{k: _Scored(v) for k, v in others.items()}}
    ones = np.ones(n)
    estimates = {k: m.figures(bad, ones - bad, target_bad_rate) for k, m in models.items()}
    samples = {k: np.empty((rounds, 2)) for k in models}
    rng = np.random.default_rng(seed)
    for r in range(rounds):
        weights = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        bad_w = weights * bad
        good_w = weights - bad_w
        for name, model in models.items():
            samples[name][r] = model.figures(bad_w, good_w, target_bad_rate)
    mine, mine_estimate = samples["challenger"], estimates["challenger"]
    comparisons = {}
    for name in others:
        theirs, estimate = samples[name], estimates[name]
        comparisons[name] = Comparison(
            name,
            _interval(mine_estimate[0] - estimate[0], mine[:, 0] - theirs[:, 0], confidence),
            _interval(mine_estimate[1] - estimate[1], mine[:, 1] - theirs[:, 1], confidence),
            _interval(mine_estimate[1], mine[:, 1], confidence),
            _interval(estimate[1], theirs[:, 1], confidence),
        )
    return comparisons
