"""Each buyer feature in words, for people: "4 refund-only requests after delivery in the
last 90 days".

`describe(feature, value)` gives the phrase an after-sales agent reads (serving's "why not
premium" factors use it); a feature without a phrase of its own is shown by its name. Money
features are in CNY, shares as percentages, counts as whole numbers.
"""

from __future__ import annotations

import math

from features.build import FEATURE_COLUMNS, ORDER_WINDOWS

_COUNT = "count"
_CNY = "cny"
_SHARE = "share"
_DAYS = "days"
_RATIO = "ratio"

# feature -> (kind, phrase with {value} where the number goes)
_PHRASES: dict[str, tuple[str, str]] = {
    "account_age_days": (_DAYS, "an account {value} days old"),
    "orders_total": (_COUNT, "{value} orders in all"),
    "gmv_total_cny": (_CNY, "{value} CNY spent in all"),
    **{f"orders_{w}d": (_COUNT, f"{{value}} orders in the last {w} days") for w in ORDER_WINDOWS},
    **{f"gmv_{w}d_cny": (_CNY, f"{{value}} CNY spent in the last {w} days") for w in ORDER_WINDOWS},
    **{
        f"avg_paid_{w}d_cny": (_CNY, f"{{value}} CNY paid an order on average in the last {w} days")
        for w in ORDER_WINDOWS
    },
    "days_since_last_order": (_DAYS, "the last order {value} days ago"),
    "days_since_first_order": (_DAYS, "the first order {value} days ago"),
    "distinct_shops_365d": (_COUNT, "orders from {value} shops in the last 365 days"),
    "top_shop_share_90d": (_SHARE, "{value} of the last 90 days' orders from one shop"),
    "new_shop_share_30d": (_SHARE, "{value} of the last 30 days' orders from shops new to them"),
    "new_category_share_30d": (
        _SHARE,
        "{value} of the last 30 days' orders in categories new to them",
    ),
    "spend_shift_30d_vs_365d": (
        _RATIO,
        "orders in the last 30 days {value} times the size of the year's average",
    ),
    "avg_days_delivery_to_completion_365d": (
        _DAYS,
        "{value} days on average from delivery to completing an order",
    ),
    "virtual_or_custom_share_365d": (_SHARE, "{value} of the year's orders virtual or custom"),
    "high_value_share_365d": (_SHARE, "{value} of the year's orders of 300 CNY or more"),
    "cancelled_orders_365d": (_COUNT, "{value} cancelled orders in the last 365 days"),
    "cancel_rate_365d": (_SHARE, "{value} of the year's orders cancelled"),
    "order_velocity_7d_vs_90d": (
        _RATIO,
        "ordering {value} times as fast in the last 7 days as over 90 days",
    ),
    "refunds_total": (_COUNT, "{value} refund requests in all"),
    "refunds_7d": (_COUNT, "{value} refund requests in the last 7 days"),
    "refunds_30d": (_COUNT, "{value} refund requests in the last 30 days"),
    "refunds_90d": (_COUNT, "{value} refund requests in the last 90 days"),
    "refunds_365d": (_COUNT, "{value} refund requests in the last 365 days"),
    "pre_ship_refunds_90d": (_COUNT, "{value} refund requests before shipment in the last 90 days"),
    "pre_ship_refunds_365d": (
        _COUNT,
        "{value} refund requests before shipment in the last 365 days",
    ),
    "pre_ship_refund_cny_365d": (
        _CNY,
        "{value} CNY asked back before shipment in the last 365 days",
    ),
    "pre_ship_refund_rate_365d": (
        _SHARE,
        "refunds before shipment on {value} of the year's orders",
    ),
    "post_ship_refunds_90d": (_COUNT, "{value} refund requests after shipment in the last 90 days"),
    "post_ship_refunds_365d": (
        _COUNT,
        "{value} refund requests after shipment in the last 365 days",
    ),
    "post_ship_refund_cny_365d": (
        _CNY,
        "{value} CNY asked back after shipment in the last 365 days",
    ),
    "post_ship_refund_rate_365d": (
        _SHARE,
        "refunds after shipment on {value} of the year's orders",
    ),
    "refund_only_after_delivery_90d": (
        _COUNT,
        "{value} refund-only requests after delivery in the last 90 days",
    ),
    "refund_only_after_delivery_365d": (
        _COUNT,
        "{value} refund-only requests after delivery in the last 365 days",
    ),
    "refund_only_after_delivery_rate_365d": (
        _SHARE,
        "refund-only requests after delivery on {value} of the year's orders",
    ),
    "return_and_refund_365d": (_COUNT, "{value} returns in the last 365 days"),
    "refund_amount_share_365d": (_SHARE, "{value} of the year's spending asked back"),
    "disputes_365d": (_COUNT, "{value} refunds taken to arbitration in the last 365 days"),
    "disputes_won_365d": (_COUNT, "{value} arbitrations won in the last 365 days"),
    "disputes_lost_365d": (_COUNT, "{value} arbitrations lost in the last 365 days"),
    "rejected_refunds_365d": (_COUNT, "{value} refund requests rejected in the last 365 days"),
    "withdrawn_refunds_365d": (_COUNT, "{value} refund requests withdrawn in the last 365 days"),
    "open_refunds": (_COUNT, "{value} refund requests still open"),
    "confirmed_abuse_total": (_COUNT, "{value} refunds confirmed as abuse in all"),
    "confirmed_abuse_365d": (_COUNT, "{value} refunds confirmed as abuse in the last 365 days"),
    "days_since_last_confirmed_abuse": (_DAYS, "abuse last confirmed {value} days ago"),
}


# What a missing value means, where it has a meaning of its own; otherwise it is not known.
_MISSING = {
    "days_since_last_confirmed_abuse": "no refund ever confirmed as abuse",
    "days_since_last_order": "no order yet",
    "days_since_first_order": "no order yet",
}


def _number(kind: str, value: float) -> str:
    if kind == _SHARE:
        return f"{value:.0%}"
    if kind == _CNY:
        return f"{value:,.2f}"
    if kind == _RATIO:
        return f"{value:.1f}"
    if kind == _DAYS:
        return f"{value:,.0f}"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def describe(feature: str, value: float | None) -> str:
    """The feature's value as a phrase, e.g. "4 refund-only requests after delivery in the
    last 90 days"; a missing value (no orders to take a share of, no abuse ever confirmed)
    is said to be unknown."""
    kind, phrase = _PHRASES.get(feature, (_RATIO, f"{feature} = {{value}}"))
    if value is None or not math.isfinite(value):
        return _MISSING.get(feature, f"{feature.replace('_', ' ')} not known")
    return phrase.format(value=_number(kind, value))


def described_features() -> list[str]:
    """The features with a phrase of their own (every one of FEATURE_COLUMNS: a test checks)."""
    return [name for name in FEATURE_COLUMNS if name in _PHRASES]
