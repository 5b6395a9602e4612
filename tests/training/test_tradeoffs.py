"""Policy trade-offs: which requests a threshold and an amount limit would have approved."""

from __future__ import annotations

import pandas as pd

from tests.factories import make_buyers, make_log, make_orders, make_refunds
from training.tradeoffs import fast_refund_candidates, policy_tradeoffs

T = pd.Timestamp("2025-06-01", tz="UTC")


def _log():
    buyers = make_buyers(("B1", "2025-01-01T00:00:00Z"), ("B2", "2025-01-01T00:00:00Z"))
    orders = make_orders(
        {
            "order_id": "O1",
            "buyer_id": "B1",
            "paid_at": "2025-06-02T00:00:00Z",
            "paid_fen": 29_999,
            "shipped_at": "2025-06-05T00:00:00Z",  # a tracking number after the approval
        },
        {
            "order_id": "O2",
            "buyer_id": "B2",
            "paid_at": "2025-06-02T00:00:00Z",
            "paid_fen": 30_000,
            "shipped_at": "2025-06-04T00:00:00Z",
        },
        {
            "order_id": "O3",
            "buyer_id": "B1",
            "paid_at": "2025-06-02T00:00:00Z",
            "is_virtual": True,
            "category": "virtual",
        },
        {
            "order_id": "O4",
            "buyer_id": "B1",
            "paid_at": "2025-06-02T00:00:00Z",
            "shipped_at": "2025-06-02T05:00:00Z",
        },
    )
    refunds = make_refunds(
        {
            "refund_id": "R1",
            "order_id": "O1",
            "buyer_id": "B1",
            "amount_fen": 29_999,
            "requested_at": "2025-06-03T00:00:00Z",
            "resolved_at": "2025-06-03T10:00:00Z",
            "outcome": "approved",
        },
        {
            "refund_id": "R2",
            "order_id": "O2",
            "buyer_id": "B2",
            "amount_fen": 30_000,
            "requested_at": "2025-06-03T00:00:00Z",
            "abuse_confirmed_at": "2025-07-01T00:00:00Z",
        },
        {
            "refund_id": "R3",
            "order_id": "O3",
            "buyer_id": "B1",
            "requested_at": "2025-06-03T00:00:00Z",
        },
        {
            "refund_id": "R4",
            "order_id": "O4",
            "buyer_id": "B1",
            "requested_at": "2025-06-03T00:00:00Z",
        },
    )
    return make_log(buyers, orders, refunds)


def test_only_pre_shipment_refund_only_requests_on_eligible_goods_are_candidates() -> None:
    scores = pd.DataFrame(
        {"buyer_id": ["B1", "B2"], "as_of": T, "score": [0.01, 0.5], "bad": [0, 1]}
    )
    candidates = fast_refund_candidates(_log(), scores)
    assert sorted(candidates["refund_id"]) == ["R1", "R2"]  # R3 virtual, R4 after shipment
    by_id = candidates.set_index("refund_id")
    assert by_id.loc["R2", "abusive"] and by_id.loc["R2", "bad"] == 1
    # Shipped after the request: R1 was approved (the risk), R2 never was (fulfilment).
    assert by_id.loc["R1", "shipped_after"] and not by_id.loc["R2", "shipped_after"]


def test_a_request_covered_by_several_snapshots_is_counted_once_with_the_newest() -> None:
    later = T + pd.Timedelta(days=1)
    scores = pd.DataFrame(
        {
            "buyer_id": ["B1", "B2", "B1", "B2"],
            "as_of": [T, T, later, later],
            "score": [0.01, 0.5, 0.02, 0.6],
            "bad": [0, 1, 0, 1],
        }
    )
    candidates = fast_refund_candidates(_log(), scores)
    assert sorted(candidates["refund_id"]) == ["R1", "R2"]
    assert (candidates["as_of"] == later).all()
    assert candidates.set_index("refund_id").loc["R1", "score"] == 0.02


def test_threshold_and_amount_limit_decide_what_is_approved() -> None:
    scores = pd.DataFrame(
        {"buyer_id": ["B1", "B2"], "as_of": T, "score": [0.01, 0.5], "bad": [0, 1]}
    )
    candidates = fast_refund_candidates(_log(), scores)
    table = policy_tradeoffs(candidates, scores, [0.1, 0.9], [30_000, 30_001]).set_index(
        ["threshold", "amount_limit_cny"]
    )
    strict = table.loc[(0.1, 300.0)]
    assert strict["auto_approved"] == 1 and strict["bad_buyer_rate"] == 0
    assert strict["buyer_hours_saved"] == 10.0 and strict["premium_coverage"] == 0.5
    assert strict["shipped_after_approval"] == 1
    assert table.loc[(0.9, 300.0), "auto_approved"] == 1  # 300.00 CNY is not below the limit
    loose = table.loc[(0.9, 300.01)]
    assert loose["auto_approved"] == 2 and loose["cny_at_risk"] == 300.0
    assert loose["shipped_after_approval"] == 1 and loose["confirmed_abuse"] == 1
