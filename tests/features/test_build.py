"""Feature values on a hand-made log, checked against what a person would count."""

from __future__ import annotations

import math

import pytest

from features import FEATURE_COLUMNS, build_features
from tests.factories import small_log


@pytest.fixture(scope="module")
def june() -> dict:
    frame = build_features(small_log(), "2025-06-01").set_index("buyer_id")
    return frame.to_dict("index")


def test_there_are_enough_features_and_they_are_numeric() -> None:
    frame = build_features(small_log(), "2025-06-01")
    assert len(FEATURE_COLUMNS) >= 30
    assert all(str(frame[c].dtype) == "float64" for c in FEATURE_COLUMNS)


def test_order_counts_and_amounts(june: dict) -> None:
    b1 = june["B1"]
    assert b1["orders_total"] == 2 and b1["orders_90d"] == 1 and b1["orders_30d"] == 0
    assert b1["gmv_365d_cny"] == 450.0 and b1["avg_paid_365d_cny"] == 225.0
    assert math.isnan(b1["avg_paid_30d_cny"])  # no orders: unknown, not zero
    assert b1["high_value_share_365d"] == 0.5 and b1["cancel_rate_365d"] == 0.5
    assert june["B2"]["excluded_category_share_365d"] == 1.0


def test_refunds_split_by_shipment_and_delivery(june: dict) -> None:
    b1 = june["B1"]
    assert b1["pre_ship_refunds_365d"] == 1 and b1["post_ship_refunds_365d"] == 1
    assert b1["refund_only_after_delivery_365d"] == 1
    assert b1["disputes_won_365d"] == 1 and b1["disputes_lost_365d"] == 0
    assert b1["confirmed_abuse_total"] == 1
    assert b1["days_since_last_confirmed_abuse"] == 92.0


def test_facts_after_t_are_invisible(june: dict) -> None:
    b2 = june["B2"]  # R3 resolved and confirmed after June 1st; O3 shipped June 2nd
    assert b2["open_refunds"] == 1 and b2["confirmed_abuse_total"] == 0
    assert b2["pre_ship_refunds_365d"] == 1
    later = build_features(small_log(), "2025-07-01").set_index("buyer_id").loc["B2"]
    assert later["open_refunds"] == 0 and later["confirmed_abuse_total"] == 1
