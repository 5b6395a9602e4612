"""The batch route: each item answered as it would have been alone, in order; a batch's 422s."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.serving.conftest import (
    DECIDER,
    URL,
    body,
    codes,
    decide,
)


def test_a_batch_item_that_is_not_an_object_is_its_own_422(client: TestClient) -> None:
    items = {"requests": [body("NO-0"), "not a request", 7, None]}
    response = client.post(f"{URL}/batch", json=items, headers=DECIDER)
    assert response.status_code == 200
    assert [r["status"] for r in response.json()["results"]] == [200, 422, 422, 422]


def test_a_batch_item_outside_utc_dates_is_its_own_422(client: TestClient) -> None:
    far = {**body("FAR-1"), "requested_at": "0001-01-01T00:00:00+01:00"}
    items = {"requests": [body("FAR-0"), far]}
    response = client.post(f"{URL}/batch", json=items, headers=DECIDER)
    assert response.status_code == 200
    assert [r["status"] for r in response.json()["results"]] == [200, 422]


def test_batch_answers_each_item_in_order(client: TestClient) -> None:
    bad = body("B-2")
    bad["order"]["paid_amount"] = "1.001"
    decide(client, body("B-3"))
    items = [
        body("B-0"),
        body("B-1", paid_amount="300.00", buyer_id="B_GOOD2"),
        bad,
        body("B-3", paid_amount="5"),
    ]
    response = client.post(f"{URL}/batch", json={"requests": items}, headers=DECIDER)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [200, 200, 422, 409]
    assert results[0]["decision"]["decision"] == "auto_approve"
    assert codes(results[1]["decision"]) == ["AMOUNT_NOT_BELOW_LIMIT"]
    assert any("paid_amount" in err["loc"] for err in results[2]["error"])


def test_a_batch_item_is_judged_alike_with_or_without_an_invalid_neighbour(
    client: TestClient,
) -> None:
    # All valid: the whole body is parsed in one go; one invalid: item by item. Same answers.
    bad = body("N-BAD")
    bad["order"]["is_virtual"] = "maybe"
    items = [body("N-0"), body("N-1", paid_amount="300.00", buyer_id="B_GOOD2")]
    alone = client.post(f"{URL}/batch", json={"requests": items}, headers=DECIDER).json()
    again = [body("N-0"), bad, body("N-1", paid_amount="300.00", buyer_id="B_GOOD2")]
    mixed = client.post(f"{URL}/batch", json={"requests": again}, headers=DECIDER).json()
    assert [r["status"] for r in alone["results"]] == [200, 200]
    assert [r["status"] for r in mixed["results"]] == [200, 422, 200]
    assert any("is_virtual" in err["loc"] for err in mixed["results"][1]["error"])
    assert [r["index"] for r in mixed["results"]] == [0, 1, 2]
    for first, second in zip(alone["results"], mixed["results"][::2], strict=True):
        assert second["decision"]["replayed"] is True  # same request, same stored answer
        assert second["decision"]["decision"] == first["decision"]["decision"]
    single = body("N-2")
    single["order"]["is_virtual"] = "maybe"
    solo = client.post(URL, json=single, headers=DECIDER)
    assert solo.status_code == 422
    assert [e["loc"][1:] for e in solo.json()["detail"]] == [
        e["loc"] for e in mixed["results"][1]["error"]
    ]


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (json.dumps({"requests": []}), "requests"),
        (json.dumps({"requests": [body()], "extra": 1}), "extra"),
        (json.dumps({}), "requests"),
    ],
)
def test_malformed_batches_are_422_naming_the_field(
    client: TestClient, content: str, field: str
) -> None:
    headers = {**DECIDER, "content-type": "application/json"}
    response = client.post(f"{URL}/batch", content=content, headers=headers)
    assert response.status_code == 422
    assert any(field in err["loc"] for err in response.json()["detail"])


def test_batch_needs_a_token_before_its_body_is_read(client: TestClient) -> None:
    response = client.post(f"{URL}/batch", content=b"{not json")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    headers = {**DECIDER, "content-type": "application/json"}
    assert client.post(f"{URL}/batch", content=b"{not json", headers=headers).status_code == 422


def test_batch_of_more_than_1000_is_refused(client: TestClient) -> None:
    items = [body(f"X{i}") for i in range(1001)]
    response = client.post(f"{URL}/batch", json={"requests": items}, headers=DECIDER)
    assert response.status_code == 422
