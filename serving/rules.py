"""POLICY.md's hard rules as pure functions, each returning a reason code when it fails.

Each rule takes plain values and returns None when it passes or a `Failure` carrying one of
DESIGN.md's stable reason codes. `serving.decision.decide` calls them all and combines them:
it approves only when nothing failed, so every decision can be explained and replayed from
the audit record.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from serving.policy import LossBudget, MinHistory, Velocity, category_key

# POLICY.md, word for word: the note an automatic approval carries.
APPROVAL_NOTE = "该用户为平台优质用户且订单满足极速退款条件,平台已自动审核通过卖家发货前仅退款申请"

AUTO_APPROVE = "auto_approve"
MANUAL_REVIEW = "manual_review"


class Reason(StrEnum):
    """The stable reason codes of DESIGN.md.

    Declared in the order DESIGN.md lists them, which is the order an answer lists its
    reasons (`serving.decision.decide`): a new code goes where it should be read.
    """

    ORDER_SHIPPED = "ORDER_SHIPPED"
    AMOUNT_NOT_BELOW_LIMIT = "AMOUNT_NOT_BELOW_LIMIT"
    CATEGORY_EXCLUDED = "CATEGORY_EXCLUDED"
    CATEGORY_NOT_COVERED = "CATEGORY_NOT_COVERED"
    KIND_NOT_REFUND_ONLY = "KIND_NOT_REFUND_ONLY"
    SHOP_NOT_ELIGIBLE = "SHOP_NOT_ELIGIBLE"
    BUYER_REVOKED = "BUYER_REVOKED"
    BUYER_NO_HISTORY = "BUYER_NO_HISTORY"
    BUYER_NOT_PREMIUM = "BUYER_NOT_PREMIUM"
    VELOCITY_LIMIT = "VELOCITY_LIMIT"
    LOSS_BUDGET_EXCEEDED = "LOSS_BUDGET_EXCEEDED"
    SCORE_UNAVAILABLE = "SCORE_UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class Failure:
    """A rule that did not pass: its reason code and a message for the after-sales agent."""

    code: Reason
    message: str


def _fen(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def order_unshipped(status: str, tracking_number: str | None) -> Failure | None:
    """POLICY.md rule 4: paid, and no tracking number entered, as the backend shows it."""
    if status != "paid_unshipped":
        return Failure(Reason.ORDER_SHIPPED, f"order status is {status}, not paid_unshipped")
    if tracking_number:
        return Failure(Reason.ORDER_SHIPPED, "order already has a tracking number")
    return None


def amount_below_limit(paid_fen: int, limit_fen: int) -> Failure | None:
    """POLICY.md rule 2: the actually-paid amount is strictly below the limit."""
    if paid_fen < limit_fen:
        return None
    return Failure(
        Reason.AMOUNT_NOT_BELOW_LIMIT,
        f"paid amount {_fen(paid_fen)} CNY is not below {_fen(limit_fen)} CNY",
    )


def goods_not_excluded(
    is_virtual: bool,
    is_custom: bool,
    category: str,
    excluded_categories: Iterable[str],
    allowed_categories: Iterable[str],
) -> Failure | None:
    """POLICY.md rule 3: neither virtual nor custom-made, by flag or by category, and a
    category the policy covers (its closed list).

    The category is compared trimmed, case-folded and NFKC-normalized
    (`policy.category_key`; the policy holds its lists that way), so "Game_Top_Up" cannot
    slip past game_top_up; a category on neither list ("custom-made", "\u0441ustom" with a
    Cyrillic "с") is not covered: manual review, not a guess.
    """
    if is_virtual:
        return Failure(Reason.CATEGORY_EXCLUDED, "virtual goods are excluded")
    if is_custom:
        return Failure(Reason.CATEGORY_EXCLUDED, "custom-made goods are excluded")
    key = category_key(category)
    if key in excluded_categories:
        return Failure(Reason.CATEGORY_EXCLUDED, f"category {category} is excluded")
    if key not in allowed_categories:
        return Failure(
            Reason.CATEGORY_NOT_COVERED,
            f"category {category!r} is not one the service covers: an agent checks the goods",
        )
    return None


def refund_only(kind: str) -> Failure | None:
    """The service covers refund-only requests (仅退款), not returns."""
    if kind == "refund_only":
        return None
    return Failure(Reason.KIND_NOT_REFUND_ONLY, f"request kind is {kind}, not refund_only")


def shop_eligible(eligible: bool | None, why_not: str = "") -> Failure | None:
    """The platform grants the service to this shop (None: the shop is unknown)."""
    if eligible is None:
        return Failure(Reason.SHOP_NOT_ELIGIBLE, "shop is unknown to the online store")
    if eligible:
        return None
    return Failure(Reason.SHOP_NOT_ELIGIBLE, f"shop is not eligible: {why_not or 'by policy'}")


def buyer_not_revoked(revoked: bool, why: str = "") -> Failure | None:
    """The platform has not revoked the service for this buyer."""
    if not revoked:
        return None
    return Failure(Reason.BUYER_REVOKED, f"service revoked for this buyer: {why or 'by policy'}")


def buyer_has_history(
    order_count: int | None, account_age_days: float | None, minimum: MinHistory
) -> Failure | None:
    """The buyer is known and has the minimum history (None: the buyer is unknown)."""
    if order_count is None or account_age_days is None:
        return Failure(Reason.BUYER_NO_HISTORY, "buyer is unknown to the online store")
    if order_count < minimum.orders:
        return Failure(
            Reason.BUYER_NO_HISTORY,
            f"buyer has {order_count} orders, fewer than {minimum.orders}",
        )
    if account_age_days < minimum.account_age_days:
        return Failure(
            Reason.BUYER_NO_HISTORY,
            f"account is {int(account_age_days)} days old, younger than {minimum.account_age_days}",
        )
    return None


def within_velocity(
    approvals_last_day: int, approvals_last_30_days: int, limits: Velocity
) -> Failure | None:
    """Another auto-approval keeps the buyer within the daily and 30-day limits."""
    if approvals_last_day >= limits.max_auto_approvals_per_day:
        return Failure(
            Reason.VELOCITY_LIMIT,
            f"{approvals_last_day} auto-approvals in the last day "
            f"(limit {limits.max_auto_approvals_per_day})",
        )
    if approvals_last_30_days >= limits.max_auto_approvals_per_30_days:
        return Failure(
            Reason.VELOCITY_LIMIT,
            f"{approvals_last_30_days} auto-approvals in the last 30 days "
            f"(limit {limits.max_auto_approvals_per_30_days})",
        )
    return None


def within_loss_budget(
    expected_loss_fen: float,
    shop_last_day_fen: float,
    buyer_last_30_days_fen: float,
    budget: LossBudget,
) -> Failure | None:
    """Another auto-approval keeps the expected loss approved (P(bad) x paid amount) within
    the shop's daily cap and the buyer's 30-day cap (rolling windows ending at the decision)."""
    shop_cap, buyer_cap = budget.max_per_shop_day_fen, budget.max_per_buyer_30_days_fen
    if shop_cap is not None and shop_last_day_fen + expected_loss_fen > shop_cap:
        return Failure(
            Reason.LOSS_BUDGET_EXCEEDED,
            f"the shop's expected loss approved in the last day would reach "
            f"{_fen(round(shop_last_day_fen + expected_loss_fen))} CNY "
            f"(cap {_fen(round(shop_cap))} CNY)",
        )
    if buyer_cap is not None and buyer_last_30_days_fen + expected_loss_fen > buyer_cap:
        return Failure(
            Reason.LOSS_BUDGET_EXCEEDED,
            f"the buyer's expected loss approved in the last 30 days would reach "
            f"{_fen(round(buyer_last_30_days_fen + expected_loss_fen))} CNY "
            f"(cap {_fen(round(buyer_cap))} CNY)",
        )
    return None


def buyer_premium(score: float | None, threshold: float | None) -> Failure | None:
    """POLICY.md rule 1: the champion's score is at or below its stored threshold."""
    if score is None or threshold is None or math.isnan(score) or math.isnan(threshold):
        return Failure(Reason.SCORE_UNAVAILABLE, "buyer score is unavailable")
    if score <= threshold:
        return None
    return Failure(
        Reason.BUYER_NOT_PREMIUM,
        f"buyer score {score:.4f} is above the premium threshold {threshold:.4f}",
    )
