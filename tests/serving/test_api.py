"""The decision API through the real app: rules, idempotency, auth, validation, admin,
fail-closed behaviour and metrics (stub champion over a hand-made online store)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import serving.app
from modelcontract import redact_uri
from serving.__main__ import app as serving_cli
from serving.__main__ import worker_app
from serving.audit import AuditLog
from serving.config import ConfigError, Settings
from serving.logs import JsonFormatter
from serving.model import ModelUnavailable
from serving.rules import APPROVAL_NOTE
from serving.schemas import DecisionRequest
from tests.serving.conftest import (
    ADMIN,
    COLUMNS,
    DAY,
    DECIDER,
    THRESHOLD,
    BrokenBooster,
    Clock,
    body,
    codes,
    no_champion,
    stub_champion,
    write_test_store,
)

URL = "/v1/refund-decisions"


def decide(client: TestClient, payload: dict, headers: dict = DECIDER) -> dict:
    response = client.post(URL, json=payload, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


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


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ({"paid_amount": "299.99"}, []),
        ({"paid_amount": "300.00"}, ["AMOUNT_NOT_BELOW_LIMIT"]),
        ({"paid_amount": "300.01"}, ["AMOUNT_NOT_BELOW_LIMIT"]),
        ({"status": "unpaid"}, ["ORDER_SHIPPED"]),
        ({"status": "shipped"}, ["ORDER_SHIPPED"]),
        ({"status": "delivered"}, ["ORDER_SHIPPED"]),
        ({"status": "completed"}, ["ORDER_SHIPPED"]),
        ({"status": "cancelled"}, ["ORDER_SHIPPED"]),
        ({"tracking_number": "SF1234567"}, ["ORDER_SHIPPED"]),
        ({"is_virtual": True}, ["CATEGORY_EXCLUDED"]),
        ({"is_custom": True}, ["CATEGORY_EXCLUDED"]),
        ({"category": "game_top_up"}, ["CATEGORY_EXCLUDED"]),
        ({"kind": "return_and_refund"}, ["KIND_NOT_REFUND_ONLY"]),
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
def test_every_failed_rule_is_listed(client: TestClient, order: dict, expected: list[str]) -> None:
    answer = decide(client, body(**order))
    assert codes(answer) == expected
    assert answer["decision"] == ("auto_approve" if not expected else "manual_review")
    assert ("note" in answer) == (not expected)


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


def test_the_audit_record_holds_request_features_model_and_policy(
    client: TestClient, settings: Settings
) -> None:
    decide(client, body("RF-AUDIT"))
    decide(client, body("RF-NAN", buyer_id="B_NAN"))
    decide(client, body("RF-NOBODY", buyer_id="B_UNKNOWN"))
    with sqlite3.connect(settings.audit_path) as db:
        row = db.execute(
            "SELECT request, model_version, policy_version, decision, response "
            "FROM decisions WHERE refund_id = 'RF-AUDIT'"
        ).fetchone()
    request, model_version, policy_version, decision, response = row
    assert json.loads(request)["order"]["paid_amount"] == "299.99"
    assert (model_version, policy_version, decision) == ("7", "2025-06-01.1", "auto_approve")
    assert json.loads(response)["note"] == APPROVAL_NOTE
    audit = client.app.state.service.audit  # type: ignore[attr-defined]
    assert audit.features("RF-AUDIT") == {
        "as_of": "2025-06-15",
        "feature_set_version": "test-v1",
        "values": {"score_hint": 0.01, "orders_total": 10.0},
    }
    assert audit.features("RF-NAN")["values"] == {"score_hint": None, "orders_total": 10.0}
    assert audit.features("RF-NOBODY")["values"] is None
    assert audit.features("RF-NEVER") is None


# The decisions table as logs written before `snapshots` have it (features as JSON text).
OLD_DECISIONS_TABLE = (
    "CREATE TABLE decisions (refund_id TEXT PRIMARY KEY, request_hash TEXT NOT NULL, "
    "buyer_id TEXT NOT NULL, shop_id TEXT NOT NULL, decision TEXT NOT NULL, "
    "decided_at REAL NOT NULL, request TEXT NOT NULL, features TEXT NOT NULL, "
    "model_name TEXT, model_version TEXT, policy_version TEXT NOT NULL, "
    "response TEXT NOT NULL)"
)


def _open_when_all_are_ready(path: Path, barrier: Any, errors: Any) -> None:
    barrier.wait()
    try:
        AuditLog.open(path).close()
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        errors.put(repr(exc))


def test_workers_opening_an_old_audit_log_together_all_succeed(tmp_path: Path) -> None:
    """Worker processes starting together on a log from before snapshots upgrade it once."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(OLD_DECISIONS_TABLE)
    context = multiprocessing.get_context("fork")
    barrier, errors = context.Barrier(4), context.Queue()
    workers = [
        context.Process(target=_open_when_all_are_ready, args=(path, barrier, errors))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    assert errors.empty(), errors.get()
    with sqlite3.connect(path) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(decisions)")]
    assert columns.count("snapshot") == 1


def test_an_audit_log_from_before_snapshots_is_extended_and_still_read(
    settings: Settings, make_client: Callable[..., TestClient]
) -> None:
    """Logs written with the features as JSON text keep their records, readable as before."""
    old = {"as_of": "2025-06-01", "feature_set_version": "v1", "values": {"x": 1.5, "y": None}}
    with sqlite3.connect(settings.audit_path) as db:
        db.execute(OLD_DECISIONS_TABLE)
        db.execute(
            "INSERT INTO decisions VALUES ('RF-OLD', 'h', 'B_GOOD', 'S_OK', 'manual_review', "
            "1.0, '{}', ?, 'buyer-quality', '6', 'p', '{\"refund_id\": \"RF-OLD\"}')",
            (json.dumps(old),),
        )
    client = make_client()
    decide(client, body("RF-NEW"))
    audit = client.app.state.service.audit  # type: ignore[attr-defined]
    assert audit.features("RF-OLD") == old
    assert audit.features("RF-NEW")["values"] == {"score_hint": 0.01, "orders_total": 10.0}
    assert client.get(f"{URL}/RF-OLD", headers=DECIDER).json() == {"refund_id": "RF-OLD"}


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
    ("method", "path", "payload"),
    [
        ("post", "/v1/admin/buyers/B_GOOD/revoke", {"reason": "abuse"}),
        ("post", "/v1/admin/buyers/B_GOOD/restore", {"reason": "appeal"}),
        ("put", "/v1/admin/shops/S_OK/eligibility", {"eligible": False, "reason": "x"}),
        ("post", "/v1/admin/model/reload", None),
        ("get", "/v1/admin/shops/S_OK", None),
    ],
)
def test_admin_routes_refuse_deciders_and_strangers(
    client: TestClient, method: str, path: str, payload: dict | None
) -> None:
    call = getattr(client, method)
    kwargs = {"json": payload} if payload is not None else {}
    assert call(path, headers=DECIDER, **kwargs).status_code == 403
    assert call(path, **kwargs).status_code == 401
    assert call(path, headers=ADMIN, **kwargs).status_code == 200


