"""The decision on one refund request, as a pure function of plain inputs.

`decide` holds every rule call, their combination, the order of the reasons, the premium flag
and the note. It reads no clock, database, model or metric: the service gathers its inputs
(the online store's records, the champion's score, the audit log's approval counts) and
records its output, and a backtest or a notebook can call it with inputs of its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
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
    feature_count: int,
    unavailable: str | None = None,
    exposure: tuple[float, float] = (0.0, 0.0),
) -> Decision:
    """Judge one request: auto_approve only when every rule passes.

    The rules, each a function of `serving.rules`: the order is unshipped, the amount is
    below the limit, the goods are not excluded, the request is refund-only, the shop is
    eligible, the buyer is not revoked, the buyer has the minimum history, the buyer is
    premium, another approval stays within the velocity limits. A buyer the store does not
    know (no registration date) fails on history, not on the score; a known buyer whose
    vector is empty or of another length than the snapshot's has no score. Every failed
    rule is listed, in the order `rules.Reason` declares the codes (DESIGN.md's list),
    whatever order they were checked in. Last, `approval_problem` checks an approval once
    more on its own (a finite score at or below a valid threshold, every rule judged, a
    vector of the expected length): an approval that breaks it is SCORE_UNAVAILABLE.

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
        feature_count: The length of the snapshot's feature vectors (its columns).
        unavailable: Why the buyer, the shop and the score could not be read at all (the
            store is down): their rules are not judged, and one SCORE_UNAVAILABLE says why.
        exposure: The expected loss (P(bad) x paid amount, fen) already auto-approved for the
            request's shop in the last day and for its buyer in the last 30 days before
            `now`; judged only when the policy sets a loss budget and there is a score.

    Returns:
        The decision, its reasons, the premium flag and the note.
    """
    order = request.order
    judged = {
        "order_unshipped": rules.order_unshipped(order.status, order.tracking_number),
        "amount_below_limit": rules.amount_below_limit(order.paid_amount, policy.amount_limit_fen),
        "goods_not_excluded": rules.goods_not_excluded(
            order.is_virtual,
            order.is_custom,
            order.category,
            policy.excluded_categories,
            policy.allowed_categories,
        ),
        "refund_only": rules.refund_only(request.kind),
    }
    # The one place the premium is worked out: the flag in the answer is this rule passing.
    not_premium = rules.buyer_premium(score, threshold)
    if unavailable is None:
        # An unknown buyer (none, or only an admin's revocation: no registration date) has no
        # history rather than an unavailable score; a known one is always judged on the score.
        known = buyer if buyer is not None and math.isfinite(buyer.registered_at) else None
        orders: int | None = None
        age_days: float | None = None
        if known is not None:
            orders, age_days = known.order_count, (now - known.registered_at) / _DAY_SECONDS
        judged["shop_eligible"] = rules.shop_eligible(
            None if shop is None else shop.eligible, shop.reasons if shop else ""
        )
        judged["buyer_not_revoked"] = rules.buyer_not_revoked(
            buyer is not None and buyer.revoked, buyer.revoked_reason if buyer else ""
        )
        judged["buyer_has_history"] = rules.buyer_has_history(orders, age_days, policy.min_history)
        if known is not None:
            if len(known.features) != feature_count:  # an empty or foreign vector: no score
                not_premium = _no_vector(len(known.features), feature_count)
            judged["buyer_premium"] = not_premium
    judged["within_velocity"] = rules.within_velocity(*approvals, policy.velocity)
    if policy.loss_budget.active and score is not None and math.isfinite(score):
        expected_loss = score * order.paid_amount
        judged["within_loss_budget"] = rules.within_loss_budget(
            expected_loss, *exposure, policy.loss_budget
        )
    failures = list(judged.values())
    if unavailable is not None:
        failures.append(rules.Failure(rules.Reason.SCORE_UNAVAILABLE, unavailable))
    failed = [failure for failure in failures if failure is not None]
    if not failed:
        problem = approval_problem(judged, buyer, score, threshold, feature_count, policy)
        if problem is None:
            return Decision(rules.AUTO_APPROVE, (), True, rules.APPROVAL_NOTE)
        failed = [rules.Failure(rules.Reason.SCORE_UNAVAILABLE, problem)]
        not_premium = failed[0]
    failed.sort(key=_rank)
    return Decision(rules.MANUAL_REVIEW, tuple(failed), not_premium is None, None)


def _no_vector(length: int, expected: int) -> rules.Failure:
    return rules.Failure(
        rules.Reason.SCORE_UNAVAILABLE,
        f"buyer's stored features have {length} values, the snapshot's {expected}",
    )


# Every rule an approval needs judged (`within_loss_budget` too when the policy sets a budget).
REQUIRED_RULES = (
    "order_unshipped",
    "amount_below_limit",
    "goods_not_excluded",
    "refund_only",
    "shop_eligible",
    "buyer_not_revoked",
    "buyer_has_history",
    "buyer_premium",
    "within_velocity",
)


def snapshot_too_old(as_of: str, now: float, max_age_days: float) -> str | None:
    """Why a store snapshot as of `as_of` (features known at that day's 00:00 UTC) may not
    serve at `now` (epoch seconds) under the policy's `max_snapshot_age_days`; None if it may.

    A materialize that stopped running (a cron job broken, a feed that dried up) must not keep
    approving on buyers as they were weeks ago: past the bound, the store's answers are as
    good as none (SCORE_UNAVAILABLE).
    """
    age_days = (now - datetime.fromisoformat(as_of).replace(tzinfo=UTC).timestamp()) / _DAY_SECONDS
    if age_days <= max_age_days:
        return None
    return (
        f"buyer and shop could not be checked: the online store's snapshot (as of {as_of}) is "
        f"{age_days:.1f} days old, more than the policy's {max_age_days:g}"
    )


def approval_problem(
    judged: Mapping[str, rules.Failure | None],
    buyer: BuyerRecord | None,
    score: float | None,
    threshold: float | None,
    feature_count: int,
    policy: Policy,
) -> str | None:
    """Why an approval must not stand, or None: the invariant at the end of the decision.

    Checked apart from the rules, so that a rule skipped or a value slipping through one
    (an empty vector, a threshold of 1.0) cannot approve: an approval needs every rule
    judged and passed, a known buyer with a feature vector of the snapshot's length, a finite
    score in [0, 1] at or below a threshold in (0, policy.max_premium_threshold].

    Args:
        judged: Each rule's result by name (`REQUIRED_RULES`).
        buyer: The buyer record the decision used.
        score: The score it used.
        threshold: The threshold it used.
        feature_count: The snapshot's vector length.
        policy: The policy in force.
    """
    required = REQUIRED_RULES + (("within_loss_budget",) if policy.loss_budget.active else ())
    missing = [name for name in required if name not in judged]
    if missing:
        return f"not every rule was judged ({', '.join(missing)})"
    if any(failure is not None for failure in judged.values()):
        return "a rule failed"
    if buyer is None or not math.isfinite(buyer.registered_at):
        return "buyer is unknown to the online store"
    if feature_count <= 0 or len(buyer.features) != feature_count:
        return str(_no_vector(len(buyer.features), feature_count).message)
    if score is None or not math.isfinite(score) or not 0.0 <= score <= 1.0:
        return "buyer score is unavailable"
    cap = policy.max_premium_threshold
    if threshold is None or not math.isfinite(threshold) or not 0.0 < threshold <= cap:
        return f"the model's premium threshold {threshold} is outside (0, {cap}]"
    if score > threshold:
        return "buyer score is above the premium threshold"
    return None
