"""Feature values on a hand-made log, checked against what a person would count."""

from __future__ import annotations

import math

import pytest

from features import FEATURE_COLUMNS, build_features
from features.build import HIGH_VALUE_FEN
from tests.factories import make_buyers, make_log, make_orders, small_log


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
    assert june["B2"]["virtual_or_custom_share_365d"] == 1.0


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


def test_virtual_or_custom_goods_count_by_flag_or_by_a_category_that_names_them() -> None:
    orders = make_orders(
        *(
            {"order_id": f"O{i}", "buyer_id": "B1", "paid_at": "2025-05-01T10:00:00Z", **row}
            for i, row in enumerate(
                [
                    {"is_custom": True},  # apparel, made to measure: by its flag
                    {"category": " Gift_Cards "},  # virtual by nature, flag missed
                    {"category": "custom_made"},
                    {"category": "electronics"},
                    {},  # apparel
                ]
            )
        )
    )
    frame = build_features(make_log(make_buyers(("B1", "2024-06-01")), orders), "2025-06-01")
    assert frame.loc[0, "virtual_or_custom_share_365d"] == 3 / 5


def test_high_value_starts_at_300_cny_whatever_the_policy_limit() -> None:
    assert HIGH_VALUE_FEN == 30_000  # a feature's definition: the policy file cannot move it
    orders = make_orders(
        *(
            {
                "order_id": f"O{fen}",
                "buyer_id": "B1",
                "paid_at": "2025-05-01T10:00:00Z",
                "paid_fen": fen,
            }
            for fen in (29_999, 30_000, 30_001, 500)
        )
    )
    frame = build_features(make_log(make_buyers(("B1", "2024-06-01")), orders), "2025-06-01")
    assert frame.loc[0, "high_value_share_365d"] == 2 / 4
