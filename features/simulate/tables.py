"""From the simulator's records to the log's four tables and the truth table.

Times are float days since `start`, written as whole seconds UTC; every timestamp at or
after the end of the export is empty, as the platform would show it at `end`. Ids follow
time: buyers by registration, orders by payment, refunds by request.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from features.log import OUTCOMES, REFUND_KINDS, TransactionLog
from features.simulate.params import BUYER_TYPES, CATEGORY_NAMES, CLASS_KIND
from features.simulate.records import Buyers, Orders, Requests, Shops

_DAY_SECONDS = 86_400
_NAT = np.iinfo(np.int64).min


def _timestamps(days_since_start: np.ndarray, start: pd.Timestamp) -> pd.Series:
    """Float days since `start` (NaN: empty) to whole-second UTC timestamps."""
    missing = ~np.isfinite(days_since_start)
    seconds = np.floor(np.where(missing, 0.0, days_since_start) * _DAY_SECONDS).astype(np.int64)
    nanos = np.where(missing, _NAT, start.value + seconds * 1_000_000_000)
    return pd.Series(pd.DatetimeIndex(nanos.view("M8[ns]")).tz_localize("UTC"))


def _ids(prefix: str, count: int, width: int) -> pd.Series:
    return prefix + pd.Series(np.arange(1, count + 1)).astype("str").str.zfill(width)


def _censor(values: np.ndarray, days: int) -> np.ndarray:
    """Empty every timestamp at or after the end of the export."""
    return np.where(values < days, values, np.nan)


def _truth(
    buyers: Buyers,
    buyer_order: np.ndarray,
    buyer_ids: pd.Series,
    registered_at: pd.Series,
    start: pd.Timestamp,
) -> pd.DataFrame:
    """One row per buyer, in the buyers table's order: the hidden type and episodes."""
    ring = buyers.ring_id[buyer_order]

    def when(values: np.ndarray) -> pd.Series:
        return _timestamps(values[buyer_order], start)

    return pd.DataFrame(
        {
            "buyer_id": buyer_ids,
            "buyer_type": pd.Series(np.array(BUYER_TYPES)[buyers.buyer_type[buyer_order]]).astype(
                "str"
            ),
            "registered_at": registered_at,
            "ring_id": pd.Series(ring).astype("Int64").mask(ring < 0),
            "abuse_onset_from": when(buyers.onset_from),
            "abuse_start": when(buyers.abuse_start),
            "abuse_end": when(buyers.abuse_end),
            "abuse_rate_per_day": buyers.abuse_rate[buyer_order],
            "confirm_prob": buyers.confirm_prob[buyer_order],
            "takeover_exposed_from": when(buyers.exposed_from),
            "takeover_at": when(buyers.takeover_at),
            "takeover_end": when(buyers.takeover_end),
            "takeover_rate_per_day": buyers.takeover_rate[buyer_order],
            "takeover_confirm_prob": buyers.takeover_confirm[buyer_order],
        }
    )


def assemble(
    buyers: Buyers,
    shops: Shops,
    parts: list[tuple[Orders, Requests]],
    start: pd.Timestamp,
    days: int,
) -> tuple[TransactionLog, pd.DataFrame]:
    """The log of [start, start + days) and the truth behind it.

    Args:
        buyers: Every account.
        shops: Every shop.
        parts: (orders, their requests) per generator; a request's `order` is a position
            in its own part's orders.
        start: The first instant of the export.
        days: Its length.
    """
    offsets = np.cumsum([0] + [len(o.paid) for o, _ in parts])
    orders = Orders.concat([o for o, _ in parts])
    requests = Requests.concat(
        [replace(r, order=r.order + off) for (_, r), off in zip(parts, offsets[:-1], strict=True)]
    )

    buyer_order = np.argsort(buyers.registered, kind="stable")
    buyer_rank = np.empty_like(buyer_order)
    buyer_rank[buyer_order] = np.arange(len(buyer_order))
    buyer_ids = _ids("B", len(buyer_order), 7)

    order_sort = np.argsort(orders.paid, kind="stable")
    orders = orders.take(order_sort)
    order_rank = np.empty_like(order_sort)
    order_rank[order_sort] = np.arange(len(order_sort))
    keep = requests.requested < days
    refund_sort = np.argsort(np.where(keep, requests.requested, np.inf), kind="stable")
    refund_sort = refund_sort[: int(keep.sum())]
    requests = requests.take(refund_sort)
    order_position = order_rank[requests.order]

    order_ids = _ids("O", len(order_sort), 9)
    shop_ids = _ids("S", len(shops.shop_type), 5)
    owner = buyer_rank[orders.buyer]
    buyers_frame = pd.DataFrame(
        {
            "buyer_id": buyer_ids,
            "registered_at": _timestamps(buyers.registered[buyer_order], start),
        }
    )
    shops_frame = pd.DataFrame(
        {
            "shop_id": shop_ids,
            "opened_at": _timestamps(shops.opened, start),
        }
    )
    orders_frame = pd.DataFrame(
        {
            "order_id": order_ids,
            "buyer_id": buyer_ids.to_numpy()[owner],
            "shop_id": shop_ids.to_numpy()[orders.shop],
            "category": pd.Series(np.array(CATEGORY_NAMES)[orders.category]).astype("str"),
            "is_virtual": orders.is_virtual.astype(bool),
            "is_custom": orders.is_custom.astype(bool),
            "paid_fen": orders.paid_fen.astype(np.int64),
            "paid_at": _timestamps(orders.paid, start),
            **{
                f"{col}_at": _timestamps(_censor(getattr(orders, col), days), start)
                for col in ("shipped", "delivered", "completed", "cancelled")
            },
        }
    )
    resolved = _censor(requests.resolved, days)
    outcome = np.where(np.isfinite(resolved), requests.outcome, -1)
    refunds_frame = pd.DataFrame(
        {
            "refund_id": _ids("R", len(refund_sort), 9),
            "order_id": order_ids.to_numpy()[order_position],
            "buyer_id": orders_frame["buyer_id"].to_numpy()[order_position],
            "requested_at": _timestamps(requests.requested, start),
            "kind": pd.Series(np.array(REFUND_KINDS)[CLASS_KIND[requests.cls]]).astype("str"),
            "amount_fen": requests.amount.astype(np.int64),
            "resolved_at": _timestamps(resolved, start),
            "outcome": pd.Series(
                pd.Categorical.from_codes(outcome.astype(np.int64), pd.Index(OUTCOMES))
            ).astype("str"),
            "abuse_confirmed_at": _timestamps(_censor(requests.confirmed, days), start),
        }
    )
    for frame in (buyers_frame, shops_frame, orders_frame, refunds_frame):
        for col in frame.columns:
            if col.endswith("_id"):
                frame[col] = frame[col].astype("str")

    end = start + pd.Timedelta(days=days)
    log = TransactionLog(buyers_frame, shops_frame, orders_frame, refunds_frame, start, end)
    truth = _truth(buyers, buyer_order, buyer_ids, buyers_frame["registered_at"], start)
    return log, truth
