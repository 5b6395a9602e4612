"""Liveness, readiness and the Prometheus metrics."""

from __future__ import annotations

import sqlite3

import pytest
from fastapi.testclient import TestClient

from serving.config import Settings
from serving.routes import health
from serving.routes.health import NOT_READY
from tests.serving.conftest import (
    DECIDER,
    URL,
    body,
    decide,
    not_ready_reasons,
    with_order,
)


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
    client.post(URL, json=with_order(paid_amount="1.001"), headers=DECIDER)
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


def test_readyz_is_not_ready_while_the_audit_log_cannot_take_a_write(
    client: TestClient,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(health, "PROBE_WRITE_SECONDS", 0.0)  # a probe write on every call
    assert client.get("/readyz").status_code == 200
    other = sqlite3.connect(settings.audit_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock: reads still work
    try:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["audit"] == NOT_READY["audit"]
        # The caller learns which dependency; the file and SQLite's words are in the log.
        assert str(settings.audit_path) not in ready.text and "locked" not in ready.text
        assert "locked" in not_ready_reasons(caplog)
        assert str(settings.audit_path) in not_ready_reasons(caplog)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert client.get("/readyz").status_code == 200


def test_readyz_is_not_ready_for_a_while_after_a_decision_could_not_be_recorded(
    client: TestClient, settings: Settings
) -> None:
    decide(client, body("WF0"))  # the log exists and is open
    with sqlite3.connect(settings.audit_path) as db:  # every insert fails, as on a full disk
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON decisions "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    refused = client.post(URL, json=body("WF1"), headers=DECIDER)
    assert refused.status_code == 503 and "merchant review" in refused.json()["detail"]
    ready = client.get("/readyz")  # its own write passes: the failed decision holds it
    assert ready.status_code == 503 and "a write failed" in ready.json()["checks"]["audit"]
    with sqlite3.connect(settings.audit_path) as db:
        db.execute("DROP TRIGGER refuse")
    assert client.get(f"{URL}/WF1", headers=DECIDER).status_code == 404  # nothing recorded
    assert decide(client, body("WF1"))["decision"] == "auto_approve"  # decisions resume
    audit = client.app.state.service.audit  # type: ignore[attr-defined]
    assert audit.write_failed_recently() and not audit.write_failed_recently(hold=0.0)


def test_readyz_takes_the_audit_write_lock_at_most_once_a_second(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`/readyz` needs no token: called in a loop it must not queue decisions behind its
    probe write. A passed probe is trusted for a second; after that it writes again."""
    now = [1000.0]
    monkeypatch.setattr(health, "_monotonic", lambda: now[0])
    assert client.get("/readyz").status_code == 200
    other = sqlite3.connect(settings.audit_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a probe write now would wait and fail
    try:
        now[0] += 0.5
        assert client.get("/readyz").status_code == 200  # no write tried: the lock is not taken
        now[0] += 0.6
        assert client.get("/readyz").status_code == 503  # a second on: it writes, and cannot
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert client.get("/readyz").status_code == 200  # a failed probe is retried at once
