"""The transaction log: four tables and the "known at T" cut that every feature obeys."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from numbers import Number

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

TABLES = ("buyers", "shops", "orders", "refunds")

ID_COLUMNS = {
    "buyers": ["buyer_id"],
    "shops": ["shop_id"],
    "orders": ["order_id", "buyer_id", "shop_id"],
    "refunds": ["refund_id", "order_id", "buyer_id"],
}

# The timestamp at which a row comes into existence; rows created at or after T are unknown at T.
CREATED_AT = {
    "buyers": "registered_at",
    "shops": "opened_at",
    "orders": "paid_at",
    "refunds": "requested_at",
}

# Later timestamps on an existing row: empty at T unless they happened before T.
LATER_AT = {
    "buyers": [],
    "shops": [],
    "orders": ["shipped_at", "delivered_at", "completed_at", "cancelled_at"],
    "refunds": ["resolved_at", "abuse_confirmed_at"],
}

# A value that only exists once a later timestamp has happened.
VALUE_SET_AT = {"outcome": "resolved_at"}

TIMESTAMP_DTYPE = "datetime64[ns, UTC]"

OUTCOMES = (
    "approved",
    "auto_approved",
    "rejected",
    "withdrawn",
    "arbitrated_buyer_wins",
    "arbitrated_merchant_wins",
)
REFUND_KINDS = ("refund_only", "return_and_refund")


def as_of_time(as_of: object) -> pd.Timestamp:
    """Return T, the instant "as of date D" means: D 00:00 UTC.

    Args:
        as_of: A date, a "YYYY-MM-DD" string or a timestamp (its date in UTC is used:
            2026-01-01T05:00+08:00 is 2025-12-31 21:00 UTC, so T is 2025-12-31 00:00 UTC).

    Raises:
        ValueError: If the value is not a date.
    """
    try:
        if isinstance(as_of, str):  # ISO 8601 only: pandas reads "June" as year 1
            as_of = datetime.fromisoformat(as_of)
        elif isinstance(as_of, Number):  # pandas reads a number as nanoseconds since 1970
            raise TypeError(as_of)
        stamp = pd.Timestamp(as_of)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"as-of date {as_of!r} is not a date (expected YYYY-MM-DD)") from exc
    if stamp is pd.NaT:
        raise ValueError(f"as-of date {as_of!r} is not a date (expected YYYY-MM-DD)")
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return stamp.tz_convert("UTC").normalize()


def positions(values: pd.Series, reference: pd.Series | pd.Index) -> np.ndarray:
    """Position of each value in `reference` (unique ids), -1 where it is absent.

    Arrow's hash lookup on the string ids: several times faster than pandas' get_indexer,
    which converts Arrow strings to Python objects first.
    """
    found = pc.index_in(pa.array(values), value_set=pa.array(reference))
    return found.fill_null(-1).to_numpy().astype("int64", copy=False)


@dataclass(frozen=True)
class TransactionLog:
    """The four tables of the log, validated, with its time span when known.

    Money is integer fen, timestamps are UTC (`datetime64[ns, UTC]`), ids are strings.
    """

    buyers: pd.DataFrame
    shops: pd.DataFrame
    orders: pd.DataFrame
    refunds: pd.DataFrame
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None

    def table(self, name: str) -> pd.DataFrame:
        """Return the table called `name` (one of TABLES)."""
        return getattr(self, name)

    def last_as_of(self) -> pd.Timestamp | None:
        """The newest as-of instant the log covers: the day after its last instant (all of
        it known), or that instant itself when it is a midnight; None without an end."""
        if self.end is None:
            return None
        end = pd.Timestamp(self.end)
        day = end.normalize()
        return day if day == end else day + pd.Timedelta(days=1)

    def check_as_of(self, as_of: object) -> pd.Timestamp:
        """T for an as-of date the log covers: from its first day to `last_as_of`.

        Outside it a snapshot is empty (before) or counts days the log does not cover as
        days without activity (after): a mistyped year, not a question anyone asks.

        Raises:
            ValueError: The date is not a date, or is outside the log.
        """
        known_at = as_of_time(as_of)
        first = self.start
        if first is None and len(self.buyers):
            first = self.buyers["registered_at"].min().normalize()
        last = self.last_as_of()
        if first is not None and known_at < first:
            raise ValueError(
                f"as-of date {known_at:%Y-%m-%d} is before the log starts ({first:%Y-%m-%d})"
            )
        if last is not None and known_at > last:
            raise ValueError(
                f"as-of date {known_at:%Y-%m-%d} is after the log ends (the newest as-of date "
                f"it covers is {last:%Y-%m-%d}; without meta.json the end is the log's last "
                'timestamp: give meta.json an "end" if the log covers more)'
            )
        return known_at

    def known_at(self, known_at: pd.Timestamp) -> TransactionLog:
        """Cut the log down to what was known at the instant `known_at`.

        Rows created at or after it are dropped; later timestamps at or after it are
        emptied, together with the values that go with them (a refund's outcome).
        """
        tables = {}
        for name in TABLES:
            frame = self.table(name)
            frame = frame.loc[frame[CREATED_AT[name]] < known_at]
            unknown = {col: ~(frame[col] < known_at) for col in LATER_AT[name]}
            if any(mask.any() for mask in unknown.values()):
                frame = frame.copy()
                for col, mask in unknown.items():
                    frame.loc[mask, col] = pd.NaT
                for value_col, time_col in VALUE_SET_AT.items():
                    if value_col in frame.columns:
                        frame.loc[unknown[time_col], value_col] = pd.NA
            tables[name] = frame.reset_index(drop=True)
        end = known_at if self.end is None else min(self.end, known_at)
        return replace(self, **tables, end=end)

    def for_buyers(self, buyer_ids: pd.Index | pd.Series) -> TransactionLog:
        """Keep only the given buyers and their orders and refunds (one partition)."""
        keep = pd.Series(buyer_ids)
        tables = {}
        for name in ("buyers", "orders", "refunds"):
            frame = self.table(name)
            mine = positions(frame["buyer_id"], keep) >= 0
            tables[name] = frame.loc[mine].reset_index(drop=True)
        return replace(self, **tables)