def _with_order(**fields: object) -> dict:
    payload = body()
    payload["order"].update(fields)
    return payload


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (_with_order(paid_amount="-1.00"), "paid_amount"),
        (_with_order(paid_amount="12.345"), "paid_amount"),
        (_with_order(paid_amount=12.5), "paid_amount"),
        (_with_order(currency="USD"), "currency"),
        (_with_order(status="lost"), "status"),
        (_with_order(is_virtual="maybe"), "is_virtual"),
        # Booleans are JSON booleans: 0 or "false" is a caller's bug, not a "no" to approve on.
        (_with_order(is_virtual=0), "is_virtual"),
        (_with_order(is_custom="false"), "is_custom"),
        (_with_order(surprise=1), "surprise"),
        ({**body(), "kind": "refund"}, "kind"),
        ({**body(), "requested_at": "2025-06-15T02:00:00"}, "requested_at"),
        ({**body(), "requested_at": 1_749_952_800}, "requested_at"),  # not read as epoch
        ({**body(), "requested_at": "1749952800"}, "requested_at"),  # nor as a string
        # A category that would look like an excluded one: invisible or combining characters.
        (_with_order(category="gift\u200b_cards"), "category"),  # zero-width space
        (_with_order(category="gift_cards\x00"), "category"),  # a control character
        (_with_order(category="gift_cards\ufe0f"), "category"),  # a variation selector
        (_with_order(category="gift\u034f_cards"), "category"),  # combining grapheme joiner
        (_with_order(category="gift_cards\u3164"), "category"),  # a Hangul filler
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


