"""Labelled snapshots at regular as-of dates, and the split by time.

A snapshot is the buyer features as of T joined with the label of the window after T.
Features come only from `features.build_features` (point-in-time by construction) and
labels only from `features.labels`, so no row can see its own future.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

import features
from features.log import TransactionLog
from training.config import DataChecks, SnapshotParams
from training.errors import TrainingDataError


def log_span(log: TransactionLog) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The log's start and end: meta.json's when given, else its first and last event."""
    start = log.start
    if start is None:
        start = min(log.buyers["registered_at"].min(), log.orders["paid_at"].min())
    if log.end is None or pd.isna(start):
        raise TrainingDataError("the log is empty or has no end date, so no label can mature")
    return pd.Timestamp(start), pd.Timestamp(log.end)


def snapshot_dates(log: TransactionLog, params: SnapshotParams) -> list[pd.Timestamp]:
    """Regular as-of dates from when buyers have history to the newest matured one.

    Args:
        log: The whole log.
        params: Frequency, minimum history, label horizon and maturity.

    Returns:
        The as-of instants T (00:00 UTC), oldest first; every one has a matured label.
    """
    start, end = log_span(log)
    first = features.as_of_time(start + pd.Timedelta(days=params.min_history_days))
    # A label at T is known once T + H + M has passed before the end of the log.
    last = end - pd.Timedelta(days=params.horizon_days + params.maturity_days)
    if last < first:
        return []
    dates = pd.date_range(first, last, freq=params.frequency, tz="UTC")
    return [
        features.as_of_time(d)
        for d in dates
        if features.label_matured(log, d, params.horizon_days, params.maturity_days)
    ]


def build_snapshots(
    log: TransactionLog,
    dates: list[pd.Timestamp],
    params: SnapshotParams,
    progress: bool = False,
) -> pd.DataFrame:
    """Features and labels of every buyer at every date.

    Args:
        log: The whole log (labels need what happened after each date).
        dates: As-of dates whose labels have matured.
        params: The label horizon and maturity.
        progress: Show a progress bar while features are built.

    Returns:
        `buyer_id`, `as_of`, FEATURE_COLUMNS, `bad` (int8), sorted by `as_of`, `buyer_id`.
    """
    if not dates:
        raise TrainingDataError("no as-of date with a matured label window")
    frame = features.build_features(log, dates, progress=progress)
    label_frames = [
        features.labels(log, d, params.horizon_days, params.maturity_days) for d in dates
    ]
    labels = pd.concat(label_frames, ignore_index=True)
    frame = frame.merge(labels, on=["buyer_id", "as_of"], how="inner", validate="one_to_one")
    frame = frame.loc[frame["bad"].notna()].copy()
    frame["bad"] = frame["bad"].astype("int8")
    return frame.sort_values(["as_of", "buyer_id"], ignore_index=True)


@dataclass(frozen=True)
class Split:
    """Train, validation and test rows, each a run of consecutive as-of dates.

    `purged` are the dates between validation and test that neither fits nor judges: their
    labels were not yet known on the first test date (see `split_by_time`).
    """

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    purged: tuple[pd.Timestamp, ...] = ()

    @property
    def train_dates(self) -> list[pd.Timestamp]:
        """As-of dates of the training rows."""
        return sorted(self.train["as_of"].unique())

    @property
    def valid_dates(self) -> list[pd.Timestamp]:
        """As-of dates of the validation rows."""
        return sorted(self.valid["as_of"].unique())

    @property
    def test_dates(self) -> list[pd.Timestamp]:
        """As-of dates of the test rows."""
        return sorted(self.test["as_of"].unique())

    def window(self) -> str:
        """The as-of dates covered, as an ISO interval: first/last."""
        first = self.train_dates[0].date().isoformat()
        last = self.test_dates[-1].date().isoformat()
        return f"{first}/{last}"


def split_by_time(snapshots: pd.DataFrame, params: SnapshotParams, checks: DataChecks) -> Split:
    """Newest dates are test; of the dates whose labels were known on the first test date,
    the newest are validation and the rest training; the dates in between are purged.

    A label at T covers (T, T+H] and is known at T+H+M (it counts the confirmations before
    then, as `TransactionLog.known_at` keeps what came before T). A model put to work on the
    first test date T0 can only have learned from labels known by then: T + H + M <= T0. A row
    from a later date would carry outcomes from the test's own window into the fit (through
    the same buyers' similar features) or into the threshold chosen on validation, and make
    the test figures look better than any deployed model could do. So those dates are left
    out (with the defaults, monthly dates and H + M = 120 days: the three months before the
    test month). Validation and training are adjacent: validation labels overlap training's,
    which may make early stopping a little optimistic but shows nothing of the test window.

    Raises:
        TrainingDataError: Too few dates, rows or bad buyers for an honest evaluation.
    """
    dates = sorted(snapshots["as_of"].unique())
    lead = pd.Timedelta(days=params.horizon_days + params.maturity_days)
    needed = params.valid_dates + 1
    advice = "a longer log, a shorter horizon/maturity or less minimum history"
    if len(dates) <= params.test_dates:
        raise TrainingDataError(
            f"{len(dates)} matured as-of date(s); need more than the {params.test_dates} "
            f"for test: {advice}"
        )
    test_dates = dates[-params.test_dates :]
    known = [d for d in dates[: -params.test_dates] if d + lead <= test_dates[0]]
    if len(known) < needed:
        raise TrainingDataError(
            f"{len(dates)} matured as-of date(s), but only {len(known)} before the first test "
            f"date {test_dates[0].date()} whose labels were known by then ({lead.days} days "
            f"of horizon + maturity); need {needed} ({params.valid_dates} validation, "
            f"1 training): {advice}"
        )
    valid_dates = known[-params.valid_dates :]
    by_date = snapshots["as_of"]
    split = Split(
        train=snapshots.loc[by_date < valid_dates[0]].reset_index(drop=True),
        valid=snapshots.loc[by_date.isin(valid_dates)].reset_index(drop=True),
        test=snapshots.loc[by_date.isin(test_dates)].reset_index(drop=True),
        purged=tuple(d for d in dates if valid_dates[-1] < d < test_dates[0]),
    )
    check_split(split, checks)
    return split


def check_split(split: Split, checks: DataChecks) -> None:
    """Refuse splits too small to train on or to judge a model by."""
    problems = []
    for name, frame, min_rows in (
        ("training", split.train, checks.min_train_rows),
        ("validation", split.valid, checks.min_eval_rows),
        ("test", split.test, checks.min_eval_rows),
    ):
        positives = int(frame["bad"].sum())
        if len(frame) < min_rows:
            problems.append(f"{name} has {len(frame)} labelled rows (need >= {min_rows})")
        if positives < checks.min_positives:
            problems.append(f"{name} has {positives} bad buyers (need >= {checks.min_positives})")
        elif positives == len(frame):
            problems.append(f"{name} has no good buyers")
    if problems:
        raise TrainingDataError("too little data: " + "; ".join(problems))
