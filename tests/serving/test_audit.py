"""The audit log: what a record holds, logs from before snapshots, and no decision answered while it
cannot be written."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from serving.audit import AuditLog
from serving.config import Settings
from serving.rules import APPROVAL_NOTE
from tests.serving.conftest import (
    DECIDER,
    URL,
    body,
    decide,
)


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
