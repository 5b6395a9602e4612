"""Labels: was the buyer bad in the window after T? (DESIGN.md)

A buyer is bad as of T when they make a refund request in (T, T + H] that is confirmed
as abuse by T + H + M: known at T + H + M, so confirmed before it, the convention features
use at T (and the log's end: an export of [start, end) holds every confirmation before its
end, so a label is final once T + H + M <= end). Labels look at the future on purpose;
features never do.
"""

from __future__ import annotations

import pandas as pd

from features.log import TransactionLog, as_of_time, positions


def label_window(
    as_of: object, horizon_days: int = 90, maturity_days: int = 30
) -> tuple[pd.Timestamp, pd.Timestamp, pd.Timestamp]:
    """Return (T, T + H, T + H + M) for an as-of date."""
    if horizon_days < 1 or maturity_days < 0:
        raise ValueError("horizon_days must be >= 1 and maturity_days >= 0")
    known_at = as_of_time(as_of)
    horizon_end = known_at + pd.Timedelta(days=horizon_days)
    return known_at, horizon_end, horizon_end + pd.Timedelta(days=maturity_days)


def label_matured(
    log: TransactionLog, as_of: object, horizon_days: int = 90, maturity_days: int = 30
) -> bool:
    """Whether the label window of `as_of` has matured by the end of the log."""
    if log.end is None:
        raise ValueError("the log has no end date (meta.json 'end'), so maturity is unknown")
    return label_window(as_of, horizon_days, maturity_days)[2] <= log.end


def labels(
    log: TransactionLog, as_of: object, horizon_days: int = 90, maturity_days: int = 30
) -> pd.DataFrame:
    """Label every buyer registered before T.

    Args:
        log: The whole log (labels need what happens after T).
        as_of: The as-of date D; T = D 00:00 UTC.
        horizon_days: H, how far after T a request counts.
        maturity_days: M, how long after T + H a confirmation may still arrive.

    Returns:
        `buyer_id`, `as_of` (T), `bad` (Int8: 1 bad, 0 not; NA for every buyer when the
        window has not matured by the end of the log).
    """
    known_at, horizon_end, matured_at = label_window(as_of, horizon_days, maturity_days)
    buyers = log.buyers.loc[log.buyers["registered_at"] < known_at, "buyer_id"]
    frame = pd.DataFrame({"buyer_id": buyers.to_numpy(), "as_of": known_at})
    if not label_matured(log, as_of, horizon_days, maturity_days):
        frame["bad"] = pd.array([pd.NA] * len(frame), dtype="Int8")
        return frame
    refunds = log.refunds
    abusive = refunds.loc[
        (refunds["requested_at"] > known_at)
        & (refunds["requested_at"] <= horizon_end)
        & (refunds["abuse_confirmed_at"] < matured_at),
        "buyer_id",
    ]
    is_bad = positions(frame["buyer_id"], abusive.drop_duplicates()) >= 0
    frame["bad"] = pd.array(is_bad.astype("int8"), dtype="Int8")
    return frame