def test_not_json_is_422_and_an_oversized_body_is_413(client: TestClient) -> None:
    headers = {**DECIDER, "content-type": "application/json"}
    assert client.post(URL, content=b"{not json", headers=headers).status_code == 422
    assert client.post(URL, content=b"[]", headers=headers).status_code == 422
    huge = b'{"refund_id": "' + b"x" * 3_000_000 + b'"}'
    assert client.post(URL, content=huge, headers=headers).status_code == 413

    def chunked(data: bytes) -> Iterator[bytes]:  # no Content-Length: the size is counted
        for start in range(0, len(data), 100_000):
            yield data[start : start + 100_000]

    assert client.post(URL, content=chunked(huge), headers=headers).status_code == 413
    # A FastAPI route (not the decision lane) reading a chunked body: 413 as well, not the
    # 400 FastAPI makes of an error while it reads the body.
    admin = {**ADMIN, "content-type": "application/json"}
    revoke = "/v1/admin/buyers/B_GOOD/revoke"
    response = client.post(revoke, content=chunked(huge), headers=admin)
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


def _asgi_post(client: TestClient, path: str, chunks: list[bytes], headers: list) -> list:
    """POST straight through the app's ASGI callable, the body in `chunks` (one ASGI message
    each, as a server delivers a body that arrives in pieces); returns the messages sent."""
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    client.portal.call(client.app, scope, receive, send)  # type: ignore[union-attr]
    return sent


def test_a_body_in_many_chunks_is_read_whole(client: TestClient) -> None:
    data = json.dumps(body("CHUNKED")).encode()
    chunks = [data[start : start + 40] for start in range(0, len(data), 40)] + [b""]
    token = [(b"authorization", DECIDER["Authorization"].encode())]
    sent = _asgi_post(client, URL, chunks, token)
    start, answer = sent[0], json.loads(sent[1]["body"])
    assert start["status"] == 200
    assert dict(start["headers"])[b"content-length"] == str(len(sent[1]["body"])).encode()
    assert (answer["refund_id"], answer["decision"]) == ("CHUNKED", "auto_approve")


def test_behind_a_root_path_the_decision_routes_answer_through_fastapi(
    make_client: Callable[..., TestClient],
) -> None:
    # Under a root_path the paths do not match the decision lane's; FastAPI routes the same
    # requests to the same code.
    client = make_client()
    prefixed = TestClient(client.app, root_path="/refunds")
    url = f"/refunds{URL}"
    answer = prefixed.post(url, json=body("ROOT1"), headers=DECIDER)
    assert (answer.status_code, answer.json()["decision"]) == (200, "auto_approve")
    batch = prefixed.post(f"{url}/batch", json={"requests": [body("ROOT2")]}, headers=DECIDER)
    assert batch.json()["results"][0]["decision"]["decision"] == "auto_approve"
    assert prefixed.post(url, json=body("ROOT3")).status_code == 401
    assert prefixed.post(url, content=b"{", headers=DECIDER).status_code == 422


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


def test_an_unauthenticated_decision_is_refused_before_its_body_is_read(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[bool] = []
    read = serving.app._body

    async def spy(receive: Any) -> bytes:
        asked.append(True)
        return await read(receive)

    monkeypatch.setattr(serving.app, "_body", spy)
    for path in (URL, f"{URL}/batch"):
        sent = _asgi_post(client, path, [b"{}"], [])
        assert sent[0]["status"] == 401
    assert asked == []
    token = [(b"authorization", DECIDER["Authorization"].encode())]
    assert _asgi_post(client, URL, [b"{}"], token)[0]["status"] == 422  # the spy can see reads
    assert asked == [True]


def test_the_decision_routes_are_documented(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (URL, f"{URL}/batch"):
        post = paths[path]["post"]
        assert "application/json" in post["requestBody"]["content"]
        assert {"200", "401", "409", "422", "503"} <= set(post["responses"])


def test_batch_of_more_than_1000_is_refused(client: TestClient) -> None:
    items = [body(f"X{i}") for i in range(1001)]
    response = client.post(f"{URL}/batch", json={"requests": items}, headers=DECIDER)
    assert response.status_code == 422


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("post", "/v1/admin/buyers/%E2%80%8BB_GOOD/revoke", {"reason": "x"}),  # zero width
        ("post", "/v1/admin/buyers/B_GOOD%20/revoke", {"reason": "x"}),  # a trailing space
        ("post", "/v1/admin/buyers/%20/restore", {"reason": "x"}),
        ("get", "/v1/admin/buyers/" + "B" * 65, None),
        ("put", "/v1/admin/shops/S%C2%A0OK/eligibility", {"eligible": True, "reason": "x"}),
        # Only JSON true/false: "no", 0 or "off" would withdraw (or grant) on a guess.
        ("put", "/v1/admin/shops/S_OK/eligibility", {"eligible": "no", "reason": "x"}),
        ("put", "/v1/admin/shops/S_OK/eligibility", {"eligible": 0, "reason": "x"}),
    ],
)
def test_admin_changes_with_an_id_no_request_can_carry_or_a_loose_flag_are_422(
    client: TestClient, method: str, path: str, payload: dict | None
) -> None:
    kwargs = {"json": payload} if payload is not None else {}
    response = getattr(client, method)(path, headers=ADMIN, **kwargs)
    assert response.status_code == 422, response.text
    assert (
        decide(client, body(f"ID-{abs(hash(path)) % 10_000}-{len(str(payload))}"))["decision"]
        == "auto_approve"
    )  # B_GOOD and S_OK untouched


