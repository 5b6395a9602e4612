"""The decision on one refund request, as a pure function of plain inputs.

`decide` holds every rule call, their combination, the order of the reasons, the premium flag
and the note. It reads no clock, database, model or metric: the service gathers its inputs
(the online store's records, the champion's score, the audit log's approval counts) and
records its output, and a backtest or a notebook can call it with inputs of its own.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

from serving import rules

if TYPE_CHECKING:
    from serving.policy import Policy
    from serving.records import BuyerRecord, ShopRecord
    from serving.schemas import DecisionRequest

_DAY_SECONDS = 86_400.0

# A reason's place in an answer: the order `rules.Reason` declares the codes in.
_RANK = {reason: i for i, reason in enumerate(rules.Reason)}


class Decision(NamedTuple):
    """What was decided, and why (a tuple: built on every request, cheaper than a dataclass).

    Attributes:
        decision: `rules.AUTO_APPROVE` or `rules.MANUAL_REVIEW`.
        reasons: Every rule that failed, in the order `rules.Reason` declares the codes
            (empty exactly when approved).
        premium: Whether the champion's score is at or below its threshold (POLICY.md rule 1);
            False when there is no score.
        note: POLICY.md's note (`rules.APPROVAL_NOTE`) on an approval; None otherwise.
    """

    decision: str
    reasons: tuple[rules.Failure, ...]
    premium: bool
    note: str | None


def _rank(failure: rules.Failure) -> int:
    return _RANK[failure.code]


def decide(
    request: DecisionRequest,
    buyer: BuyerRecord | None,
    shop: ShopRecord | None,
    score: float | None,
    threshold: float | None,
    approvals: tuple[int, int],
    policy: Policy,
    now: float,
    *,
    unavailable: str | None = None,
    exposure: tuple[float, float] = (0.0, 0.0),
) -> Decision:
    """Judge one request: auto_approve only when every rule passes.

    The rules, each a function of `serving.rules`: the order is unshipped, the amount is
    below the limit, the goods are not excluded, the request is refund-only, the shop is
    eligible, the buyer is not revoked, the buyer has the minimum history, the buyer is
    premium, another approval stays within the velocity limits. A buyer the store does not
    know (no features) fails on history, not on the score. Every failed rule is listed, in
    the order `rules.Reason` declares the codes (DESIGN.md's list), whatever order they
    were checked in.

    Args:
        request: The validated request.
        buyer: What the online store knows about the request's buyer (None: unknown).
        shop: What the online store knows about the request's shop (None: unknown).
        score: The champion's score for the buyer (None: no score could be trusted).
        threshold: The champion's premium threshold (None: no champion).
        approvals: The buyer's auto-approvals in the last day and the last 30 days before
            `now`.
        policy: The policy in force.
        now: When the decision is made (epoch seconds): the account's age is taken at it.
        unavailable: Why the buyer, the shop and the score could not be read at all (the
            store is down): their rules are not judged, and one SCORE_UNAVAILABLE says why.
        exposure: The expected loss (P(bad) x paid amount, fen) already auto-approved for the
            request's shop in the last day and for its buyer in the last 30 days before
            `now`; judged only when the policy sets a loss budget and there is a score.

    Returns:
        The decision, its reasons, the premium flag and the note.
    """
    order = request.order
    failures = [
        rules.order_unshipped(order.status, order.tracking_number),
        rules.amount_below_limit(order.paid_amount, policy.amount_limit_fen),
        rules.goods_not_excluded(
            order.is_virtual, order.is_custom, order.category, policy.excluded_categories
        ),
        rules.refund_only(request.kind),
    ]
    # The one place the premium is worked out: the flag in the answer is this rule passing.
    not_premium = rules.buyer_premium(score, threshold)
    if unavailable is None:
        orders: int | None = None
        age_days: float | None = None
        if buyer is not None and math.isfinite(buyer.registered_at):
            orders, age_days = buyer.order_count, (now - buyer.registered_at) / _DAY_SECONDS
        failures += [
            rules.shop_eligible(
                None if shop is None else shop.eligible, shop.reasons if shop else ""
            ),
            rules.buyer_not_revoked(
                buyer is not None and buyer.revoked, buyer.revoked_reason if buyer else ""
            ),
            rules.buyer_has_history(orders, age_days, policy.min_history),
        ]
        if buyer is not None and len(buyer.features):
            # An unknown buyer has no history rather than an unavailable score.
            failures.append(not_premium)
    failures.append(rules.within_velocity(*approvals, policy.velocity))
    if policy.loss_budget.active and score is not None and math.isfinite(score):
        expected_loss = score * order.paid_amount
        failures.append(rules.within_loss_budget(expected_loss, *exposure, policy.loss_budget))
    if unavailable is not None:
        failures.append(rules.Failure(rules.Reason.SCORE_UNAVAILABLE, unavailable))
    failed = [failure for failure in failures if failure is not None]
    if not failed:
        return Decision(rules.AUTO_APPROVE, (), not_premium is None, rules.APPROVAL_NOTE)
    failed.sort(key=_rank)
    return Decision(rules.MANUAL_REVIEW, tuple(failed), not_premium is None, None)
