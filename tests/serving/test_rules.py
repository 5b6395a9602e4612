"""POLICY.md's hard rules one by one, as tables, boundaries included; and the money parsing.

Their combination into a decision: test_decision.py.
"""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from serving import rules
from serving.policy import MinHistory, Velocity, load_policy
from serving.rules import Reason
from serving.schemas import Order
from tests.serving.conftest import body

POLICY = load_policy()
LIMIT = POLICY.amount_limit_fen


def code(failure: rules.Failure | None) -> Reason | None:
    return None if failure is None else failure.code


def test_packaged_policy_has_the_300_cny_limit() -> None:
    assert POLICY.amount_limit_fen == 30_000
    assert POLICY.version


@pytest.mark.parametrize(
    ("paid_amount", "fen", "expected"),
    [
        ("0.01", 1, None),
        ("299.99", 29_999, None),
        ("300", 30_000, Reason.AMOUNT_NOT_BELOW_LIMIT),
        ("300.00", 30_000, Reason.AMOUNT_NOT_BELOW_LIMIT),
        ("300.01", 30_001, Reason.AMOUNT_NOT_BELOW_LIMIT),
        ("299.9", 29_990, None),
    ],
)
def test_amount_strictly_below_300_cny(paid_amount: str, fen: int, expected: Reason | None) -> None:
    order = Order.model_validate(body(paid_amount=paid_amount)["order"])
    assert order.paid_amount == fen
    assert code(rules.amount_below_limit(order.paid_amount, LIMIT)) == expected


@pytest.mark.parametrize(
    "paid_amount", ["-1.00", "1.234", "0.00", "0", "1e3", "01.00", "", " 1.00", "abc", 299.99, 300]
)
def test_amounts_that_are_not_two_decimal_strings_are_refused(paid_amount: object) -> None:
    with pytest.raises(ValidationError, match="paid_amount"):
        Order.model_validate(body(paid_amount=paid_amount)["order"])


@pytest.mark.parametrize(
    ("status", "tracking", "expected"),
    [
        ("paid_unshipped", None, None),
        ("paid_unshipped", "", None),
        ("paid_unshipped", "SF123", Reason.ORDER_SHIPPED),
        ("unpaid", None, Reason.ORDER_SHIPPED),
        ("shipped", None, Reason.ORDER_SHIPPED),
        ("delivered", None, Reason.ORDER_SHIPPED),
        ("completed", None, Reason.ORDER_SHIPPED),
        ("cancelled", None, Reason.ORDER_SHIPPED),
    ],
)
def test_only_paid_unshipped_without_tracking(
    status: str, tracking: str | None, expected: Reason | None
) -> None:
    assert code(rules.order_unshipped(status, tracking)) == expected


@pytest.mark.parametrize(
    ("is_virtual", "is_custom", "category", "expected"),
    [
        (False, False, "apparel", None),
        (True, False, "apparel", Reason.CATEGORY_EXCLUDED),
        (False, True, "apparel", Reason.CATEGORY_EXCLUDED),
        (False, False, "gift_cards", Reason.CATEGORY_EXCLUDED),
        (False, False, "virtual_goods", Reason.CATEGORY_EXCLUDED),
        (False, False, "Gift_Cards", Reason.CATEGORY_EXCLUDED),  # case and spaces do not
        (False, False, " game_top_up ", Reason.CATEGORY_EXCLUDED),  # get past the list
        (False, False, "GAME_TOP_UP", Reason.CATEGORY_EXCLUDED),
        (
            False,
            False,
            "\uff27\uff29\uff26\uff34_\uff23\uff21\uff32\uff24\uff33",
            Reason.CATEGORY_EXCLUDED,
        ),  # full width
        (False, False, "game top up", Reason.CATEGORY_NOT_COVERED),  # not guessed at
        (False, False, "\u0441ustom", Reason.CATEGORY_NOT_COVERED),  # a Cyrillic с
        (False, False, "custom-made", Reason.CATEGORY_NOT_COVERED),
        (False, False, " Apparel", None),
    ],
)
def test_virtual_custom_and_excluded_categories(
    is_virtual: bool, is_custom: bool, category: str, expected: Reason | None
) -> None:
    failure = rules.goods_not_excluded(
        is_virtual, is_custom, category, POLICY.excluded_categories, POLICY.allowed_categories
    )
    assert code(failure) == expected


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("refund_only", None), ("return_and_refund", Reason.KIND_NOT_REFUND_ONLY)],
)
def test_refund_only(kind: str, expected: Reason | None) -> None:
    assert code(rules.refund_only(kind)) == expected


@pytest.mark.parametrize(
    ("eligible", "expected"),
    [(True, None), (False, Reason.SHOP_NOT_ELIGIBLE), (None, Reason.SHOP_NOT_ELIGIBLE)],
)
def test_shop_eligible(eligible: bool | None, expected: Reason | None) -> None:
    assert code(rules.shop_eligible(eligible, "late shipments")) == expected


@pytest.mark.parametrize(("revoked", "expected"), [(False, None), (True, Reason.BUYER_REVOKED)])
def test_buyer_not_revoked(revoked: bool, expected: Reason | None) -> None:
    assert code(rules.buyer_not_revoked(revoked, "abuse")) == expected


MINIMUM = MinHistory(orders=3, account_age_days=30)


@pytest.mark.parametrize(
    ("orders", "age", "expected"),
    [
        (None, None, Reason.BUYER_NO_HISTORY),  # unknown buyer
        (3, 30.0, None),
        (2, 400.0, Reason.BUYER_NO_HISTORY),
        (10, 29.99, Reason.BUYER_NO_HISTORY),
        (0, 0.0, Reason.BUYER_NO_HISTORY),
    ],
)
def test_buyer_minimum_history(orders: int | None, age: float | None, expected: Reason | None):
    assert code(rules.buyer_has_history(orders, age, MINIMUM)) == expected


LIMITS = Velocity(max_auto_approvals_per_day=2, max_auto_approvals_per_30_days=6)


@pytest.mark.parametrize(
    ("last_day", "last_30_days", "expected"),
    [
        (0, 0, None),
        (1, 5, None),  # one below each limit: this approval reaches the limit exactly
        (2, 2, Reason.VELOCITY_LIMIT),
        (0, 6, Reason.VELOCITY_LIMIT),
        (3, 9, Reason.VELOCITY_LIMIT),
    ],
)
def test_velocity_edges(last_day: int, last_30_days: int, expected: Reason | None) -> None:
    assert code(rules.within_velocity(last_day, last_30_days, LIMITS)) == expected


@pytest.mark.parametrize(
    ("score", "threshold", "expected"),
    [
        (0.01, 0.05, None),
        (0.05, 0.05, None),  # at the threshold is premium
        (0.0500001, 0.05, Reason.BUYER_NOT_PREMIUM),
        (None, 0.05, Reason.SCORE_UNAVAILABLE),
        (math.nan, 0.05, Reason.SCORE_UNAVAILABLE),
        (0.01, None, Reason.SCORE_UNAVAILABLE),
    ],
)
def test_buyer_premium(score: float | None, threshold: float | None, expected: Reason | None):
    assert code(rules.buyer_premium(score, threshold)) == expected


def test_approval_note_is_policy_sentence_word_for_word() -> None:
    assert rules.APPROVAL_NOTE == (
        "该用户为平台优质用户且订单满足极速退款条件,平台已自动审核通过卖家发货前仅退款申请"
    )
