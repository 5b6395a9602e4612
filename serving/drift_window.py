"""The rolling window of what a worker scored, and its drift as Prometheus gauges.

Every committed decision whose buyer was scored puts its feature vector (as the online store
holds it) and its score in a ring of the last `WINDOW_SIZE`: one row copy and one float a
decision, no allocation (~1 us; docs/benchmarks.md). The population stability index is
computed from the ring only when `/metrics` is scraped (`DriftCollector`), never on the
decision path. The window starts again when the champion or the store's column layout
changes: a new version is judged against its own training population.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from serving.drift import ALERT, NO_REFERENCE, NOT_ENOUGH_DATA, OK, DriftReport, drift_report
from serving.model import Champion

# The last 10,000 scored decisions: 4.4 MB for 55 features; at ~100 decisions/s, the last
# two minutes or so, and PSI over deciles wants thousands of rows to be steady.
WINDOW_SIZE = 10_000
REFRESH_SECONDS = 10.0  # how stale the gauges may be: drift is read over hours, not seconds


class DriftWindow:
    """The last `size` scored rows of one champion version on one store layout."""

    def __init__(self, size: int = WINDOW_SIZE):
        if size < 1:
            raise ValueError("a drift window holds at least one row")
        self.size = size
        self.version: str | None = None
        self.columns: tuple[str, ...] = ()
        self._rows = np.empty((0, 0))
        self._scores = np.empty(size)
        self._next = 0
        self.count = 0  # rows held (at most `size`)

    def _start(self, version: str, columns: tuple[str, ...]) -> None:
        self.version, self.columns = version, columns
        self._rows = np.empty((self.size, len(columns)))
        self._next = self.count = 0

    def record(
        self, version: str, columns: tuple[str, ...], scored: Sequence[tuple[np.ndarray, float]]
    ) -> None:
        """Add scored rows (each the store's vector, in `columns` order, and its score)."""
        # The store's columns are one tuple per snapshot: an identity check a decision.
        if version != self.version or (columns is not self.columns and columns != self.columns):
            self._start(version, columns)
        rows, scores, size = self._rows, self._scores, self.size
        for vector, score in scored:
            i = self._next
            rows[i] = vector
            scores[i] = score
            self._next = i + 1 if i + 1 < size else 0
        self.count = min(self.count + len(scored), size)

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the rows and scores held (in no particular order)."""
        return self._rows[: self.count].copy(), self._scores[: self.count].copy()


class DriftCollector(Collector):
    """`/metrics` gauges of a worker's drift, computed from its window when scraped.

    - `fastrefund_feature_psi{feature}`: PSI of each feature against the champion's
      training population; `fastrefund_score_psi`: the same for the score;
    - `fastrefund_premium_rate`: the share of the window's scored buyers who were premium;
    - `fastrefund_drift_window_rows`, and `fastrefund_drift_status{status}` = 1 for the one
      status in force ("ok", "alert", "no reference", "not enough data").

    No PSI series while there is no reference (a version without a profile) or too few rows.
    """

    def __init__(
        self,
        window: DriftWindow,
        champion: Callable[[], Champion | None],
        alert: float,
        exempt: frozenset[str] = frozenset(),
    ):
        self._window, self._champion, self._alert, self._exempt = window, champion, alert, exempt
        self._last: tuple[float, DriftReport] | None = None  # (when, report) of `refresh`

    def report(self) -> DriftReport:
        """The window judged against the champion that filled it (no reference when the
        champion has changed since, or has no profile)."""
        window, champion = self._window, self._champion()
        rows, scores = window.contents()
        # An empty window is the champion's own (nothing scored yet: not enough data).
        same = champion is not None and window.version in (None, champion.version)
        return drift_report(
            rows,
            window.columns,
            scores,
            champion.profile if same and champion is not None else None,
            self._alert,
            threshold=champion.threshold if same and champion is not None else None,
            model_version=window.version or (champion.version if champion else None),
            exempt=self._exempt,
        )

    def refresh(self) -> DriftReport:
        """Compute the report now and keep it for `collect` (run in a thread)."""
        report = self.report()
        self._last = (time.monotonic(), report)
        return report

    def collect(self) -> Iterator[GaugeMetricFamily]:
        # The last `refresh` while it is recent; computed here only without one (no refresh
        # loop running, as in a test or a job).
        last = self._last
        recent = last is not None and time.monotonic() - last[0] < 3 * REFRESH_SECONDS
        report = last[1] if last is not None and recent else self.report()
        rows = GaugeMetricFamily(
            "fastrefund_drift_window_rows", "Scored decisions in this worker's drift window."
        )
        rows.add_metric([], report.rows)
        yield rows
        status = GaugeMetricFamily(
            "fastrefund_drift_status",
            "Drift of the window against the champion's training population: 1 for the status "
            "in force (ok, alert, no reference, not enough data).",
            labels=["status"],
        )
        for name in (OK, ALERT, NO_REFERENCE, NOT_ENOUGH_DATA):
            status.add_metric([name], float(report.status == name))
        yield status
        if report.premium_rate is not None:
            rate = GaugeMetricFamily(
                "fastrefund_premium_rate",
                "Share of the drift window's scored buyers at or below the premium threshold.",
            )
            rate.add_metric([], report.premium_rate)
            yield rate
        if report.score is None:
            return
        features = GaugeMetricFamily(
            "fastrefund_feature_psi",
            "Population stability index of a feature in the drift window against the "
            "champion's training population (above 0.25: a significant shift).",
            labels=["feature"],
        )
        for name, value in report.features.items():
            features.add_metric([name], value)
        yield features
        score = GaugeMetricFamily(
            "fastrefund_score_psi",
            "Population stability index of the champion's score in the drift window against "
            "its score on the training rows.",
        )
        score.add_metric([], report.score)
        yield score
