"""The promotion gate: pure rules on figures measured on the same newest matured data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from training.bootstrap import Comparison
from training.config import GateParams
from training.evaluate import calibration_error, choose_threshold, premium_at, score_metrics


@dataclass(frozen=True)
class GateFigures:
    """One registered model judged on the gate's rows."""

    version: str
    roc_auc: float
    coverage_at_target: float
    calibration_error: float
    premium_coverage: float
    premium_bad_rate: float
    problems: tuple[str, ...] = ()

    def as_metrics(self) -> dict[str, float]:
        """The figures as MLflow metrics (NaN left out)."""
        values = {
            "roc_auc": self.roc_auc,
            "coverage_at_target": self.coverage_at_target,
            "calibration_error": self.calibration_error,
            "premium_coverage": self.premium_coverage,
            "premium_bad_rate": self.premium_bad_rate,
        }
        return {k: float(v) for k, v in values.items() if np.isfinite(v)}


@dataclass(frozen=True)
class Verdict:
    """Whether the challenger may become champion, and why."""

    promote: bool
    reasons: list[str] = field(default_factory=list)
    forced: bool = False
    unchanged: bool = False  # the challenger already is the champion: nothing to judge

    @property
    def label(self) -> str:
        """promoted, forced, refused or unchanged."""
        if self.unchanged:
            return "unchanged"
        if self.forced:
            return "forced"
        return "promoted" if self.promote else "refused"


def sanity_problems(
    scores: np.ndarray,
    threshold: float,
    tagged_columns: list[str],
    booster_columns: list[str],
    serving_columns: list[str],
    params: GateParams,
) -> list[str]:
    """What makes a model unfit to serve, whatever its metrics.

    Args:
        scores: Its P(bad) on the gate's rows.
        threshold: Its registered premium threshold.
        tagged_columns: The feature list stored with the version.
        booster_columns: The feature names inside the Booster.
        serving_columns: The features serving computes (features.FEATURE_COLUMNS).
        params: The gate's tolerances.
    """
    problems = []
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all() or (scores < 0).any() or (scores > 1).any():
        problems.append("scores are not all finite probabilities in [0, 1]")
    else:
        distinct = len(np.unique(scores))
        if distinct < params.min_distinct_scores:
            problems.append(f"degenerate scores: {distinct} distinct value(s) on the gate data")
        premium = scores <= threshold
        if premium.all():
            problems.append("its threshold flags every buyer premium")
        elif not premium.any():
            problems.append("its threshold flags no buyer premium")
    if not tagged_columns:
        problems.append("its feature list is empty")
    if list(tagged_columns) != list(booster_columns):
        problems.append("its feature_columns tag differs from the Booster's own feature names")
    unknown = sorted(set(tagged_columns) - set(serving_columns))
    if unknown:
        problems.append(f"serving cannot compute feature(s) {', '.join(unknown)}")
    if not 0 <= threshold <= 1:
        problems.append(f"threshold {threshold} is not a probability")
    return problems


def measure(
    version: str,
    bad: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    target_bad_rate: float,
    problems: list[str],
) -> GateFigures:
    """A model's gate figures on the gate's rows.

    `coverage_at_target` is the largest premium share whose bad rate stays at or below
    the target on these rows: the same policy as training, so two models are compared
    on what they could approve safely, not on where their thresholds happen to sit.
    """
    if problems and any("finite" in p for p in problems):
        nan = float("nan")
        return GateFigures(version, nan, 0.0, nan, nan, nan, tuple(problems))
    metrics = score_metrics(bad, scores, threshold)
    own = premium_at(scores, bad, threshold)
    return GateFigures(
        version=version,
        roc_auc=metrics["roc_auc"],
        coverage_at_target=choose_threshold(scores, bad, target_bad_rate).coverage,
        calibration_error=calibration_error(bad, scores),
        premium_coverage=own.coverage,
        premium_bad_rate=own.bad_rate,
        problems=tuple(problems),
    )


def decide(
    challenger: GateFigures,
    champion: GateFigures | None,
    params: GateParams,
    force: bool = False,
    replacing: bool | None = None,
    comparisons: Mapping[str, Comparison] | None = None,
) -> Verdict:
    """Promote only a challenger that is sane and not worse than the champion.

    Not worse: ROC AUC at most `max_auc_drop` below the champion's, coverage at the
    target bad rate at least the champion's, calibration error within bounds, and not
    significantly worse (paired bootstrap, `comparisons`) than the champion or a baseline
    fitted on the same rows. With no champion, the sanity checks and the baselines' intervals
    are enough. `force` promotes anyway (recorded).

    Args:
        replacing: Whether a model serves now (default: whether `champion` is given). When
            one does but its figures cannot be compared (`champion` None: unreadable, not
            sane, or in-sample on the gate's rows), the calibration bound still applies.
        comparisons: The paired bootstrap against the champion (when comparable) and the
            run's baselines: a challenger significantly worse than any of them is refused.
    """
    replacing = champion is not None if replacing is None else replacing
    reasons = [f"sanity: {p}" for p in challenger.problems]
    if not challenger.problems:
        if champion is not None:
            if not challenger.roc_auc >= champion.roc_auc - params.max_auc_drop:
                reasons.append(
                    f"roc_auc {challenger.roc_auc:.4f} is more than {params.max_auc_drop} "
                    f"below the champion's {champion.roc_auc:.4f}"
                )
            if not challenger.coverage_at_target >= champion.coverage_at_target:
                reasons.append(
                    f"coverage_at_target {challenger.coverage_at_target:.4f} is below the "
                    f"champion's {champion.coverage_at_target:.4f}"
                )
        for comparison in (comparisons or {}).values():
            reason = comparison.reason(params.confidence)
            if reason is not None:
                reasons.append(reason)
        if replacing and not challenger.calibration_error <= params.max_calibration_error:
            reasons.append(
                f"calibration_error {challenger.calibration_error:.4f} exceeds "
                f"{params.max_calibration_error}"
            )
    passed = not reasons
    return Verdict(promote=passed or force, reasons=reasons, forced=force and not passed)
