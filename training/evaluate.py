"""Metrics and the threshold policy: pure functions of scores and labels.

A score is P(bad); a buyer is premium when their score is at or below the threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

_EPS = 1e-7


@dataclass(frozen=True)
class PremiumCut:
    """A threshold and what it does: the share flagged premium and their bad rate."""

    threshold: float
    coverage: float
    bad_rate: float


def _sorted(scores: np.ndarray, bad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    bad = np.asarray(bad, dtype=np.float64)
    order = np.argsort(scores, kind="stable")
    return scores[order], bad[order]


def coverage_curve(
    scores: np.ndarray, bad: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every possible cut, from the safest buyers up.

    Returns:
        (thresholds, coverage, bad_rate) at each distinct score; buyers with equal scores
        are always flagged together.
    """
    ordered, outcome = _sorted(scores, bad)
    if len(ordered) == 0:
        empty = np.array([], dtype=np.float64)
        return empty, empty, empty
    count = np.arange(1, len(ordered) + 1)
    bad_rate = np.cumsum(outcome) / count
    last_of_value = np.r_[ordered[1:] != ordered[:-1], True]
    return ordered[last_of_value], (count / len(ordered))[last_of_value], bad_rate[last_of_value]


def choose_threshold(scores: np.ndarray, bad: np.ndarray, target_bad_rate: float) -> PremiumCut:
    """The policy: flag the largest share of buyers whose bad rate stays <= the target.

    Args:
        scores: P(bad) on the rows the threshold is chosen on (validation).
        bad: Their labels (1 bad, 0 not).
        target_bad_rate: The highest bad rate tolerated among premium buyers.

    Returns:
        The cut; when even the safest buyers are too bad, a threshold below every score
        (coverage 0).
    """
    thresholds, coverage, bad_rate = coverage_curve(scores, bad)
    allowed = np.flatnonzero(bad_rate <= target_bad_rate)
    if len(allowed) == 0:
        lowest = float(thresholds[0]) if len(thresholds) else 0.0
        return PremiumCut(float(np.nextafter(lowest, -np.inf)), 0.0, math.nan)
    best = allowed[-1]
    return PremiumCut(float(thresholds[best]), float(coverage[best]), float(bad_rate[best]))


def premium_at(scores: np.ndarray, bad: np.ndarray, threshold: float) -> PremiumCut:
    """What a fixed threshold does on these rows (bad rate NaN when nobody is premium)."""
    scores = np.asarray(scores, dtype=np.float64)
    bad = np.asarray(bad, dtype=np.float64)
    premium = scores <= threshold
    coverage = float(premium.mean()) if len(scores) else 0.0
    bad_rate = float(bad[premium].mean()) if premium.any() else math.nan
    return PremiumCut(float(threshold), coverage, bad_rate)


def calibration_error(bad: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-count bins of the score.

    Equal-count bins because scores crowd near zero: equal-width bins would put almost
    every buyer in the first one and hide miscalibration there.
    """
    ordered, outcome = _sorted(scores, bad)
    if len(ordered) == 0:
        return math.nan
    total = 0.0
    for part_scores, part_bad in zip(
        np.array_split(ordered, bins), np.array_split(outcome, bins), strict=True
    ):
        if len(part_scores):
            total += len(part_scores) * abs(part_scores.mean() - part_bad.mean())
    return total / len(ordered)


def score_metrics(bad: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """The figures every scorer is judged by on one set of rows.

    Args:
        bad: Labels (1 bad, 0 not); both classes must be present.
        scores: P(bad).
        threshold: The premium threshold chosen on validation.

    Returns:
        roc_auc, pr_auc, brier, log_loss, calibration_error, premium_coverage and
        premium_bad_rate (NaN when nobody is premium) at the given threshold.
    """
    bad = np.asarray(bad, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    clipped = np.clip(scores, _EPS, 1 - _EPS)
    cut = premium_at(scores, bad, threshold)
    return {
        "roc_auc": float(roc_auc_score(bad, scores)),
        "pr_auc": float(average_precision_score(bad, scores)),
        "brier": float(brier_score_loss(bad, clipped)),
        "log_loss": float(log_loss(bad, clipped, labels=[0, 1])),
        "calibration_error": calibration_error(bad, scores),
        "premium_coverage": cut.coverage,
        "premium_bad_rate": cut.bad_rate,
    }
