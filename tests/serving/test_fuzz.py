"""No input makes the decision API answer 5xx, and nothing malformed is approved.

Property tests through the real app: a valid request with one or two fields replaced by a
plausible value or any JSON value (or removed), any JSON document, and any bytes, to the
single and the batch route; then the admin and lookup routes with any id and any body.
"""

from __future__ import annotations

import itertools
import json
from decimal import Decimal, InvalidOperation
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.policy import category_key, load_policy
from tests.serving.conftest import ADMIN, DECIDER, Clock, body

URL = "/v1/refund-decisions"
EXCLUDED = load_policy().excluded_categories
FIELDS = ["refund_id", "requested_at", "kind", "order"]
ORDER_FIELDS = list(body()["order"])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["", "299.99", "300.00", "1e2", "-1", "0.001", "NaN", "paid_unshipped"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
# Values a field could plausibly hold, valid or nearly so, so that many requests get past
# validation and the rules decide.
PLAUSIBLE = {
    "refund_id": ["R", "r" * 64, "r" * 65, "", " ", "退款-1"],
    "requested_at": ["2025-06-15T02:00:00Z", "2025-06-15T10:00:00+08:00", "2025-06-15", "x"],
    "kind": ["refund_only", "return_and_refund", "REFUND_ONLY", ""],
    "order_id": ["O1", "", "订单"],
    "buyer_id": ["B_GOOD", "B_REVOKED", "B_UNKNOWN", "B_FEW", "B_YOUNG", "B_MIN", ""],
    "shop_id": ["S_OK", "S_LATE", "S_UNKNOWN", ""],
    "category": ["apparel", "game_top_up", "Game_Top_Up", " gift_cards", "", "custom_print"],
    "is_virtual": [True, False, 0, 1, "false", None],
    "is_custom": [True, False, 0, 1, "true", None],
    "paid_amount": ["0.01", "0.00", "299.99", "300.00", "300.01", "1e2", "12", "12.5", "-1.00"]
    + [12, 299.99, 300, "1,000.00", " 12.00"],
    "currency": ["CNY", "cny", "USD", ""],
    "status": ["paid_unshipped", "shipped", "unpaid", "PAID_UNSHIPPED", ""],
    "tracking_number": [None, "", "SF1", " "],
}
MISSING = object()
ids = itertools.count()

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def mutated(draw: st.DrawFn) -> dict:
    """A request that passes every rule, with one or two fields replaced or removed."""
    payload = body(f"FUZZ-{next(ids)}")
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.booleans()):
            target, key = payload, draw(st.sampled_from(FIELDS))
        else:
            target, key = payload.get("order"), draw(st.sampled_from(ORDER_FIELDS))
            if not isinstance(target, dict):  # the first change replaced the order
                continue
        value = draw(st.sampled_from(PLAUSIBLE.get(key, [None])) | json_values | st.just(MISSING))
        if value is MISSING:
            target.pop(key, None)
        else:
            target[key] = value
    return payload


def _below_limit(amount: object) -> bool:
    try:
        return Decimal(str(amount)) < Decimal("300")
    except InvalidOperation:
        return False


def _check_answer(payload: object, status: int, answer: object) -> None:
    assert status in (200, 409, 422), (status, payload, answer)
    if status != 200:
        return
    assert isinstance(answer, dict) and answer["decision"] in ("auto_approve", "manual_review")
    if answer["decision"] == "auto_approve":
        # Approved: the request as sent met every hard rule on the request itself (the
        # buyer and shop rules read the store; test_decision_routes.py's table covers them).
        assert isinstance(payload, dict)
        order = payload["order"]
        assert payload["kind"] == "refund_only"
        assert order["status"] == "paid_unshipped" and not order.get("tracking_number")
        assert order["is_virtual"] is False and order["is_custom"] is False
        assert category_key(order["category"]) not in EXCLUDED
        assert order["currency"] == "CNY"
        assert _below_limit(order["paid_amount"])


@pytest.mark.slow
@FUZZ
@given(payload=mutated())
def test_changed_fields_are_answered_or_refused_never_5xx(
    client: TestClient, clock: Clock, payload: dict
) -> None:
    clock.now += 31 * 86_400  # past the velocity windows, so approvals stay possible
    response = client.post(URL, content=json.dumps(payload), headers=DECIDER)
    _check_answer(payload, response.status_code, response.json())


@pytest.mark.slow
@FUZZ
@given(document=json_values)
def test_any_json_document_is_refused_with_422(client: TestClient, document: object) -> None:
    response = client.post(URL, content=json.dumps(document), headers=DECIDER)
    assert response.status_code == 422, (document, response.text)
    response = client.post(f"{URL}/batch", content=json.dumps(document), headers=DECIDER)
    items = document.get("requests") if isinstance(document, dict) else None
    if isinstance(items, list) and 1 <= len(items) and set(document) == {"requests"}:
        # Shaped like a batch: answered item by item, and no random item is a valid request.
        assert response.status_code == 200, (document, response.text)
        assert {r["status"] for r in response.json()["results"]} == {422}
    else:
        assert response.status_code == 422, (document, response.text)


@pytest.mark.slow
@FUZZ
@given(raw=st.binary(max_size=300))
def test_any_bytes_are_refused_with_422(client: TestClient, raw: bytes) -> None:
    for path in (URL, f"{URL}/batch"):
        response = client.post(path, content=raw, headers=DECIDER)
        assert response.status_code == 422, (raw, response.text)


@pytest.mark.slow
@FUZZ
@given(items=st.lists(mutated(), min_size=1, max_size=5))
def test_a_batch_of_changed_requests_gets_an_answer_per_item(
    client: TestClient, clock: Clock, items: list[dict]
) -> None:
    clock.now += 31 * 86_400
    response = client.post(f"{URL}/batch", content=json.dumps({"requests": items}), headers=DECIDER)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    for item, result in zip(items, results, strict=True):
        _check_answer(item, result["status"], result.get("decision", result.get("error")))


ids_in_paths = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/?#"), min_size=1, max_size=80
)


@pytest.mark.slow
@FUZZ
@given(
    identifier=ids_in_paths,
    change=json_values
    | st.fixed_dictionaries({"reason": st.text(max_size=600)})
    | st.fixed_dictionaries({"eligible": st.booleans(), "reason": st.text(max_size=600)}),
)
def test_admin_and_lookup_routes_never_answer_5xx(
    client: TestClient, identifier: str, change: object
) -> None:
    quoted = quote(identifier, safe="")
    content = json.dumps(change)
    calls = [
        ("get", f"{URL}/{quoted}", DECIDER, None),
        ("get", f"/v1/admin/buyers/{quoted}", ADMIN, None),
        ("get", f"/v1/admin/shops/{quoted}", ADMIN, None),
        ("post", f"/v1/admin/buyers/{quoted}/revoke", ADMIN, content),
        ("post", f"/v1/admin/buyers/{quoted}/restore", ADMIN, content),
        ("put", f"/v1/admin/shops/{quoted}/eligibility", ADMIN, content),
    ]
    for method, path, headers, data in calls:
        response = client.request(method, path, content=data, headers=headers)
        assert response.status_code < 500, (method, path, data, response.text)
