"""The decision as a pure function: every rule combined, reasons in order, premium, note.

No HTTP, no database, no champion: the inputs are plain records and numbers, as a backtest
would give them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from serving.decision import REQUIRED_RULES, Decision, approval_problem, decide
from serving.policy import LossBudget, load_policy
from serving.records import BuyerRecord, ShopRecord
from serving.rules import APPROVAL_NOTE, AUTO_APPROVE, MANUAL_REVIEW, Reason
from serving.schemas import DecisionRequest
from tests.serving.conftest import COLUMNS, DAY, NOW, body

POLICY = load_policy()  # 300 CNY, 3 orders and 30 days of history, 2 a day and 6 in 30 days
# Loss budget caps (fen of P(bad) x paid amount): 100 CNY a shop a day, 50 CNY a buyer a month.
CAPPED = POLICY.model_copy(
    update={"loss_budget": LossBudget(max_per_shop_day_fen=10_000, max_per_buyer_30_days_fen=5_000)}
)
THRESHOLD = 0.05


def buyer(
    orders: int = 10, age_days: float = 400.0, revoked: str = "", known: bool = True
) -> BuyerRecord:
    """A buyer record as the store gives it; `known=False`: one only an admin revoked."""
    if not known:
        return BuyerRecord("B1", math.nan, 0, np.empty(0), True, revoked)
    features = np.array([0.01, float(orders)])
    return BuyerRecord("B1", NOW - age_days * DAY, orders, features, bool(revoked), revoked)


ELIGIBLE = ShopRecord("S1", True, "", None)
LATE = ShopRecord("S1", False, "late shipment rate above 15%", None)

_UNSET = object()


def judge(
    order: dict | None = None,
    kind: str = "refund_only",
    buyer_record: BuyerRecord | None | object = _UNSET,
    shop: ShopRecord | None = ELIGIBLE,
    score: float | None = 0.01,
    threshold: float | None = THRESHOLD,
    approvals: tuple[int, int] = (0, 0),
    unavailable: str | None = None,
    policy: object = POLICY,
    exposure: tuple[float, float] = (0.0, 0.0),
) -> Decision:
    """`decide` on a request that passes every rule unless told otherwise."""
    request = DecisionRequest.model_validate(body(kind=kind, **(order or {})))
    record = buyer() if buyer_record is _UNSET else buyer_record
    return decide(
        request,
        record,  # type: ignore[arg-type]
        shop,
        score,
        threshold,
        approvals,
        policy,  # type: ignore[arg-type]
        NOW,
        feature_count=len(COLUMNS),
        unavailable=unavailable,
        exposure=exposure,
    )


def codes(decision: Decision) -> list[str]:
    return [failure.code.value for failure in decision.reasons]


EVERYTHING_FAILS = {
    "order": {"status": "shipped", "paid_amount": "300.00", "is_virtual": True},
    "kind": "return_and_refund",
    "shop": LATE,
    "buyer_record": buyer(orders=2, revoked="abuse confirmed on refund R9"),
    "score": 0.9,
    "approvals": (2, 6),
}

# (inputs to `judge`, the reason codes expected, in the order of the answer)
TABLE: list[tuple[str, dict, list[str]]] = [
    ("every rule passes", {}, []),
    # POLICY.md rule 2: strictly below 300 CNY.
    ("0.01 CNY", {"order": {"paid_amount": "0.01"}}, []),
    ("299.99 CNY", {"order": {"paid_amount": "299.99"}}, []),
    ("300.00 CNY", {"order": {"paid_amount": "300.00"}}, ["AMOUNT_NOT_BELOW_LIMIT"]),
    ("300 CNY", {"order": {"paid_amount": "300"}}, ["AMOUNT_NOT_BELOW_LIMIT"]),
    ("300.01 CNY", {"order": {"paid_amount": "300.01"}}, ["AMOUNT_NOT_BELOW_LIMIT"]),
    # POLICY.md rule 4: paid, no tracking number.
    *[
        (f"status {status}", {"order": {"status": status}}, ["ORDER_SHIPPED"])
        for status in ("unpaid", "shipped", "delivered", "completed", "cancelled")
    ],
    ("a tracking number", {"order": {"tracking_number": "SF1234567"}}, ["ORDER_SHIPPED"]),
    ("an empty tracking number", {"order": {"tracking_number": ""}}, []),
    # POLICY.md rule 3: neither virtual nor custom-made, by flag or by category.
    ("virtual", {"order": {"is_virtual": True}}, ["CATEGORY_EXCLUDED"]),
    ("custom-made", {"order": {"is_custom": True}}, ["CATEGORY_EXCLUDED"]),
    ("an excluded category", {"order": {"category": "game_top_up"}}, ["CATEGORY_EXCLUDED"]),
    ("an excluded category cased", {"order": {"category": "Gift_Cards"}}, ["CATEGORY_EXCLUDED"]),
    (
        "virtual and custom: one reason",
        {"order": {"is_virtual": True, "is_custom": True}},
        ["CATEGORY_EXCLUDED"],
    ),
    # The closed list: a category the policy does not name, or one that only looks like it.
    ("an unknown category", {"order": {"category": "custom-made"}}, ["CATEGORY_NOT_COVERED"]),
    ("a look-alike", {"order": {"category": "\u0441ustom"}}, ["CATEGORY_NOT_COVERED"]),
    ("a return", {"kind": "return_and_refund"}, ["KIND_NOT_REFUND_ONLY"]),
    # The platform's choices: shops and revoked buyers.
    ("an ineligible shop", {"shop": LATE}, ["SHOP_NOT_ELIGIBLE"]),
    ("an unknown shop", {"shop": None}, ["SHOP_NOT_ELIGIBLE"]),
    ("a revoked buyer", {"buyer_record": buyer(revoked="abuse")}, ["BUYER_REVOKED"]),
    # Minimum history: 3 orders, 30 days; an unknown buyer has no history, not no score.
    ("an unknown buyer", {"buyer_record": None, "score": None}, ["BUYER_NO_HISTORY"]),
    (
        "an unknown buyer an admin revoked",
        {"buyer_record": buyer(revoked="ring member", known=False), "score": None},
        ["BUYER_REVOKED", "BUYER_NO_HISTORY"],
    ),
    ("2 orders", {"buyer_record": buyer(orders=2)}, ["BUYER_NO_HISTORY"]),
    ("3 orders", {"buyer_record": buyer(orders=3)}, []),
    ("29.99 days old", {"buyer_record": buyer(age_days=29.99)}, ["BUYER_NO_HISTORY"]),
    ("30 days old", {"buyer_record": buyer(age_days=30.0)}, []),
    # POLICY.md rule 1: premium iff score <= threshold.
    ("score at the threshold", {"score": THRESHOLD}, []),
    ("score above the threshold", {"score": 0.0500001}, ["BUYER_NOT_PREMIUM"]),
    ("no score", {"score": None}, ["SCORE_UNAVAILABLE"]),
    ("a NaN score", {"score": math.nan}, ["SCORE_UNAVAILABLE"]),
    ("no champion", {"score": None, "threshold": None}, ["SCORE_UNAVAILABLE"]),
    # Velocity: this approval may reach a limit, not pass it.
    ("one below both limits", {"approvals": (1, 5)}, []),
    ("the daily limit reached", {"approvals": (2, 2)}, ["VELOCITY_LIMIT"]),
    ("the 30-day limit reached", {"approvals": (0, 6)}, ["VELOCITY_LIMIT"]),
    # The loss budget: this expected loss (0.01 x 299.99 CNY = 299.99 fen) may reach a cap.
    ("no budget in the policy", {"exposure": (1e9, 1e9)}, []),
    ("within both caps", {"policy": CAPPED, "exposure": (9_700.0, 4_700.0)}, []),
    (
        "the shop's day cap passed",
        {"policy": CAPPED, "exposure": (9_701.0, 0.0)},
        ["LOSS_BUDGET_EXCEEDED"],
    ),
    (
        "the buyer's 30-day cap passed",
        {"policy": CAPPED, "exposure": (0.0, 4_701.0)},
        ["LOSS_BUDGET_EXCEEDED"],
    ),
    (
        "over the budget and not premium",
        {"policy": CAPPED, "score": 0.9, "exposure": (9_999.0, 0.0)},
        ["BUYER_NOT_PREMIUM", "LOSS_BUDGET_EXCEEDED"],
    ),
    # The store cannot be read: its rules are not judged, one reason says why.
    (
        "the store down",
        {"buyer_record": None, "shop": None, "score": None, "unavailable": "store down"},
        ["SCORE_UNAVAILABLE"],
    ),
    (
        "the store down, and more",
        {
            "order": {"paid_amount": "300.00"},
            "buyer_record": None,
            "shop": None,
            "score": None,
            "approvals": (2, 0),
            "unavailable": "store down",
        },
        ["AMOUNT_NOT_BELOW_LIMIT", "VELOCITY_LIMIT", "SCORE_UNAVAILABLE"],
    ),
    # Several at once, in the order `Reason` declares, whatever order they are checked in.
    (
        "everything fails",
        EVERYTHING_FAILS,
        [
            "ORDER_SHIPPED",
            "AMOUNT_NOT_BELOW_LIMIT",
            "CATEGORY_EXCLUDED",
            "KIND_NOT_REFUND_ONLY",
            "SHOP_NOT_ELIGIBLE",
            "BUYER_REVOKED",
            "BUYER_NO_HISTORY",
            "BUYER_NOT_PREMIUM",
            "VELOCITY_LIMIT",
        ],
    ),
    # The premium rule is checked before velocity, but its SCORE_UNAVAILABLE is listed after.
    (
        "no score, over the limit",
        {"score": None, "approvals": (2, 0)},
        ["VELOCITY_LIMIT", "SCORE_UNAVAILABLE"],
    ),
    (
        "a return from a young account",
        {"kind": "return_and_refund", "buyer_record": buyer(age_days=3)},
        ["KIND_NOT_REFUND_ONLY", "BUYER_NO_HISTORY"],
    ),
]


@pytest.mark.parametrize(
    ("inputs", "expected"), [case[1:] for case in TABLE], ids=[case[0] for case in TABLE]
)
def test_every_failed_rule_is_listed_in_order_and_the_note_only_on_approval(
    inputs: dict, expected: list[str]
) -> None:
    decision = judge(**inputs)
    assert codes(decision) == expected
    assert decision.decision == (AUTO_APPROVE if not expected else MANUAL_REVIEW)
    assert decision.note == (APPROVAL_NOTE if not expected else None)


def test_the_table_covers_every_reason_code() -> None:
    covered = {code for _, _, expected in TABLE for code in expected}
    assert covered == {reason.value for reason in Reason}


@pytest.mark.parametrize(
    ("inputs", "premium"),
    [
        ({}, True),
        ({"score": THRESHOLD}, True),
        ({"score": 0.0500001}, False),
        ({"score": None}, False),
        ({"threshold": None}, False),
        ({"order": {"paid_amount": "300.00"}}, True),  # premium, refused for another reason
        ({"buyer_record": None, "score": None}, False),
    ],
)
def test_the_premium_flag_is_the_premium_rule_passing(inputs: dict, premium: bool) -> None:
    assert judge(**inputs).premium is premium


def test_the_messages_say_what_failed() -> None:
    decision = judge(order={"paid_amount": "300.00"}, shop=LATE, unavailable=None)
    assert [failure.message for failure in decision.reasons] == [
        "paid amount 300.00 CNY is not below 300.00 CNY",
        "shop is not eligible: late shipment rate above 15%",
    ]
    down = judge(buyer_record=None, shop=None, score=None, unavailable="the store is down")
    assert [failure.message for failure in down.reasons] == ["the store is down"]


def test_the_account_age_is_taken_at_now() -> None:
    request = DecisionRequest.model_validate(body())
    young = buyer(age_days=29.5)
    args = (request, young, ELIGIBLE, 0.01, THRESHOLD, (0, 0), POLICY)
    assert codes(decide(*args, NOW, feature_count=2)) == ["BUYER_NO_HISTORY"]
    assert codes(decide(*args, NOW + DAY, feature_count=2)) == []


_RANK = {reason: i for i, reason in enumerate(Reason)}


@given(
    paid=st.sampled_from(["1.00", "299.99", "300.00"]),
    status=st.sampled_from(["paid_unshipped", "shipped"]),
    kind=st.sampled_from(["refund_only", "return_and_refund"]),
    shop=st.sampled_from([ELIGIBLE, LATE, None]),
    record=st.sampled_from([buyer(), buyer(orders=1), buyer(revoked="x"), None]),
    score=st.one_of(st.none(), st.floats(0, 1)),
    approvals=st.tuples(st.integers(0, 3), st.integers(0, 8)),
    unavailable=st.sampled_from([None, "store down"]),
)
def test_approved_exactly_when_no_rule_failed_and_reasons_are_always_in_order(
    paid: str,
    status: str,
    kind: str,
    shop: ShopRecord | None,
    record: BuyerRecord | None,
    score: float | None,
    approvals: tuple[int, int],
    unavailable: str | None,
) -> None:
    decision = judge(
        {"paid_amount": paid, "status": status},
        kind,
        record,
        shop,
        score,
        THRESHOLD,
        approvals,
        unavailable,
    )
    ranks = [_RANK[failure.code] for failure in decision.reasons]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    approved = decision.decision == AUTO_APPROVE
    assert approved == (not decision.reasons) == (decision.note == APPROVAL_NOTE)
    assert not approved or decision.premium


# The fail-open path of the security review: a known buyer (a real registration date, enough
# orders) whose stored vector is empty or of another length was approved with no score.
@pytest.mark.parametrize("vector", [np.empty(0), np.array([0.01]), np.array([0.01, 3.0, 1.0])])
def test_a_known_buyer_without_a_full_feature_vector_is_never_approved(vector) -> None:
    hollow = buyer()._replace(features=vector)
    decision = judge(buyer_record=hollow, score=None)
    assert decision.decision == MANUAL_REVIEW
    assert codes(decision) == ["SCORE_UNAVAILABLE"]
    assert decision.premium is False
    # Even with a score handed in (a caller that scored something else), no approval.
    assert codes(judge(buyer_record=hollow, score=0.01)) == ["SCORE_UNAVAILABLE"]


@pytest.mark.parametrize("threshold", [1.0, 0.5000001, 0.0, -0.1, math.inf, math.nan])
def test_a_threshold_outside_the_policy_range_approves_nobody(threshold: float) -> None:
    decision = judge(score=0.0, threshold=threshold)
    assert decision.decision == MANUAL_REVIEW
    assert codes(decision) in (["SCORE_UNAVAILABLE"], ["BUYER_NOT_PREMIUM"])  # -0.1: above it
    assert judge(threshold=POLICY.max_premium_threshold).decision == AUTO_APPROVE


def _passing() -> dict:
    return dict.fromkeys(REQUIRED_RULES)


def test_the_invariant_on_its_own() -> None:
    ok = (buyer(), 0.01, THRESHOLD, 2, POLICY)
    assert approval_problem(_passing(), *ok) is None
    for name in REQUIRED_RULES:  # a rule skipped
        skipped = {k: v for k, v in _passing().items() if k != name}
        assert name in (approval_problem(skipped, *ok) or "")
    assert "within_loss_budget" in (approval_problem(_passing(), *ok[:4], CAPPED) or "")
    broken = {
        "unknown buyer": (None, 0.01, THRESHOLD, 2, POLICY),
        "no registration": (buyer(known=False), 0.01, THRESHOLD, 2, POLICY),
        "empty vector": (buyer()._replace(features=np.empty(0)), 0.01, THRESHOLD, 2, POLICY),
        "short vector": (buyer(), 0.01, THRESHOLD, 3, POLICY),
        "no score": (buyer(), None, THRESHOLD, 2, POLICY),
        "NaN score": (buyer(), math.nan, THRESHOLD, 2, POLICY),
        "negative score": (buyer(), -0.5, THRESHOLD, 2, POLICY),
        "no threshold": (buyer(), 0.01, None, 2, POLICY),
        "threshold 1": (buyer(), 0.01, 1.0, 2, POLICY),
        "threshold 0": (buyer(), 0.0, 0.0, 2, POLICY),
        "above": (buyer(), 0.06, THRESHOLD, 2, POLICY),
    }
    for case, args in broken.items():
        assert approval_problem(_passing(), *args) is not None, case
