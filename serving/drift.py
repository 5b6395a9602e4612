"""Drift: the population stability index of what serving scores against the training
population of the model version that scored it.

The reference is the version's `ReferenceProfile` (training logs it: `training/reference.py`):
for every feature and for the score, the inner edges of its deciles on the training rows and
the share of those rows in each bin and in a missing bin. Live values are counted in the same
bins, and

    PSI = sum over bins of (live share - reference share) * ln(live share / reference share)

with every share floored at `SHARE_FLOOR` so an empty bin on either side stays finite. The
usual reading: below 0.1 stable, 0.1-0.25 a moderate shift, above 0.25 a significant one (the
policy's `drift_psi_alert`).

Why PSI written here rather than Evidently or NannyML: both compare two raw samples (a
reference DataFrame against a current one), and serving has no raw training rows, only the
binned profile the version was logged with (a few KB, no buyer data); each would have us
ship the training rows to the API or rebuild a fake sample from the bins. Their weight is
also out of proportion: Evidently brings plotly, nltk, scikit-learn and its own pydantic
constraints, NannyML pins pandas and numpy ranges and brings numba; the decision API's
dependencies would grow several-fold for twenty lines of arithmetic. Correctness is easy to
hold here: the binning is `numpy.searchsorted` on the profile's own edges (the rule the
profile states), the floor is Evidently's own (1e-4 in its PSI), and the tests compare with
the formula by hand.

Pure: no store, registry or audit log here. `serving.drift_window` keeps the rolling window of
what a worker scored; `serving.drift_report` reads the audit log for `python -m serving drift`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from modelcontract import BinnedProfile, ReferenceProfile

SHARE_FLOOR = 1e-4  # an empty bin's share, so ln() stays finite
MIN_ROWS = 100  # fewer scored rows than this: "not enough data" (deciles need a sample)

# A report's status, in the words the command and the metrics use.
OK = "ok"
ALERT = "alert"
NO_REFERENCE = "no reference"
NOT_ENOUGH_DATA = "not enough data"


def bin_shares(values: np.ndarray, profile: BinnedProfile) -> np.ndarray:
    """The share of `values` in each of the profile's bins, then in its missing bin (NaN)."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    bins = len(profile.edges) + 1
    counts = np.bincount(
        np.searchsorted(np.asarray(profile.edges), values[finite], side="right"),
        minlength=bins,
    )
    counts = np.append(counts, len(values) - int(finite.sum())).astype(np.float64)
    return counts / max(len(values), 1)


def psi(live: np.ndarray, reference: Sequence[float]) -> float:
    """The population stability index of live bin shares against the reference's.

    Raises:
        ValueError: The two do not have the same bins.
    """
    expected = np.asarray(reference, dtype=np.float64)
    if live.shape != expected.shape:
        raise ValueError(f"{live.shape[0]} live bins against {expected.shape[0]} reference bins")
    actual = np.maximum(live, SHARE_FLOOR)
    expected = np.maximum(expected, SHARE_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


@dataclass(frozen=True)
class DriftReport:
    """PSI of every feature the profile knows and of the score, over `rows` scored rows.

    Attributes:
        status: OK, ALERT (some PSI above `alert`), NO_REFERENCE, NOT_ENOUGH_DATA.
        rows: Scored rows the figures are over.
        features: PSI by feature, worst first (empty unless OK or ALERT).
        score: PSI of the score (None unless OK or ALERT).
        premium_rate: The share of scored rows that were premium (None without rows).
        alert: The threshold it was judged against.
        model_version: The version whose reference it was judged against.
        missing: Features of the profile the rows did not have (not judged).
        exempt: Features reported but never alerting (the policy's `drift_exempt_features`:
            ages, which grow with time whatever the buyers do).
    """

    status: str
    rows: int
    alert: float
    model_version: str | None = None
    features: dict[str, float] = field(default_factory=dict)
    score: float | None = None
    premium_rate: float | None = None
    missing: tuple[str, ...] = ()
    exempt: frozenset[str] = frozenset()

    @property
    def worst(self) -> list[tuple[str, float]]:
        """Every series judged (the score as "score"), worst first."""
        series = dict(self.features)
        if self.score is not None:
            series["score"] = self.score
        return sorted(series.items(), key=lambda item: -item[1])


def drift_report(
    rows: np.ndarray,
    columns: Sequence[str],
    scores: np.ndarray,
    profile: ReferenceProfile | None,
    alert: float,
    *,
    threshold: float | None = None,
    model_version: str | None = None,
    min_rows: int = MIN_ROWS,
    exempt: frozenset[str] = frozenset(),
) -> DriftReport:
    """Judge scored rows against a model version's training population.

    Args:
        rows: One feature vector a row, in `columns` order (NaN where missing).
        columns: The rows' feature names (the store's; matched to the profile by name).
        scores: The score of each row (the model's P(bad)).
        profile: The version's reference profile; None: a version without one.
        alert: The PSI above which the report is an ALERT.
        threshold: The version's premium threshold, for the premium rate.
        model_version: Named in the report.
        min_rows: Fewer rows than this are NOT_ENOUGH_DATA.
        exempt: Features whose PSI is reported but does not make an ALERT.
    """
    n = len(scores)
    rate = None
    if n and threshold is not None:
        rate = float(np.mean(np.asarray(scores) <= threshold))
    if profile is None:
        return DriftReport(NO_REFERENCE, n, alert, model_version, premium_rate=rate)
    if n < max(min_rows, 1):
        return DriftReport(NOT_ENOUGH_DATA, n, alert, model_version, premium_rate=rate)
    position = {name: i for i, name in enumerate(columns)}
    by_feature: dict[str, float] = {}
    for name, binned in profile.features.items():
        if name in position:
            by_feature[name] = psi(bin_shares(rows[:, position[name]], binned), binned.shares)
    missing = tuple(name for name in profile.features if name not in position)
    score = psi(bin_shares(scores, profile.score), profile.score.shares)
    worst = sorted(by_feature.items(), key=lambda item: -item[1])
    judged = [value for name, value in by_feature.items() if name not in exempt]
    over = any(value > alert for value in (score, *judged))
    return DriftReport(
        ALERT if over else OK, n, alert, model_version, dict(worst), score, rate, missing, exempt
    )


def report_lines(report: DriftReport, top: int | None = None) -> list[str]:
    """The report as a table for a terminal: status, then a line a series, worst first."""
    version = f" of version {report.model_version}" if report.model_version else ""
    rate = "" if report.premium_rate is None else f", premium rate {report.premium_rate:.1%}"
    lines = [f"drift{version}: {report.status} ({report.rows:,} scored rows{rate})"]
    if report.status in (NO_REFERENCE, NOT_ENOUGH_DATA):
        return lines
    lines.append(f"{'series':<40}{'PSI':>10}")
    for name, value in report.worst[:top]:
        flag = ""
        if value > report.alert:
            flag = "  (exempt)" if name in report.exempt else "  ALERT"
        lines.append(f"{name:<40}{value:>10.4f}{flag}")
    lines.append(f"alert above PSI {report.alert:g} (policy drift_psi_alert)")
    if report.missing:
        lines.append(f"not judged (absent from the rows): {', '.join(report.missing)}")
    return lines
