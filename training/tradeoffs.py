"""Policy trade-offs in hindsight: what a threshold and an amount limit would have done.

For the refund requests that followed each snapshot, count what the policy would have
auto-approved and what that would have cost or saved: the merchant benefits POLICY.md
claims (reviews saved, time to refund) against the risk (confirmed abuse approved, CNY
at risk, goods shipped after the approval).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from features.log import TransactionLog

APPROVED = ("approved", "auto_approved", "arbitrated_buyer_wins")


def fast_refund_candidates(
    log: TransactionLog, scores: pd.DataFrame, horizon_days: int = 90
) -> pd.DataFrame:
    """The requests the fast-refund rules could apply to, with the buyer's score at T.

    Args:
        log: The whole log (this looks after T on purpose: it is an evaluation).
        scores: `buyer_id`, `as_of` (T), `score` (P(bad)) and `bad` (the label) per buyer
            and snapshot.
        horizon_days: How long after T a request is judged with the score of T.

    Returns:
        One row per pre-shipment refund-only request on a non-virtual, non-custom order in
        (T, T + horizon] of some snapshot T, judged with the newest such T (the score the
        system would have had then; a request is counted once however many snapshots cover
        it), with `paid_fen`, `amount_fen`, `score`, `bad` (the buyer's label), `abusive`
        (this request confirmed as abuse), `shipped_after` (approved in the log, and a
        tracking number entered after the request: POLICY.md's observable risk; a request
        rejected or withdrawn and then shipped is ordinary fulfilment) and `hours_to_resolve`.
    """
    orders = log.orders.set_index("order_id")
    requests = log.refunds.join(
        orders[["paid_fen", "is_virtual", "is_custom", "shipped_at"]], on="order_id"
    )
    pre_shipment = requests["shipped_at"].isna() | (
        requests["shipped_at"] > requests["requested_at"]
    )
    requests = requests.loc[
        pre_shipment
        & (requests["kind"] == "refund_only")
        & ~requests["is_virtual"]
        & ~requests["is_custom"]
    ]
    pieces = []
    for as_of, snapshot in scores.groupby("as_of"):
        window = requests.loc[
            (requests["requested_at"] > as_of)
            & (requests["requested_at"] <= as_of + pd.Timedelta(days=horizon_days))
        ]
        pieces.append(window.merge(snapshot[["buyer_id", "as_of", "score", "bad"]], on="buyer_id"))
    frame = pd.concat(pieces, ignore_index=True)
    frame = frame.sort_values("as_of", kind="stable").drop_duplicates("refund_id", keep="last")
    frame = frame.reset_index(drop=True)
    approved = frame["outcome"].isin(APPROVED)
    frame["abusive"] = frame["abuse_confirmed_at"].notna()
    frame["shipped_after"] = approved & frame["shipped_at"].notna()
    waited = frame["resolved_at"] - frame["requested_at"]
    frame["hours_to_resolve"] = (waited / pd.Timedelta(hours=1)).where(approved)
    return frame


def policy_tradeoffs(
    candidates: pd.DataFrame,
    scores: pd.DataFrame,
    thresholds: Iterable[float],
    amount_limits_fen: Iterable[int],
) -> pd.DataFrame:
    """What each (threshold, amount limit) pair would have auto-approved, and at what cost.

    Args:
        candidates: From `fast_refund_candidates`.
        scores: The same scores (for the share of buyers flagged premium).
        thresholds: Premium iff score <= threshold.
        amount_limits_fen: Auto-approve only when paid_fen < limit.

    Returns:
        One row per pair: premium coverage, requests auto-approved (reviews saved), the
        share made by bad buyers (the model's target) and the CNY they took (at risk), the
        requests confirmed as abuse themselves, approvals followed by a tracking number,
        and the hours buyers would not have waited.
    """
    rows = []
    for threshold in thresholds:
        premium = candidates["score"] <= threshold
        for limit in amount_limits_fen:
            approved = candidates.loc[premium & (candidates["paid_fen"] < limit)]
            n = len(approved)
            rows.append(
                {
                    "threshold": threshold,
                    "amount_limit_cny": limit / 100,
                    "premium_coverage": float((scores["score"] <= threshold).mean()),
                    "auto_approved": n,
                    "share_of_candidates": n / max(len(candidates), 1),
                    "bad_buyer_rate": float(approved["bad"].mean()) if n else np.nan,
                    "cny_at_risk": approved.loc[approved["bad"] == 1, "amount_fen"].sum() / 100,
                    "confirmed_abuse": int(approved["abusive"].sum()),
                    "shipped_after_approval": int(approved["shipped_after"].sum()),
                    "buyer_hours_saved": float(approved["hours_to_resolve"].sum()),
                }
            )
    return pd.DataFrame(rows)