def test_a_buyer_the_snapshot_does_not_know_reads_alike_revoked_or_not(
    client: TestClient,
) -> None:
    before = client.get("/v1/admin/buyers/B_NEW", headers=ADMIN).json()
    revoked = client.post(
        "/v1/admin/buyers/B_NEW/revoke", json={"reason": "ring member"}, headers=ADMIN
    ).json()
    assert (before["known"], before["order_count"], before["revoked"]) == (False, None, False)
    assert (revoked["known"], revoked["order_count"], revoked["revoked"]) == (False, None, True)
    answer = decide(client, body("NEW1", buyer_id="B_NEW"))
    assert codes(answer) == ["BUYER_REVOKED", "BUYER_NO_HISTORY"]  # every failed rule


def test_admin_revoke_restore_and_shop_eligibility_change_decisions(
    client: TestClient, settings: Settings
) -> None:
    revoked = client.post(
        "/v1/admin/buyers/B_GOOD/revoke", json={"reason": "promotion abuse"}, headers=ADMIN
    )
    assert revoked.json()["revoked"] is True
    answer = decide(client, body("A1"))
    assert codes(answer) == ["BUYER_REVOKED"]
    assert "promotion abuse" in answer["reasons"][0]["message"]

    client.post("/v1/admin/buyers/B_REVOKED/restore", json={"reason": "appeal"}, headers=ADMIN)
    assert decide(client, body("A2", buyer_id="B_REVOKED"))["decision"] == "auto_approve"

    client.put(
        "/v1/admin/shops/S_OK/eligibility",
        json={"eligible": False, "reason": "complaints"},
        headers=ADMIN,
    )
    assert codes(decide(client, body("A3", buyer_id="B_GOOD2"))) == ["SHOP_NOT_ELIGIBLE"]

    # Overrides survive a refresh of the store.
    write_test_store(settings.store_path, as_of="2025-06-16")
    assert codes(decide(client, body("A4"))) == ["SHOP_NOT_ELIGIBLE", "BUYER_REVOKED"]
    assert client.get("/v1/admin/buyers/B_GOOD", headers=ADMIN).json()["as_of"] == "2025-06-16"

    with sqlite3.connect(settings.audit_path) as db:
        actions = db.execute("SELECT actor, action, target, reason FROM admin_actions").fetchall()
    assert ("admin#0", "revoke_buyer", "B_GOOD", "promotion abuse") in actions


def test_admin_changes_need_a_reason(client: TestClient) -> None:
    response = client.post("/v1/admin/buyers/B_GOOD/revoke", json={}, headers=ADMIN)
    assert response.status_code == 422


def test_no_champion_fails_closed_until_an_admin_reload(
    make_client: Callable[..., TestClient], champion_loader: Callable
) -> None:
    champion_loader(no_champion())
    client = make_client()
    answer = decide(client, body("NC1"))
    assert answer["decision"] == "manual_review"
    assert codes(answer) == ["SCORE_UNAVAILABLE"]
    assert answer["model"]["version"] is None
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "alias not found" in ready.json()["checks"]["model"]

    failed = client.post("/v1/admin/model/reload", headers=ADMIN)
    assert failed.status_code == 503

    champion_loader(stub_champion("8"))
    reloaded = client.post("/v1/admin/model/reload", headers=ADMIN)
    assert reloaded.json() == {"model": {"name": "buyer-quality", "version": "8"}, "previous": None}
    assert decide(client, body("NC2"))["decision"] == "auto_approve"
    assert client.get("/readyz").status_code == 200


