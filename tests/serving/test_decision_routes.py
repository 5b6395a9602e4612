"""The two decision routes over HTTP: the answer, the rules on what the store and the champion know,
idempotency, tokens and the 422s of a single request."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from serving.rules import APPROVAL_NOTE
from tests.serving.conftest import (
    ADMIN,
    DECIDER,
    THRESHOLD,
    URL,
    Clock,
    body,
    codes,
    decide,
    with_order,
)


def test_a_premium_buyer_is_auto_approved_with_the_policy_note(client: TestClient) -> None:
    answer = decide(client, body())
    assert answer["decision"] == "auto_approve"
    assert answer["reasons"] == []
    assert answer["note"] == APPROVAL_NOTE
    assert answer["buyer"] == {"premium": True, "score": 0.01, "threshold": THRESHOLD}
    assert answer["model"] == {"name": "buyer-quality", "version": "7"}
    assert answer["policy_version"] == "2025-06-01.1"
    assert answer["replayed"] is False
    assert answer["decided_at"].endswith("Z")


# The rules on the request alone, every boundary and combination: test_decision.py, on the
# pure function. Here: what the service gathers for it (the store's buyer and shop, the
# champion's score and threshold) reaches it, and the answer carries its reasons.
@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ({"paid_amount": "299.99"}, []),
        ({"paid_amount": "300.00"}, ["AMOUNT_NOT_BELOW_LIMIT"]),
        ({"shop_id": "S_LATE"}, ["SHOP_NOT_ELIGIBLE"]),
        ({"shop_id": "S_UNKNOWN"}, ["SHOP_NOT_ELIGIBLE"]),
        ({"buyer_id": "B_REVOKED"}, ["BUYER_REVOKED"]),
        ({"buyer_id": "B_UNKNOWN"}, ["BUYER_NO_HISTORY"]),
        ({"buyer_id": "B_FEW"}, ["BUYER_NO_HISTORY"]),
        ({"buyer_id": "B_YOUNG"}, ["BUYER_NO_HISTORY"]),
        ({"buyer_id": "B_MIN"}, []),
        ({"buyer_id": "B_EDGE"}, []),
        ({"buyer_id": "B_BAD"}, ["BUYER_NOT_PREMIUM"]),
        ({"buyer_id": "B_NAN"}, ["SCORE_UNAVAILABLE"]),
        (
            {
                "paid_amount": "300.00",
                "status": "shipped",
                "is_virtual": True,
                "kind": "return_and_refund",
                "shop_id": "S_LATE",
                "buyer_id": "B_BAD",
            },
            [
                "ORDER_SHIPPED",
                "AMOUNT_NOT_BELOW_LIMIT",
                "CATEGORY_EXCLUDED",
                "KIND_NOT_REFUND_ONLY",
                "SHOP_NOT_ELIGIBLE",
                "BUYER_NOT_PREMIUM",
            ],
        ),
    ],
)
def test_the_rules_judge_what_the_store_and_the_champion_know(
    client: TestClient, order: dict, expected: list[str]
) -> None:
    answer = decide(client, body(**order))
    assert codes(answer) == expected
    assert answer["decision"] == ("auto_approve" if not expected else "manual_review")
    assert ("note" in answer) == (not expected)


def test_same_request_again_is_replayed_and_a_different_one_is_a_conflict(
    client: TestClient, clock: Clock
) -> None:
    first = decide(client, body("RF-IDEM"))
    clock.now += 3600
    again = decide(client, body("RF-IDEM"))
    assert again == {**first, "replayed": True}
    # the same amount written differently is the same request
    resent = body("RF-IDEM")
    resent["order"]["paid_amount"] = "299.99"
    resent["requested_at"] = "2025-06-15T10:00:00+08:00"  # the same instant
    assert decide(client, resent)["replayed"] is True
    conflict = client.post(URL, json=body("RF-IDEM", paid_amount="10.00"), headers=DECIDER)
    assert conflict.status_code == 409
    assert "RF-IDEM" in conflict.json()["detail"]
    stored = client.get(f"{URL}/RF-IDEM", headers=DECIDER)
    assert stored.status_code == 200 and stored.json() == first
    assert client.get(f"{URL}/RF-NONE", headers=DECIDER).status_code == 404


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong-token"}, 401),
        ({"Authorization": "Basic ZGV2OmRldg=="}, 401),
        (DECIDER, 200),
        (ADMIN, 200),
    ],
)
def test_decisions_need_a_known_token(client: TestClient, headers: dict, status: int) -> None:
    response = client.post(URL, json=body(), headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (with_order(paid_amount="-1.00"), "paid_amount"),
        (with_order(paid_amount="12.345"), "paid_amount"),
        (with_order(paid_amount=12.5), "paid_amount"),
        (with_order(currency="USD"), "currency"),
        (with_order(status="lost"), "status"),
        (with_order(is_virtual="maybe"), "is_virtual"),
        # Booleans are JSON booleans: 0 or "false" is a caller's bug, not a "no" to approve on.
        (with_order(is_virtual=0), "is_virtual"),
        (with_order(is_custom="false"), "is_custom"),
        (with_order(surprise=1), "surprise"),
        ({**body(), "kind": "refund"}, "kind"),
        ({**body(), "requested_at": "2025-06-15T02:00:00"}, "requested_at"),
        ({**body(), "requested_at": 1_749_952_800}, "requested_at"),  # not read as epoch
        ({**body(), "requested_at": "1749952800"}, "requested_at"),  # nor as a string
        # A category that would look like an excluded one: invisible or combining characters.
        (with_order(category="gift\u200b_cards"), "category"),  # zero-width space
        (with_order(category="gift_cards\x00"), "category"),  # a control character
        (with_order(category="gift_cards\ufe0f"), "category"),  # a variation selector
        (with_order(category="gift\u034f_cards"), "category"),  # combining grapheme joiner
        (with_order(category="gift_cards\u3164"), "category"),  # a Hangul filler
        # Valid offsets whose UTC instant is outside Python's dates: 422, not a 503.
        ({**body(), "requested_at": "0001-01-01T00:00:00+01:00"}, "requested_at"),
        ({**body(), "requested_at": "9999-12-31T23:59:59-01:00"}, "requested_at"),
        ({**body(), "refund_id": "R" * 200_000}, "refund_id"),
        ({k: v for k, v in body().items() if k != "order"}, "order"),
    ],
)
def test_malformed_bodies_are_422_naming_the_field(
    client: TestClient, payload: dict, field: str
) -> None:
    response = client.post(URL, json=payload, headers=DECIDER)
    assert response.status_code == 422
    assert any(field in err["loc"] for err in response.json()["detail"])
    assert len(response.content) < 2_000  # the offending input is not echoed back


def test_a_key_repeated_in_one_object_is_422_and_nothing_is_decided(client: TestClient) -> None:
    # Parsers disagree on which copy wins; the approval must not depend on which one.
    headers = {**DECIDER, "content-type": "application/json"}
    text = json.dumps(body("DUP-1"))
    twice = text.replace('"is_virtual": false', '"is_virtual": true, "is_virtual": false')
    assert twice != text
    response = client.post(URL, content=twice, headers=headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "is_virtual"]
    batch = '{"requests": [' + json.dumps(body("DUP-2")) + ", " + twice + "]}"
    response = client.post(f"{URL}/batch", content=batch, headers=headers)
    assert response.status_code == 422
    for refund_id in ("DUP-1", "DUP-2"):
        assert client.get(f"{URL}/{refund_id}", headers=DECIDER).status_code == 404
    assert client.post(URL, content=text, headers=headers).status_code == 200


def test_the_decision_routes_are_documented(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    # A batch answers a reused refund_id in its item (409 there), never as the whole answer.
    for path, conflict in ((URL, {"409"}), (f"{URL}/batch", set())):
        post = paths[path]["post"]
        assert "application/json" in post["requestBody"]["content"]
        assert {"200", "401", "413", "422", "503"} | conflict == set(post["responses"])
