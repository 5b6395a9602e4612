"""Shop metrics as of a date: what a platform would use to decide which shops get the service.

Computed from `log.known_at(T)` (T = D 00:00 UTC) like every buyer feature, so the metrics
as of D are exactly those of the log cut to what was known at T. Pure pandas.
"""

from __future__ import annotations

import pandas as pd

from features.log import TransactionLog, as_of_time

APPROVED_OUTCOMES = ("approved", "auto_approved", "arbitrated_buyer_wins")
DISPUTE_OUTCOMES = ("arbitrated_buyer_wins", "arbitrated_merchant_wins")

SHOP_METRIC_COLUMNS = [
    "shop_age_days",
    "orders",
    "orders_due",
    "late_shipments",
    "late_shipment_rate",
    "mean_ship_hours",
    "approved_pre_ship_refunds",
    "tracking_after_refund",
    "tracking_after_refund_rate",
    "disputes",
    "dispute_rate",
]


def _rate(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    return (numerator / denominator.where(denominator > 0)).astype("float64")


def shop_metrics(
    log: TransactionLog, as_of: object, ship_deadline_hours: float = 72.0
) -> pd.DataFrame:
    """Per-shop operations metrics from what was known at T.

    - `late_shipment_rate`: among orders whose shipping deadline passed before T (and that
      were not cancelled within it), the share with no tracking number by the deadline.
    - `tracking_after_refund_rate`: among approved refunds requested before shipment, the
      share whose order got a tracking number afterwards: the merchant had shipped but not
      entered the number, and the platform refunded anyway (POLICY.md's named risk).
    - `dispute_rate`: refunds taken to platform arbitration, per order.

    Rates are NaN when there is nothing to divide by.

    Args:
        log: The transaction log (the whole of it; it is cut here).
        as_of: The as-of date D.
        ship_deadline_hours: Hours after payment by which a tracking number is due.

    Returns:
        `shop_id` then SHOP_METRIC_COLUMNS, one row per shop opened before T, by shop_id.
    """
    known_at = as_of_time(as_of)
    log = log.known_at(known_at)
    shops = log.shops[["shop_id", "opened_at"]].sort_values("shop_id", ignore_index=True)
    orders = log.orders
    deadline = orders["paid_at"] + pd.Timedelta(hours=ship_deadline_hours)
    due = (deadline < known_at) & ~(orders["cancelled_at"] <= deadline)
    late = due & ~(orders["shipped_at"] <= deadline)
    ship_hours = (orders["shipped_at"] - orders["paid_at"]).dt.total_seconds() / 3600.0
    per_order = pd.DataFrame(
        {
            "shop_id": orders["shop_id"],
            "orders": 1,
            "orders_due": due.astype("int64"),
            "late_shipments": late.astype("int64"),
            "ship_hours": ship_hours,
        }
    )
    by_shop = per_order.groupby("shop_id").agg(
        orders=("orders", "sum"),
        orders_due=("orders_due", "sum"),
        late_shipments=("late_shipments", "sum"),
        mean_ship_hours=("ship_hours", "mean"),
    )

    refunds = log.refunds.merge(
        orders[["order_id", "shop_id", "shipped_at"]], on="order_id", how="inner"
    )
    pre_ship = refunds["shipped_at"].isna() | (refunds["shipped_at"] > refunds["requested_at"])
    approved = pre_ship & refunds["outcome"].isin(APPROVED_OUTCOMES)
    per_refund = pd.DataFrame(
        {
            "shop_id": refunds["shop_id"],
            "approved_pre_ship_refunds": approved.astype("int64"),
            "tracking_after_refund": (approved & refunds["shipped_at"].notna()).astype("int64"),
            "disputes": refunds["outcome"].isin(DISPUTE_OUTCOMES).astype("int64"),
        }
    )
    refund_counts = per_refund.groupby("shop_id").sum()

    out = shops.set_index("shop_id").join(by_shop).join(refund_counts)
    counts = [
        "orders",
        "orders_due",
        "late_shipments",
        "approved_pre_ship_refunds",
        "tracking_after_refund",
        "disputes",
    ]
    out[counts] = out[counts].fillna(0).astype("int64")
    out["shop_age_days"] = ((known_at - out["opened_at"]).dt.total_seconds() / 86_400.0).astype(
        "float64"
    )
    out["late_shipment_rate"] = _rate(out["late_shipments"], out["orders_due"])
    out["tracking_after_refund_rate"] = _rate(
        out["tracking_after_refund"], out["approved_pre_ship_refunds"]
    )
    out["dispute_rate"] = _rate(out["disputes"], out["orders"])
    out["mean_ship_hours"] = out["mean_ship_hours"].astype("float64")
    return out.reset_index()[["shop_id", *SHOP_METRIC_COLUMNS]]


def tracking_after_refund(log: TransactionLog, as_of: object) -> pd.DataFrame:
    """The approved pre-shipment refunds whose order later got a tracking number, by shop.

    Returns:
        `shop_id`, `refund_id`, `order_id`, `requested_at`, `resolved_at`, `shipped_at`,
        `outcome` for each such refund known at T, most recent first.
    """
    known_at = as_of_time(as_of)
    log = log.known_at(known_at)
    refunds = log.refunds.merge(
        log.orders[["order_id", "shop_id", "shipped_at"]], on="order_id", how="inner"
    )
    hit = (
        refunds["outcome"].isin(APPROVED_OUTCOMES)
        & refunds["shipped_at"].notna()
        & (refunds["shipped_at"] > refunds["requested_at"])
    )
    columns = ["shop_id", "refund_id", "order_id", "requested_at", "resolved_at", "shipped_at"]
    frame = refunds.loc[hit, [*columns, "outcome"]]
    return frame.sort_values("shipped_at", ascending=False, ignore_index=True)


__all__ = ["SHOP_METRIC_COLUMNS", "shop_metrics", "tracking_after_refund"]
