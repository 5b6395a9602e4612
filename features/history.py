"""Features and shop metrics at many (entity, date) pairs at once, for a replay of history.

A backtest needs each request's buyer features as of the request's day and its shop's metrics
as of that day: thousands of as-of dates. Building a whole snapshot per date repeats the
fixed cost of `buyer_features` and `shop_metrics` thousands of times, so these compute the
same values in one pass:

- `buyer_features_at`: every (buyer, date) pair becomes a buyer of its own whose events are
  the buyer's, moved in time by whole days so that all pairs share one as-of date; one call of
  `features.build.buyer_features` then computes every pair. Features depend on time only as
  differences from T and as the cut at T, so a move by whole days changes nothing: the values
  are those of `buyer_features(log, date)` (the tests check equality, bit for bit).
- `shop_metrics_at`: `features.shops.shop_metrics` counts events known before T; each is
  dated once and the counts cumulated over the dates (the tests check equality).

Both are point-in-time by the same cut as the snapshot builders: nothing on or after a
pair's T is seen.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.build import FEATURE_COLUMNS, buyer_features
from features.log import CREATED_AT, TransactionLog, as_of_time, positions
from features.shops import APPROVED_OUTCOMES, DISPUTE_OUTCOMES, SHOP_METRIC_COLUMNS, _rate

_TIMES = {
    "buyers": ["registered_at"],
    "orders": ["paid_at", "shipped_at", "delivered_at", "completed_at", "cancelled_at"],
    "refunds": ["requested_at", "resolved_at", "abuse_confirmed_at"],
}


def _pairs(pairs: pd.DataFrame, key: str) -> pd.DataFrame:
    frame = pd.DataFrame(
        {key: pairs[key].astype(str).to_numpy(), "as_of": [as_of_time(t) for t in pairs["as_of"]]}
    )
    return frame.drop_duplicates(ignore_index=True)


def _moved(frame: pd.DataFrame, rows: np.ndarray, shift: np.ndarray, table: str) -> pd.DataFrame:
    """Rows of `frame` (repeated as `rows` says), their timestamps moved by `shift` ns."""
    out = frame.iloc[rows].reset_index(drop=True)
    delta = pd.to_timedelta(shift, unit="ns")
    for column in _TIMES[table]:
        out[column] = out[column] + delta
    return out


def buyer_features_at(log: TransactionLog, pairs: pd.DataFrame) -> pd.DataFrame:
    """Buyer features of each (buyer_id, as_of) pair, as `buyer_features(log, as_of)` has them.

    Args:
        log: The whole log.
        pairs: `buyer_id` and `as_of` (dates or midnights); repeats are computed once.

    Returns:
        One row per distinct pair whose buyer was registered before its T: `buyer_id`,
        `as_of` (T), then FEATURE_COLUMNS (float64). A pair whose buyer is unknown at T (or
        not in the log at all) has no row, as in a snapshot.
    """
    wanted = _pairs(pairs, "buyer_id")
    columns = ["buyer_id", "as_of", *FEATURE_COLUMNS]
    if wanted.empty:
        return pd.DataFrame(columns=columns)
    reference = wanted["as_of"].max()
    shift = (reference - wanted["as_of"]).to_numpy("timedelta64[ns]").astype("int64")
    as_of_ns = _ns(wanted["as_of"])
    pseudo = pd.Series(np.arange(len(wanted)).astype(str), dtype=object)
    tables: dict[str, pd.DataFrame] = {}
    for table in ("buyers", "orders", "refunds"):
        frame = log.table(table)
        # Each row once per pair of its buyer, in the log's row order within a pair (so sums
        # add up in the same order as in a snapshot, and are bit for bit the same).
        merged = pd.DataFrame({"row": np.arange(len(frame)), "buyer_id": frame["buyer_id"]})
        merged = merged.merge(
            pd.DataFrame({"buyer_id": wanted["buyer_id"], "pair": np.arange(len(wanted))}),
            on="buyer_id",
        ).sort_values(["pair", "row"], kind="stable")
        rows, pair = merged["row"].to_numpy(), merged["pair"].to_numpy()
        # Rows created at or after the pair's T are cut by buyer_features anyway: drop them
        # before they are copied.
        created = frame[CREATED_AT[table]].to_numpy("datetime64[ns]").astype("int64")
        known = created[rows] < as_of_ns[pair]
        rows, pair = rows[known], pair[known]
        moved = _moved(frame, rows, shift[pair], table)
        moved["buyer_id"] = pseudo.to_numpy()[pair]
        for id_column in ("order_id", "refund_id"):
            if id_column in moved.columns:
                moved[id_column] = moved[id_column].astype(str) + "#" + moved["buyer_id"]
        tables[table] = moved
    shifted = TransactionLog(
        buyers=tables["buyers"],
        shops=log.shops,
        orders=tables["orders"],
        refunds=tables["refunds"],
        start=None,
        end=None,
    )
    built = buyer_features(shifted, reference)
    pair = built["buyer_id"].astype("int64").to_numpy()
    built["buyer_id"] = wanted["buyer_id"].to_numpy()[pair]
    built["as_of"] = wanted["as_of"].to_numpy()[pair]
    built["as_of"] = pd.to_datetime(built["as_of"], utc=True)
    return built[columns].sort_values(["as_of", "buyer_id"], ignore_index=True)


def _ns(values: object) -> np.ndarray:
    """UTC instants as int64 nanoseconds."""
    return pd.DatetimeIndex(pd.to_datetime(values, utc=True)).as_unit("ns").asi8


def _known_before(
    shop_code: np.ndarray, times: pd.Series, dates: np.ndarray, n_shops: int
) -> np.ndarray:
    """counts[s, j]: events of shop s dated strictly before dates[j] (NaT: never)."""
    stamp = times.to_numpy("datetime64[ns]").astype("int64")
    never = times.isna().to_numpy()
    first = np.searchsorted(dates, stamp, side="right")  # the first date after the event
    first[never] = len(dates)
    keep = shop_code >= 0
    counts = np.zeros((n_shops, len(dates) + 1))
    np.add.at(counts, (shop_code[keep], first[keep]), 1.0)
    return np.cumsum(counts, axis=1)[:, : len(dates)]


def _summed_before(
    shop_code: np.ndarray, times: pd.Series, values: np.ndarray, dates: np.ndarray, n_shops: int
) -> np.ndarray:
    stamp = times.to_numpy("datetime64[ns]").astype("int64")
    never = times.isna().to_numpy() | np.isnan(values)
    first = np.searchsorted(dates, stamp, side="right")
    first[never] = len(dates)
    keep = (shop_code >= 0) & ~never
    sums = np.zeros((n_shops, len(dates) + 1))
    np.add.at(sums, (shop_code[keep], first[keep]), values[keep])
    return np.cumsum(sums, axis=1)[:, : len(dates)]


def _latest(*times: pd.Series) -> pd.Series:
    """The latest of several instants per row (NaT when any is NaT: not yet happened)."""
    frame = pd.concat(times, axis=1)
    return frame.max(axis=1).where(frame.notna().all(axis=1))


def shop_metrics_at(
    log: TransactionLog, pairs: pd.DataFrame, ship_deadline_hours: float = 72.0
) -> pd.DataFrame:
    """`features.shops.shop_metrics` of each (shop_id, as_of) pair, in one pass.

    Each count of `shop_metrics` is a count of events known before T: an order paid, its
    shipping deadline passed (late or not), a refund resolved approved or disputed, a
    tracking number entered after an approved pre-shipment refund. Each event is dated once
    (when it became known) and counted for every T after it.

    Returns:
        `shop_id`, `as_of` (T), then SHOP_METRIC_COLUMNS, one row per distinct pair whose shop
        was opened before T.
    """
    wanted = _pairs(pairs, "shop_id")
    if wanted.empty:
        return pd.DataFrame(columns=["shop_id", "as_of", *SHOP_METRIC_COLUMNS])
    dates = np.sort(_ns(wanted["as_of"].unique()))
    shops = log.shops.sort_values("shop_id", ignore_index=True)
    n = len(shops)
    orders = log.orders
    o_shop = positions(orders["shop_id"], shops["shop_id"])
    deadline = orders["paid_at"] + pd.Timedelta(hours=ship_deadline_hours)
    due = ~(orders["cancelled_at"] <= deadline)
    late = due & ~(orders["shipped_at"] <= deadline)
    # A deadline counts once it has passed (strictly before T), as in shop_metrics.
    counts = {
        "orders": _known_before(o_shop, orders["paid_at"], dates, n),
        "orders_due": _known_before(o_shop, deadline.where(due), dates, n),
        "late_shipments": _known_before(o_shop, deadline.where(late), dates, n),
    }
    shipped_known = _latest(orders["paid_at"], orders["shipped_at"])
    ship_hours = ((orders["shipped_at"] - orders["paid_at"]).dt.total_seconds() / 3600.0).to_numpy(
        "float64", na_value=np.nan
    )
    ship_sum = _summed_before(o_shop, shipped_known, ship_hours, dates, n)
    ship_count = _known_before(o_shop, shipped_known.where(~np.isnan(ship_hours)), dates, n)

    refunds = log.refunds.merge(
        orders[["order_id", "shop_id", "shipped_at", "paid_at"]], on="order_id", how="inner"
    )
    r_shop = positions(refunds["shop_id"], shops["shop_id"])
    pre_ship = refunds["shipped_at"].isna() | (refunds["shipped_at"] > refunds["requested_at"])
    resolved = _latest(refunds["paid_at"], refunds["requested_at"], refunds["resolved_at"])
    approved = pre_ship & refunds["outcome"].isin(APPROVED_OUTCOMES)
    counts["approved_pre_ship_refunds"] = _known_before(r_shop, resolved.where(approved), dates, n)
    counts["tracking_after_refund"] = _known_before(
        r_shop, _latest(resolved, refunds["shipped_at"]).where(approved), dates, n
    )
    counts["disputes"] = _known_before(
        r_shop, resolved.where(refunds["outcome"].isin(DISPUTE_OUTCOMES)), dates, n
    )

    s = positions(wanted["shop_id"], shops["shop_id"])
    j = np.searchsorted(dates, _ns(wanted["as_of"]))
    opened = shops["opened_at"].to_numpy("datetime64[ns]")
    known = s >= 0
    known[known] = opened[s[known]] < wanted["as_of"].to_numpy("datetime64[ns]")[known]
    s, j, got = s[known], j[known], wanted.loc[known].reset_index(drop=True)
    out = pd.DataFrame({"shop_id": got["shop_id"], "as_of": pd.to_datetime(got["as_of"], utc=True)})
    for name, matrix in counts.items():
        out[name] = matrix[s, j].astype("int64")
    out["shop_age_days"] = (
        (out["as_of"] - shops["opened_at"].iloc[s].reset_index(drop=True)).dt.total_seconds()
        / 86_400.0
    ).astype("float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        hours = ship_sum[s, j] / ship_count[s, j]
    out["mean_ship_hours"] = np.where(ship_count[s, j] > 0, hours, np.nan)
    out["late_shipment_rate"] = _rate(out["late_shipments"], out["orders_due"])
    out["tracking_after_refund_rate"] = _rate(
        out["tracking_after_refund"], out["approved_pre_ship_refunds"]
    )
    out["dispute_rate"] = _rate(out["disputes"], out["orders"])
    return out[["shop_id", "as_of", *SHOP_METRIC_COLUMNS]]


__all__ = ["buyer_features_at", "shop_metrics_at"]
