"""Labels: the (T, T+H] request window and the T+H+M confirmation deadline, edges included."""

from __future__ import annotations

import pandas as pd
import pytest

from features import label_matured, labels
from tests.factories import make_buyers, make_log, make_orders, make_refunds

T = pd.Timestamp("2025-06-01", tz="UTC")
H, M = pd.Timedelta(days=90), pd.Timedelta(days=30)


def _log_with_request(requested: pd.Timestamp, confirmed: pd.Timestamp | None, end: str):
    buyers = make_buyers(
        ("B1", "2025-01-01T00:00:00Z"), ("B2", "2025-01-01T00:00:00Z"), ("B-new", T.isoformat())
    )
    orders = make_orders({"order_id": "O1", "buyer_id": "B1", "paid_at": "2025-05-01T00:00:00Z"})
    refunds = make_refunds(
        {
            "refund_id": "R1",
            "order_id": "O1",
            "buyer_id": "B1",
            "requested_at": requested.isoformat(),
            "abuse_confirmed_at": None if confirmed is None else confirmed.isoformat(),
        }
    )
    return make_log(buyers, orders, refunds, end=end)


@pytest.mark.parametrize(
    ("requested", "confirmed", "bad"),
    [
        (T, T + pd.Timedelta(days=1), 0),  # at exactly T: not in (T, T+H]
        (T + pd.Timedelta(seconds=1), T + pd.Timedelta(days=1), 1),
        (T + H, T + H + M - pd.Timedelta(seconds=1), 1),  # the window's last instant
        # Confirmed at the deadline: not known at T + H + M, as a fact at T is not known at T.
        (T + H, T + H + M, 0),
        (T + H + pd.Timedelta(seconds=1), T + H + pd.Timedelta(days=1), 0),
        (T + pd.Timedelta(days=10), T + H + M + pd.Timedelta(seconds=1), 0),  # confirmed late
        (T + pd.Timedelta(days=10), None, 0),  # never confirmed
    ],
)
def test_label_window_edges(requested, confirmed, bad) -> None:
    frame = labels(_log_with_request(requested, confirmed, end="2026-01-01"), T.date())
    assert frame.set_index("buyer_id")["bad"].to_dict() == {"B1": bad, "B2": 0}


def test_a_matured_label_does_not_change_when_the_export_goes_on() -> None:
    # An export covers [start, end): one ending at T + H + M cannot hold a confirmation
    # stamped at T + H + M, so that confirmation must not count in a longer export either.
    deadline = T + H + M
    ending_there = _log_with_request(T + pd.Timedelta(days=10), None, deadline.isoformat())
    longer = _log_with_request(T + pd.Timedelta(days=10), deadline, "2026-01-01")
    assert label_matured(ending_there, T.date())
    assert labels(ending_there, T.date()).equals(labels(longer, T.date()))


def test_buyers_registered_at_t_are_not_labelled() -> None:
    frame = labels(_log_with_request(T + pd.Timedelta(days=1), None, "2026-01-01"), T.date())
    assert "B-new" not in set(frame["buyer_id"])


def test_an_immature_window_gets_no_label() -> None:
    just_mature = (T + H + M).isoformat()
    log = _log_with_request(T + pd.Timedelta(days=1), T + pd.Timedelta(days=2), just_mature)
    assert label_matured(log, T.date())
    assert labels(log, T.date())["bad"].notna().all()
    immature = _log_with_request(
        T + pd.Timedelta(days=1),
        T + pd.Timedelta(days=2),
        (T + H + M - pd.Timedelta(seconds=1)).isoformat(),
    )
    assert not label_matured(immature, T.date())
    assert labels(immature, T.date())["bad"].isna().all()
