"""Point-in-time law: features as of T depend only on what was known at T."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import FEATURE_COLUMNS, build_features, buyer_features
from features.log import OUTCOMES, TransactionLog, as_of_time
from tests.factories import make_buyers, make_log, make_orders, make_refunds

BASE = pd.Timestamp("2025-01-01", tz="UTC")
HOURS = 24 * 400


def _at(hours: int | None) -> str | None:
    return None if hours is None else (BASE + pd.Timedelta(hours=hours)).isoformat()


def _later(start: int, gap: int | None) -> int | None:
    return None if gap is None else start + gap


gaps = st.one_of(st.none(), st.integers(0, 24 * 60))


@st.composite
def logs(draw: st.DrawFn) -> TransactionLog:
    """Random valid logs: 1-4 buyers, a few orders each, refunds on some of them."""
    n_buyers = draw(st.integers(1, 4))
    buyers = make_buyers(*[(f"B{i}", _at(draw(st.integers(-500, 2000)))) for i in range(n_buyers)])
    orders, refunds = [], []
    for number in range(draw(st.integers(0, 12))):
        buyer = f"B{draw(st.integers(0, n_buyers - 1))}"
        paid = draw(st.integers(2000, HOURS))
        shipped = _later(paid, draw(gaps))
        delivered = _later(shipped, draw(gaps)) if shipped is not None else None
        completed = _later(delivered, draw(gaps)) if delivered is not None else None
        cancelled = _later(paid, draw(gaps)) if shipped is None else None
        paid_fen = draw(st.integers(1, 60_000))
        orders.append(
            {
                "order_id": f"O{number}",
                "buyer_id": buyer,
                "paid_at": _at(paid),
                "shipped_at": _at(shipped),
                "delivered_at": _at(delivered),
                "completed_at": _at(completed),
                "cancelled_at": _at(cancelled),
                "paid_fen": paid_fen,
                "is_virtual": draw(st.booleans()),
            }
        )
        if draw(st.booleans()):
            requested = _later(paid, draw(st.integers(0, 24 * 30)))
            resolved = _later(requested, draw(gaps))
            refunds.append(
                {
                    "refund_id": f"R{number}",
                    "order_id": f"O{number}",
                    "buyer_id": buyer,
                    "requested_at": _at(requested),
                    "resolved_at": _at(resolved),
                    "outcome": None if resolved is None else draw(st.sampled_from(OUTCOMES)),
                    "abuse_confirmed_at": _at(_later(requested, draw(gaps))),
                    "kind": draw(st.sampled_from(["refund_only", "return_and_refund"])),
                    "amount_fen": draw(st.integers(1, paid_fen)),
                }
            )
    if not orders:
        return make_log(
            buyers, make_orders({"order_id": "O0", "buyer_id": "B0", "paid_at": _at(HOURS)})
        )
    refund_frame = make_refunds(*refunds) if refunds else None
    return make_log(buyers, make_orders(*orders), refund_frame)


def _with_later_events(log: TransactionLog, known_at: pd.Timestamp) -> TransactionLog:
    """Add what could only happen at or after T: new rows, and later stamps on old rows."""
    after = known_at + pd.Timedelta(hours=5)
    orders = log.orders.copy()
    live = orders["cancelled_at"].isna()
    orders.loc[live, "shipped_at"] = orders.loc[live, "shipped_at"].fillna(after)
    for col in ["delivered_at", "completed_at"]:
        orders.loc[live, col] = orders.loc[live, col].fillna(after + pd.Timedelta(days=2))
    extra_buyer = make_buyers(("B-late", known_at.isoformat()))
    extra_order = make_orders(
        {"order_id": "O-late", "buyer_id": "B0", "paid_at": known_at.isoformat(), "paid_fen": 99}
    )
    refunds = log.refunds.copy()
    unresolved = refunds["resolved_at"].isna()
    refunds.loc[unresolved, "resolved_at"] = after
    refunds.loc[unresolved, "outcome"] = "arbitrated_merchant_wins"
    refunds["abuse_confirmed_at"] = refunds["abuse_confirmed_at"].fillna(after)
    extra_refund = make_refunds(
        {
            "refund_id": "R-late",
            "order_id": "O-late",
            "buyer_id": "B0",
            "requested_at": after.isoformat(),
        }
    )
    return TransactionLog(
        buyers=pd.concat([log.buyers, extra_buyer], ignore_index=True),
        shops=log.shops,
        orders=pd.concat([orders, extra_order], ignore_index=True),
        refunds=pd.concat([refunds, extra_refund], ignore_index=True),
        start=log.start,
        end=log.end,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log=logs(), day=st.integers(0, 420))
def test_features_see_only_what_was_known_at_t(log: TransactionLog, day: int) -> None:
    as_of = (BASE + pd.Timedelta(days=day)).date()
    known_at = pd.Timestamp(as_of, tz="UTC")
    expected = buyer_features(log, as_of)
    pd.testing.assert_frame_equal(buyer_features(log.known_at(known_at), as_of), expected)
    pd.testing.assert_frame_equal(
        buyer_features(_with_later_events(log, known_at), as_of), expected
    )
    assert (log.buyers["registered_at"] < known_at).sum() == len(expected)


@settings(max_examples=20, deadline=None)
@given(log=logs(), partitions=st.integers(1, 5))
def test_partitioning_does_not_change_features(log: TransactionLog, partitions: int) -> None:
    dates = ["2025-03-01", "2025-09-01"]
    whole = build_features(log, dates, partitions=1)
    pd.testing.assert_frame_equal(build_features(log, dates, partitions=partitions), whole)
    assert list(whole.columns) == ["buyer_id", "as_of", *FEATURE_COLUMNS]


def test_an_as_of_date_is_an_iso_date_or_a_date_object() -> None:
    utc_day = pd.Timestamp("2025-05-31", tz="UTC")
    assert as_of_time("2025-06-01T05:00:00+08:00") == utc_day  # its date in UTC
    assert as_of_time(date(2025, 5, 31)) == utc_day == as_of_time("2025-05-31")
    # pandas would read "June" as 0001-06-01 and a number as nanoseconds since 1970.
    for bad in ("June", "nope", 1_748_736_000, 17.5, np.int64(1_748_736_000)):
        with pytest.raises(ValueError, match="is not a date"):
            as_of_time(bad)
