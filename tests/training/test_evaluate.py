"""The threshold policy and the metrics, on hand-made scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.evaluate import (
    calibration_error,
    choose_threshold,
    coverage_curve,
    premium_at,
    score_metrics,
)


def test_threshold_flags_the_largest_share_within_the_target() -> None:
    # Safest first: 8 good buyers, then a bad one, then good ones, then bad ones.
    scores = np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10, 0.5, 0.9])
    bad = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1])
    cut = choose_threshold(scores, bad, target_bad_rate=0.1)
    # 10 buyers with one bad is 10%: allowed; 11 with two is 18%: not.
    assert cut.threshold == pytest.approx(0.10)
    assert cut.coverage == pytest.approx(10 / 12)
    assert cut.bad_rate == pytest.approx(0.1)


def test_threshold_at_a_stricter_target_stops_before_the_first_bad_buyer() -> None:
    scores = np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10, 0.5, 0.9])
    bad = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1])
    cut = choose_threshold(scores, bad, target_bad_rate=0.05)
    assert cut.threshold == pytest.approx(0.08)
    assert cut.bad_rate == 0.0


def test_equal_scores_are_flagged_together() -> None:
    # Three buyers share the score 0.2; one of them is bad: all or none.
    scores = np.array([0.1, 0.1, 0.2, 0.2, 0.2, 0.9])
    bad = np.array([0, 0, 0, 1, 0, 1])
    cut = choose_threshold(scores, bad, target_bad_rate=0.2)
    assert cut.threshold == pytest.approx(0.2)
    assert cut.coverage == pytest.approx(5 / 6)
    strict = choose_threshold(scores, bad, target_bad_rate=0.1)
    assert strict.threshold == pytest.approx(0.1)
    assert strict.coverage == pytest.approx(2 / 6)


def test_no_safe_share_means_nobody_is_premium() -> None:
    scores = np.array([0.3, 0.4, 0.5])
    bad = np.array([1, 0, 0])
    cut = choose_threshold(scores, bad, target_bad_rate=0.01)
    assert cut.coverage == 0.0
    assert premium_at(scores, bad, cut.threshold).coverage == 0.0
    assert math.isnan(premium_at(scores, bad, cut.threshold).bad_rate)


def test_premium_at_is_inclusive_of_the_threshold() -> None:
    scores = np.array([0.05, 0.05, 0.06])
    bad = np.array([0, 1, 0])
    cut = premium_at(scores, bad, 0.05)
    assert cut.coverage == pytest.approx(2 / 3)
    assert cut.bad_rate == pytest.approx(0.5)


def test_coverage_curve_ends_at_everyone_with_the_base_rate() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random(500)
    bad = (rng.random(500) < 0.1).astype(int)
    _, coverage, bad_rate = coverage_curve(scores, bad)
    assert coverage[-1] == 1.0
    assert bad_rate[-1] == pytest.approx(bad.mean())
    assert np.all(np.diff(coverage) > 0)


def test_calibration_error_tells_calibrated_from_overconfident() -> None:
    rng = np.random.default_rng(1)
    truth = rng.uniform(0, 0.2, 50_000)
    bad = (rng.random(truth.size) < truth).astype(int)
    assert calibration_error(bad, truth) < 0.01
    assert calibration_error(bad, np.clip(truth * 3, 0, 1)) > 0.1


def test_score_metrics_rank_a_better_scorer_higher() -> None:
    rng = np.random.default_rng(2)
    truth = rng.uniform(0, 0.3, 20_000)
    bad = (rng.random(truth.size) < truth).astype(int)
    noisy = np.clip(truth + rng.normal(0, 0.15, truth.size), 0, 1)
    good, worse = score_metrics(bad, truth, 0.05), score_metrics(bad, noisy, 0.05)
    assert good["roc_auc"] > worse["roc_auc"]
    assert good["pr_auc"] > worse["pr_auc"]
    assert good["brier"] < worse["brier"]
    assert good["log_loss"] < worse["log_loss"]
    assert set(good) == {
        "roc_auc",
        "pr_auc",
        "brier",
        "log_loss",
        "calibration_error",
        "premium_coverage",
        "premium_bad_rate",
    }