def test_the_api_follows_the_champion_alias_and_records_each_move(
    make_client: Callable[..., TestClient],
    settings: Settings,
    champion_loader: Callable,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    points_at: dict[str, str | None] = {"version": None}  # the registry's alias, stubbed
    monkeypatch.setattr(serving.app, "champion_version", lambda *_: points_at["version"])
    champion_loader(no_champion())
    client = make_client(settings.model_copy(update={"model_check_seconds": 0.02}))
    assert client.get("/readyz").status_code == 503  # started before the first promotion

    def serving_version(expected: str, seconds: float = 10.0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if client.get("/readyz").json()["checks"]["model"] == f"ok: version {expected}":
                return True
            time.sleep(0.02)
        return False

    champion_loader(stub_champion("9"))
    points_at["version"] = "9"  # the first promotion
    assert serving_version("9")
    assert decide(client, body("FC1"))["model"]["version"] == "9"

    champion_loader(ModelUnavailable("models:/buyer-quality/10: broken"))
    points_at["version"] = "10"  # a version that cannot be loaded: 9 keeps serving
    time.sleep(0.3)
    assert decide(client, body("FC2"))["model"]["version"] == "9"

    champion_loader(stub_champion("8"))
    points_at["version"] = "8"  # a rollback
    assert serving_version("8")
    with sqlite3.connect(settings.audit_path) as db:
        moves = db.execute(
            "SELECT actor, detail FROM admin_actions WHERE action = 'reload_model'"
        ).fetchall()
    assert [(actor, json.loads(detail)) for actor, detail in moves] == [
        ("registry", {"previous": None, "version": "9"}),
        ("registry", {"previous": "9", "version": "8"}),
    ]


def test_a_failed_reload_keeps_the_current_model(
    client: TestClient, champion_loader: Callable
) -> None:
    champion_loader(no_champion())
    assert client.post("/v1/admin/model/reload", headers=ADMIN).status_code == 503
    assert decide(client, body())["model"]["version"] == "7"


def test_a_model_that_cannot_score_fails_closed(
    make_client: Callable[..., TestClient], champion_loader: Callable
) -> None:
    champion_loader(stub_champion(booster=BrokenBooster()))
    answer = decide(make_client(), body())
    assert (answer["decision"], codes(answer)) == ("manual_review", ["SCORE_UNAVAILABLE"])


def test_a_model_trained_on_other_features_fails_closed(
    make_client: Callable[..., TestClient], champion_loader: Callable
) -> None:
    other = stub_champion()
    object.__setattr__(other, "feature_set_version", "buyer-features-v0")
    champion_loader(other)
    assert codes(decide(make_client(), body())) == ["SCORE_UNAVAILABLE"]


class SecondColumnBooster:
    """Scores a row with its second column."""

    def predict(self, rows: np.ndarray, **_: object) -> np.ndarray:
        return rows[:, 1].copy()


def test_a_model_taking_the_store_columns_in_another_order_gets_its_own_order(
    make_client: Callable[..., TestClient], champion_loader: Callable
) -> None:
    # The store holds (score_hint, orders_total); this model takes (orders_total, score_hint)
    # and scores with its second column, the hint: 0.01, premium. Given the store's order it
    # would score 10 orders, outside [0, 1]: no score.
    reordered = stub_champion(booster=SecondColumnBooster())
    object.__setattr__(reordered, "feature_columns", tuple(reversed(COLUMNS)))
    champion_loader(reordered)
    answer = decide(make_client(), body("REORDER"))
    assert (answer["decision"], answer["buyer"]["score"]) == ("auto_approve", 0.01)


class TwoOutputBooster:
    """A model with two outputs a row (shape (n, 2)) where one score a row is expected."""

    def predict(self, rows: np.ndarray, **_: object) -> np.ndarray:
        return np.stack([rows[:, 0], rows[:, 0]], axis=1)


def test_a_model_with_several_outputs_a_row_fails_closed_not_503(
    make_client: Callable[..., TestClient], champion_loader: Callable
) -> None:
    champion_loader(stub_champion(booster=TwoOutputBooster()))
    client = make_client()
    answer = decide(client, body("TWO1"))
    assert (answer["decision"], codes(answer)) == ("manual_review", ["SCORE_UNAVAILABLE"])
    batch = client.post(f"{URL}/batch", json={"requests": [body("TWO2")]}, headers=DECIDER)
    assert codes(batch.json()["results"][0]["decision"]) == ["SCORE_UNAVAILABLE"]


def test_missing_online_store_fails_closed_then_recovers(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    settings = Settings(
        store_path=tmp_path / "later" / "online.db",
        audit_path=tmp_path / "audit2.db",
        store_check_seconds=0,
    )
    client = make_client(settings)
    answer = decide(client, body("MS1"))
    assert (answer["decision"], codes(answer)) == ("manual_review", ["SCORE_UNAVAILABLE"])
    assert client.get("/readyz").status_code == 503
    assert not settings.store_path.exists()  # serving never creates an empty store
    write_test_store(settings.store_path)
    assert decide(client, body("MS2"))["decision"] == "auto_approve"


def test_a_store_file_deleted_and_materialized_anew_is_reopened(
    client: TestClient, settings: Settings
) -> None:
    admin_view = "/v1/admin/buyers/B_GOOD"
    assert client.get(admin_view, headers=ADMIN).json()["as_of"] == "2025-06-15"
    for suffix in ("", "-wal", "-shm"):  # what `rm online.db*` does under a running server
        Path(f"{settings.store_path}{suffix}").unlink(missing_ok=True)
    assert decide(client, body("RS1"))["decision"] == "auto_approve"  # the old file serves
    write_test_store(settings.store_path, as_of="2025-06-20")
    assert client.get(admin_view, headers=ADMIN).json()["as_of"] == "2025-06-20"
    assert decide(client, body("RS2"))["decision"] == "auto_approve"
    store = client.get("/readyz").json()["checks"]["store"]
    assert store.startswith("ok: as of 2025-06-20")
    # The test store was built under policy "test", not the served one: readiness says so.
    assert "built under policy test: run materialize again for 2025-06-01.1" in store


def test_audit_log_down_is_503_and_nothing_is_approved(
    make_client: Callable[..., TestClient], settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "not-a-dir").write_text("")
    down = settings.model_copy(update={"audit_path": tmp_path / "not-a-dir" / "audit.db"})
    client = make_client(down)
    response = client.post(URL, json=body(), headers=DECIDER)
    assert response.status_code == 503
    assert "merchant review" in response.json()["detail"]
    batch = client.post(f"{URL}/batch", json={"requests": [body()]}, headers=DECIDER)
    assert batch.status_code == 503
    assert client.get("/readyz").status_code == 503


def test_an_audit_log_locked_by_another_writer_is_503_and_nothing_is_approved(
    client: TestClient, settings: Settings
) -> None:
    decide(client, body("LK0"))  # the log exists and is open
    other = sqlite3.connect(settings.audit_path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        response = client.post(URL, json=body("LK1"), headers=DECIDER)
        assert response.status_code == 503 and "merchant review" in response.json()["detail"]
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert client.get(f"{URL}/LK1", headers=DECIDER).status_code == 404
    assert decide(client, body("LK1"))["decision"] == "auto_approve"  # and it recovers


def test_audit_write_failure_mid_flight_is_503(client: TestClient, settings: Settings) -> None:
    with sqlite3.connect(settings.audit_path) as db:
        db.execute("DROP TABLE decisions")
    response = client.post(URL, json=body("RF-LOST"), headers=DECIDER)
    assert response.status_code == 503


def test_health_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    decide(client, body("MT1"))
    decide(client, body("MT2", paid_amount="300.00"))
    decide(client, body("MT2", paid_amount="300.00"))
    text = client.get("/metrics").text
    assert 'fastrefund_decisions_total{decision="auto_approve"} 1.0' in text
    assert 'fastrefund_decisions_total{decision="manual_review"} 1.0' in text
    assert 'fastrefund_decision_reasons_total{reason="AMOUNT_NOT_BELOW_LIMIT"} 1.0' in text
    assert "fastrefund_decision_replays_total 1.0" in text
    assert 'fastrefund_model_info{name="buyer-quality",version="7"} 1.0' in text
    assert 'fastrefund_decision_seconds_count{route="single"} 3.0' in text
    assert "fastrefund_refused_requests_total{" not in text  # nothing refused yet

    client.post(URL, json=body("MT3"))  # no token
    client.post(URL, json=body("MT3"), headers={"Authorization": "Bearer wrong"})
    client.post(URL, json=_with_order(paid_amount="1.001"), headers=DECIDER)
    client.post(URL, json=body("MT1", paid_amount="5.00"), headers=DECIDER)  # a changed MT1
    client.post(f"{URL}/batch", json={"requests": []}, headers=DECIDER)
    text = client.get("/metrics").text
    refused = 'fastrefund_refused_requests_total{route="%s",status="%s"} %s'
    assert refused % ("single", "401", "2.0") in text
    assert refused % ("single", "422", "1.0") in text
    assert refused % ("single", "409", "1.0") in text
    assert refused % ("batch", "422", "1.0") in text
    huge = b'{"refund_id": "' + b"x" * 3_000_000 + b'"}'
    client.post(URL, content=huge, headers={**DECIDER, "content-type": "application/json"})
    assert refused % ("single", "413", "1.0") in client.get("/metrics").text


def test_tokens_are_never_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("DEBUG", logger="serving"):
        decide(client, body("LOG1"))
        client.post(URL, json=body(), headers={"Authorization": "Bearer secret-wrong"})
    text = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert "dev-decider-token" not in text and "secret-wrong" not in text
    assert "decider#0" in text


def test_default_tokens_are_refused_outside_development() -> None:
    with pytest.raises(ConfigError, match="default development tokens"):
        Settings(environment="production").check_tokens()
    with pytest.raises(ConfigError, match="at least 16"):
        Settings(
            environment="production", decider_tokens=["d" * 8], admin_tokens=["a" * 32]
        ).check_tokens()
    settings = Settings(
        environment="production",
        decider_tokens=["d" * 32],
        admin_tokens=["a" * 32],
    )
    settings.check_tokens()
    assert "d" * 32 not in repr(settings)
    with pytest.raises(ConfigError, match="default development tokens"):
        serving.app.create_app(Settings(environment="staging"))


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        (
            "FASTREFUND_DECIDER_TOKENS",
            '["S3cretS3cretS3cret", 123456789123456789]',
            "DECIDER_TOKENS",
        ),
        ("FASTREFUND_ADMIN_TOKENS", '{"a": "S3cretS3cretS3cret"}', "ADMIN_TOKENS"),
        ("FASTREFUND_DECIDER_TOKENS", "S3cretS3cretS3cret", "decider_tokens"),  # not JSON
        ("FASTREFUND_LOG_LEVEL", "verbose", "LOG_LEVEL"),
    ],
)
def test_a_malformed_setting_is_named_and_its_value_never_shown(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        Settings.load()
    message = str(caught.value)
    assert named in message
    assert "S3cret" not in message and "123456789" not in message
    assert caught.value.__cause__ is None and caught.value.__context__ is not None


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


def test_an_unexpected_failure_on_a_decision_route_is_503_never_500(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = client.app.state.service  # type: ignore[attr-defined]

    def broken(requests: object) -> list:
        raise RuntimeError("a bug")

    monkeypatch.setattr(service, "decide", broken)
    monkeypatch.setattr(client.app.state.coalescer, "_decide", broken)  # type: ignore[attr-defined]
    for url, payload in ((URL, body("RF-BUG")), (f"{URL}/batch", {"requests": [body("RF-BUG")]})):
        response = client.post(url, json=payload, headers=DECIDER)
        assert response.status_code == 503
        assert "merchant review" in response.json()["detail"]


def test_other_methods_on_the_decision_paths_go_through_fastapi(client: TestClient) -> None:
    # GET .../batch is the stored-decision route for a refund called "batch".
    assert client.get(f"{URL}/batch", headers=DECIDER).status_code == 404
    assert client.get(URL, headers=DECIDER).status_code == 405
    slash = client.post(f"{URL}/", json=body(), headers=DECIDER, follow_redirects=False)
    assert slash.status_code == 307  # FastAPI's redirect to the path without the slash


def test_a_tracking_uri_is_logged_without_its_credentials() -> None:
    hide = redact_uri
    assert hide("postgresql://u:secret@db:5432/mlflow") == "postgresql://***@db:5432/mlflow"
    assert hide("https://token@mlflow.internal") == "https://***@mlflow.internal"
    assert hide("sqlite:///mlflow.db") == "sqlite:///mlflow.db"
    assert hide("https://mlflow.internal/?token=abc") == "https://mlflow.internal/?***"


def test_an_audit_log_moved_away_while_serving_is_503_until_it_is_back(
    client: TestClient, settings: Settings
) -> None:
    assert decide(client, body("MV0"))["decision"] == "auto_approve"
    audit = settings.audit_path
    files = [Path(f"{audit}{suffix}") for suffix in ("", "-wal", "-shm")]
    for path in files:  # rotated away (or deleted): what is written goes where nobody reads
        if path.exists():
            path.rename(f"{path}.away")
    response = client.post(URL, json=body("MV1"), headers=DECIDER)
    assert response.status_code == 503 and "merchant review" in response.json()["detail"]
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "was deleted or moved while in use" in ready.json()["checks"]["audit"]
    assert not audit.exists()  # not begun anew behind the operator's back

    for path in files:  # put back
        if Path(f"{path}.away").exists():
            Path(f"{path}.away").rename(path)
    time.sleep(1.1)  # the log is looked for again once a second
    assert client.get("/readyz").status_code == 200
    assert decide(client, body("MV1"))["decision"] == "auto_approve"
    assert decide(client, body("MV0"))["replayed"] is True  # the history came back with it


def test_readyz_is_not_ready_while_the_audit_log_cannot_take_a_write(
    client: TestClient, settings: Settings
) -> None:
    assert client.get("/readyz").status_code == 200
    other = sqlite3.connect(settings.audit_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock: reads still work
    try:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "locked" in ready.json()["checks"]["audit"]
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert client.get("/readyz").status_code == 200


def test_an_admin_change_the_store_cannot_take_is_503_recorded_and_decisions_go_on(
    client: TestClient, settings: Settings
) -> None:
    other = sqlite3.connect(settings.store_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a refresh holding the store's write lock
    try:
        with ThreadPoolExecutor(1) as pool:
            revoke = pool.submit(
                client.post, "/v1/admin/buyers/B_GOOD/revoke", json={"reason": "x"}, headers=ADMIN
            )
            time.sleep(0.5)  # the revoke is waiting for the lock (5 s)
            started = time.perf_counter()
            assert decide(client, body("AL1"))["decision"] == "auto_approve"
            assert time.perf_counter() - started < 2.0  # not held up behind the revoke
            response = revoke.result()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert response.status_code == 503
    assert "revoke_buyer not made, try again" in response.json()["detail"]
    with sqlite3.connect(settings.audit_path) as db:
        actions = [row[0] for row in db.execute("SELECT action FROM admin_actions ORDER BY id")]
    assert actions == ["revoke_buyer", "revoke_buyer_failed"]
    assert "BUYER_REVOKED" not in codes(decide(client, body("AL2")))


def test_each_worker_process_logs_json_lines(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `serving run --workers N`: uvicorn starts each worker afresh and builds the app there.
    for name, value in (
        ("FASTREFUND_STORE_PATH", settings.store_path),
        ("FASTREFUND_AUDIT_PATH", settings.audit_path),
        ("FASTREFUND_LOG_LEVEL", "WARNING"),
        ("MLFLOW_CONFIGURE_LOGGING", "false"),
        ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"),
    ):
        monkeypatch.setenv(name, str(value))
    started: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: started.update(app=app, **options))
    loggers = [
        logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.error", "mlflow", "alembic")
    ]
    saved = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    try:
        result = CliRunner().invoke(serving_cli, ["run", "--workers", "2"])
        assert result.exit_code == 0, result.output
        assert started["app"] == "serving.__main__:worker_app" and started["factory"] is True
        root = logging.getLogger()
        root.handlers[:] = []  # what a fresh worker process starts with
        worker_app()
        assert [type(handler.formatter) for handler in root.handlers] == [JsonFormatter]
        assert root.level == logging.WARNING
    finally:
        for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate


def test_admin_changes_waiting_for_the_store_are_made_in_the_order_recorded(
    client: TestClient, settings: Settings
) -> None:
    other = sqlite3.connect(settings.store_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a refresh holds the lock while both changes come in
    try:
        with ThreadPoolExecutor(2) as pool:
            url = "/v1/admin/buyers/B_GOOD"
            revoke = pool.submit(client.post, f"{url}/revoke", json={"reason": "r"}, headers=ADMIN)
            time.sleep(0.5)
            restore = pool.submit(
                client.post, f"{url}/restore", json={"reason": "appeal"}, headers=ADMIN
            )
            time.sleep(1.0)  # both are waiting now
            other.execute("ROLLBACK")
            assert revoke.result().status_code == restore.result().status_code == 200
    finally:
        other.close()
    assert client.get("/v1/admin/buyers/B_GOOD", headers=ADMIN).json()["revoked"] is False


def test_a_worker_never_takes_up_a_log_another_worker_began_after_its_own_was_deleted(
    make_client: Callable[..., TestClient], settings: Settings
) -> None:
    first = make_client()
    assert decide(first, body("W0"))["decision"] == "auto_approve"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{settings.audit_path}{suffix}").unlink(missing_ok=True)
    assert first.post(URL, json=body("W1"), headers=DECIDER).status_code == 503
    restarted = make_client()  # a worker restarted meanwhile begins an empty log
    assert decide(restarted, body("W2"))["decision"] == "auto_approve"
    time.sleep(1.1)  # the first looks for its log again
    refused = first.post(URL, json=body("W0"), headers=DECIDER)  # would not be a replay
    assert refused.status_code == 503
    audit = first.get("/readyz").json()["checks"]["audit"]
    assert "is not the log this worker began with" in audit
