"""Snapshot dates, labelled snapshots and the split by time, on a small simulated world."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import features
from training.config import DataChecks, SnapshotParams
from training.errors import TrainingDataError
from training.snapshots import build_snapshots, snapshot_dates, split_by_time

PARAMS = SnapshotParams(min_history_days=90)
CHECKS = DataChecks(min_train_rows=500, min_eval_rows=200, min_positives=5)


@pytest.fixture(scope="module")
def log(small_world: Path) -> features.TransactionLog:
    return features.load_log(small_world)


def test_dates_are_monthly_from_enough_history_to_the_newest_matured(log) -> None:
    dates = snapshot_dates(log, PARAMS)
    assert len(dates) >= 4
    assert all(d.day == 1 and d == d.normalize() for d in dates)
    assert dates[0] >= log.start + pd.Timedelta(days=90)
    assert all(features.label_matured(log, d, 90, 30) for d in dates)
    # The month after the last one has not matured: no labelled date is left out.
    assert not features.label_matured(log, dates[-1] + pd.DateOffset(months=1), 90, 30)


def test_longer_horizon_gives_fewer_dates(log) -> None:
    longer = snapshot_dates(log, PARAMS.model_copy(update={"horizon_days": 150}))
    assert len(longer) < len(snapshot_dates(log, PARAMS))


def test_snapshots_carry_point_in_time_features_and_labels(log) -> None:
    dates = snapshot_dates(log, PARAMS)[-2:]
    frame = build_snapshots(log, dates, PARAMS)
    assert list(frame.columns) == ["buyer_id", "as_of", *features.FEATURE_COLUMNS, "bad"]
    assert set(frame["as_of"]) == set(dates)
    assert set(frame["bad"].unique()) <= {0, 1}
    last = frame.loc[frame["as_of"] == dates[-1]].reset_index(drop=True)
    expected = features.build_features(log, [dates[-1]])
    pd.testing.assert_frame_equal(
        last[expected.columns].sort_values("buyer_id", ignore_index=True),
        expected.sort_values("buyer_id", ignore_index=True),
    )
    labels = features.labels(log, dates[-1]).set_index("buyer_id")["bad"]
    assert (last.set_index("buyer_id")["bad"] == labels.loc[last["buyer_id"]]).all()


def test_split_is_by_time_newest_date_is_test(log) -> None:
    dates = snapshot_dates(log, PARAMS)
    split = split_by_time(build_snapshots(log, dates, PARAMS), PARAMS, CHECKS)
    # Monthly dates, horizon + maturity 120 days: the three months before the test month
    # are purged, the one before them is validation.
    assert split.test_dates == dates[-1:]
    assert list(split.purged) == dates[-4:-1]
    assert split.valid_dates == dates[-5:-4]
    assert split.train_dates == dates[:-5]
    assert max(split.train["as_of"]) < min(split.valid["as_of"]) < min(split.test["as_of"])
    assert split.window() == f"{dates[0].date()}/{dates[-1].date()}"


def test_no_fitted_or_validation_label_reaches_past_the_first_test_date(log) -> None:
    """Point in time across the split: every label that fits the model or picks its threshold
    was known on the first test date, so none of them sees the test window."""
    dates = snapshot_dates(log, PARAMS)
    for params in (PARAMS, PARAMS.model_copy(update={"horizon_days": 20, "maturity_days": 5})):
        split = split_by_time(build_snapshots(log, dates, params), params, CHECKS)
        lead = pd.Timedelta(days=params.horizon_days + params.maturity_days)
        first_test = min(split.test_dates)
        assert max(split.valid_dates) + lead <= first_test
        assert max(split.train_dates) + lead <= first_test
        # Nothing that could have been used is left out: the newest purged date could not.
        assert all(d + lead > first_test for d in split.purged)
    # 25 days of horizon and maturity, under a month: nothing is purged.
    assert split.purged == ()
    assert split.valid_dates == dates[-2:-1]


def test_a_label_maturing_exactly_on_the_test_date_is_used_and_a_day_later_is_purged() -> None:
    """2025-01-01 + 120 days is 2025-05-01 00:00: that label counts the confirmations before
    then, all known at the test date (as known_at keeps what came before it)."""
    dates = pd.to_datetime(["2024-11-01", "2024-12-01", "2025-01-01", "2025-05-01"], utc=True)
    frame = pd.DataFrame(
        {
            "buyer_id": [f"B{i}" for i in range(600)] * len(dates),
            "as_of": [d for d in dates for _ in range(600)],
            "bad": ([1] * 60 + [0] * 540) * len(dates),
        }
    )
    split = split_by_time(frame, PARAMS, CHECKS)
    assert split.purged == ()
    assert split.valid_dates == [dates[2]]
    assert split.train_dates == list(dates[:2])
    later = frame.assign(as_of=frame["as_of"].replace(dates[3], dates[3] - pd.Timedelta(days=1)))
    split = split_by_time(later, PARAMS, CHECKS)
    assert split.purged == (dates[2],)


def test_too_few_dates_is_refused_with_a_reason(log) -> None:
    params = PARAMS.model_copy(update={"test_dates": 3, "valid_dates": 3})
    dates = snapshot_dates(log, PARAMS)[:5]
    with pytest.raises(TrainingDataError, match="matured as-of date"):
        split_by_time(build_snapshots(log, dates, PARAMS), params, CHECKS)


def test_too_few_dates_known_before_the_test_is_refused_with_a_reason(log) -> None:
    # Five monthly dates: the test month, three purged, one left: no room for training.
    dates = snapshot_dates(log, PARAMS)[-5:]
    with pytest.raises(TrainingDataError, match=r"only 1 before the first test date .*120 days"):
        split_by_time(build_snapshots(log, dates, PARAMS), PARAMS, CHECKS)


def test_too_few_positives_is_refused_with_a_reason(log) -> None:
    dates = snapshot_dates(log, PARAMS)
    frame = build_snapshots(log, dates, PARAMS)
    frame.loc[frame["as_of"] == dates[-1], "bad"] = 0
    with pytest.raises(TrainingDataError, match="test has 0 bad buyers"):
        split_by_time(frame, PARAMS, CHECKS)
