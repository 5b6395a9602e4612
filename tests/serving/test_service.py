"""The service's orchestration through the app: velocity counted from the audit log, batches that
count their own approvals and see their own refund ids, and the dry run."""

from __future__ import annotations

import sqlite3

from fastapi.testclient import TestClient

from serving.config import Settings
from serving.schemas import DecisionRequest
from tests.serving.conftest import (
    DAY,
    DECIDER,
    URL,
    Clock,
    body,
    codes,
    decide,
)


def test_velocity_limits_count_auto_approvals_per_day_and_per_30_days(
    client: TestClient, clock: Clock
) -> None:
    # The policy allows 2 auto-approvals a day and 6 in 30 days.
    approved = []
    for day in range(4):
        for i in range(3):
            answer = decide(client, body(f"V{day}-{i}"))
            approved.append(answer["decision"] == "auto_approve")
            if i == 2:
                assert codes(answer) == ["VELOCITY_LIMIT"]
        clock.now += DAY
    assert approved == [True, True, False] * 3 + [False, False, False]
    assert codes(decide(client, body("V-other", buyer_id="B_GOOD2"))) == []
    clock.now += 30 * DAY
    assert decide(client, body("V-later"))["decision"] == "auto_approve"


def test_manual_reviews_do_not_count_towards_velocity(client: TestClient) -> None:
    for i in range(5):
        decide(client, body(f"M{i}", paid_amount="500.00"))
    assert decide(client, body("M-ok"))["decision"] == "auto_approve"


def test_batch_counts_its_own_approvals_for_velocity(client: TestClient) -> None:
    items = [body(f"BV{i}") for i in range(3)]
    results = client.post(f"{URL}/batch", json={"requests": items}, headers=DECIDER).json()
    assert [r["decision"]["decision"] for r in results["results"]] == [
        "auto_approve",
        "auto_approve",
        "manual_review",
    ]


def test_batch_sees_refund_ids_stored_before_and_earlier_in_the_same_batch(
    client: TestClient, settings: Settings
) -> None:
    decide(client, body("D-0"))
    items = [
        body("D-0"),  # stored before, same request: replayed
        body("D-0", paid_amount="1.00"),  # stored before, different request: 409
        body("D-1"),
        body("D-1"),  # earlier in this batch, same request: replayed
        body("D-1", paid_amount="1.00"),  # earlier in this batch, different: 409
    ]
    results = client.post(f"{URL}/batch", json={"requests": items}, headers=DECIDER).json()
    statuses = [r["status"] for r in results["results"]]
    assert statuses == [200, 409, 200, 200, 409]
    replayed = [r["decision"]["replayed"] for r in results["results"] if r["status"] == 200]
    assert replayed == [True, False, True]
    assert (
        results["results"][3]["decision"]["decided_at"]
        == (results["results"][2]["decision"]["decided_at"])
    )
    with sqlite3.connect(settings.audit_path) as db:
        stored = db.execute("SELECT refund_id FROM decisions ORDER BY refund_id").fetchall()
    assert stored == [("D-0",), ("D-1",)]
    # The batch's own answers are what is stored and replayed afterwards.
    again = decide(client, body("D-1"))
    assert again["replayed"] is True
    assert {k: v for k, v in again.items() if k != "replayed"} == {
        k: v for k, v in results["results"][2]["decision"].items() if k != "replayed"
    }


def test_batch_velocity_counts_approvals_stored_before_it(client: TestClient, clock: Clock) -> None:
    decide(client, body("VB-0"))
    clock.now += 3600
    items = [body("VB-1", buyer_id="B_GOOD2"), body("VB-2"), body("VB-3")]
    results = client.post(f"{URL}/batch", json={"requests": items}, headers=DECIDER).json()
    decisions = [r["decision"] for r in results["results"]]
    assert [d["decision"] for d in decisions] == ["auto_approve", "auto_approve", "manual_review"]
    assert codes(decisions[2]) == ["VELOCITY_LIMIT"]


def test_evaluate_answers_like_decide_and_records_nothing(client: TestClient) -> None:
    service = client.app.state.service  # type: ignore[attr-defined]
    request = DecisionRequest.model_validate(body("EV1"))
    dry = service.evaluate([request])[0]
    assert dry.status == 200 and dry.body["decision"] == "auto_approve"
    assert client.get(f"{URL}/EV1", headers=DECIDER).status_code == 404
    assert "fastrefund_decisions_total" not in client.get("/metrics").text.replace(
        "# HELP fastrefund_decisions_total", ""
    ).replace("# TYPE fastrefund_decisions_total", "")
    answer = decide(client, body("EV1"))
    assert {**dry.body, "decided_at": None} == {**answer, "decided_at": None}
    assert service.evaluate([request])[0].body["replayed"] is True
    other = DecisionRequest.model_validate(body("EV1", paid_amount="1.00"))
    assert service.evaluate([other])[0].status == 409
    decide(client, body("EV2"))  # the buyer's second approval today
    third = service.evaluate([DecisionRequest.model_validate(body("EV3"))])[0]
    assert codes(third.body) == ["VELOCITY_LIMIT"]
    assert client.get(f"{URL}/EV3", headers=DECIDER).status_code == 404


def test_a_known_buyer_stored_with_an_empty_vector_is_not_approved(
    settings: Settings, make_client
) -> None:
    # The security review's fail-open path: materialize never writes such a row, an older or
    # newer store schema or a hand repair does (a real registration date, 10 orders).
    with sqlite3.connect(settings.store_path) as db:
        db.execute("INSERT INTO buyers VALUES ('B_HOLLOW', 1.6e9, 10, x'', 0, NULL)")
    answer = decide(make_client(), body("HOLLOW", buyer_id="B_HOLLOW"))
    assert answer["decision"] == "manual_review"
    assert codes(answer) == ["SCORE_UNAVAILABLE"]
    assert answer["buyer"]["premium"] is False and "note" not in answer
