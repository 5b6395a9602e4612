"""Tiny hand-made logs for tests: each factory fills the columns a test does not care about."""

from __future__ import annotations

import pandas as pd

from features.log import TIMESTAMP_DTYPE, TransactionLog

ORDER_TIMES = ["shipped_at", "delivered_at", "completed_at", "cancelled_at"]


def ts(value: str | None) -> pd.Timestamp:
    """A UTC timestamp, or NaT for None."""
    return pd.NaT if value is None else pd.Timestamp(value, tz="UTC")


def _times(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    for col in columns:
        frame[col] = pd.to_datetime(frame[col], utc=True).astype(TIMESTAMP_DTYPE)
    return frame


def make_buyers(*rows: tuple[str, str]) -> pd.DataFrame:
    """Buyers from (buyer_id, registered_at) pairs."""
    frame = pd.DataFrame(rows, columns=["buyer_id", "registered_at"])
    frame["buyer_id"] = frame["buyer_id"].astype(str)
    return _times(frame, ["registered_at"])


def make_shops(*rows: tuple[str, str]) -> pd.DataFrame:
    """Shops from (shop_id, opened_at) pairs."""
    frame = pd.DataFrame(rows, columns=["shop_id", "opened_at"])
    frame["shop_id"] = frame["shop_id"].astype(str)
    return _times(frame, ["opened_at"])


def make_orders(*rows: dict) -> pd.DataFrame:
    """Orders from dicts; defaults: shop S1, apparel, 100 CNY, nothing after payment."""
    defaults = {
        "shop_id": "S1",
        "category": "apparel",
        "is_virtual": False,
        "is_custom": False,
        "paid_fen": 10_000,
        **dict.fromkeys(ORDER_TIMES),
    }
    frame = pd.DataFrame([{**defaults, **row} for row in rows])
    columns = [
        "order_id",
        "buyer_id",
        "shop_id",
        "category",
        "is_virtual",
        "is_custom",
        "paid_fen",
        "paid_at",
        *ORDER_TIMES,
    ]
    frame = frame[columns]
    for col in ["order_id", "buyer_id", "shop_id", "category"]:
        frame[col] = frame[col].astype(str)
    frame["paid_fen"] = frame["paid_fen"].astype("int64")
    frame[["is_virtual", "is_custom"]] = frame[["is_virtual", "is_custom"]].astype(bool)
    return _times(frame, ["paid_at", *ORDER_TIMES])


def make_refunds(*rows: dict) -> pd.DataFrame:
    """Refunds from dicts; defaults: refund_only of 100 CNY, unresolved, never confirmed."""
    defaults = {
        "kind": "refund_only",
        "amount_fen": 10_000,
        "resolved_at": None,
        "outcome": None,
        "abuse_confirmed_at": None,
    }
    columns = [
        "refund_id",
        "order_id",
        "buyer_id",
        "requested_at",
        "kind",
        "amount_fen",
        "resolved_at",
        "outcome",
        "abuse_confirmed_at",
    ]
    frame = pd.DataFrame([{**defaults, **row} for row in rows], columns=columns)
    for col in ["refund_id", "order_id", "buyer_id", "kind"]:
        frame[col] = frame[col].astype(str)
    frame["outcome"] = frame["outcome"].astype(str).where(frame["outcome"].notna())
    frame["amount_fen"] = frame["amount_fen"].astype("int64")
    return _times(frame, ["requested_at", "resolved_at", "abuse_confirmed_at"])


def make_log(
    buyers: pd.DataFrame,
    orders: pd.DataFrame,
    refunds: pd.DataFrame | None = None,
    shops: pd.DataFrame | None = None,
    end: str = "2026-01-01",
) -> TransactionLog:
    """A log from the tables given; one shop S1 and no refunds unless given."""
    if shops is None:
        shops = make_shops(("S1", "2024-01-01"))
    if refunds is None:
        refunds = make_refunds(
            {"refund_id": "R0", "order_id": "x", "buyer_id": "x", "requested_at": "2024-01-01"}
        ).iloc[0:0]
    return TransactionLog(
        buyers=buyers,
        shops=shops,
        orders=orders,
        refunds=refunds,
        start=ts("2024-01-01"),
        end=ts(end),
    )


def small_log() -> TransactionLog:
    """Two buyers; B1 with a pre-shipment refund, a refund-only after delivery and abuse."""
    buyers = make_buyers(("B1", "2024-06-01T00:00:00Z"), ("B2", "2025-03-01T12:00:00Z"))
    orders = make_orders(
        {
            "order_id": "O1",
            "buyer_id": "B1",
            "paid_at": "2025-01-10T10:00:00Z",
            "shipped_at": "2025-01-12T10:00:00Z",
            "delivered_at": "2025-01-15T10:00:00Z",
            "completed_at": "2025-01-25T10:00:00Z",
        },
        {
            "order_id": "O2",
            "buyer_id": "B1",
            "paid_at": "2025-05-01T10:00:00Z",
            "cancelled_at": "2025-05-01T12:00:00Z",
            "paid_fen": 35_000,
        },
        {
            "order_id": "O3",
            "buyer_id": "B2",
            "paid_at": "2025-05-20T10:00:00Z",
            "shipped_at": "2025-06-02T10:00:00Z",
            "is_virtual": True,
            "category": "virtual",
        },
    )
    refunds = make_refunds(
        {
            "refund_id": "R1",
            "order_id": "O1",
            "buyer_id": "B1",
            "requested_at": "2025-01-20T10:00:00Z",
            "resolved_at": "2025-01-22T10:00:00Z",
            "outcome": "arbitrated_buyer_wins",
            "abuse_confirmed_at": "2025-03-01T00:00:00Z",
        },
        {
            "refund_id": "R2",
            "order_id": "O2",
            "buyer_id": "B1",
            "requested_at": "2025-05-01T11:00:00Z",
            "resolved_at": "2025-05-01T12:00:00Z",
            "outcome": "auto_approved",
            "amount_fen": 35_000,
        },
        {
            "refund_id": "R3",
            "order_id": "O3",
            "buyer_id": "B2",
            "requested_at": "2025-05-30T10:00:00Z",
            "resolved_at": "2025-06-03T10:00:00Z",
            "outcome": "approved",
            "abuse_confirmed_at": "2025-06-20T00:00:00Z",
        },
    )
    return make_log(buyers, orders, refunds, end="2026-01-01")
