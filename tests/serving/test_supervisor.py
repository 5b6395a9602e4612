"""Supervision of the store, the audit log and the champion: missing, replaced, moved away, another
worker's, not loadable; decisions fail closed meanwhile and recover."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.config import Settings
from serving.routes.health import NOT_READY
from tests.serving.conftest import (
    ADMIN,
    DECIDER,
    URL,
    body,
    codes,
    decide,
    no_champion,
    not_ready_reasons,
    stub_champion,
    write_test_store,
)


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


def test_an_audit_log_moved_away_while_serving_is_503_until_it_is_back(
    client: TestClient, settings: Settings, caplog: pytest.LogCaptureFixture
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
    assert ready.json()["checks"]["audit"] == NOT_READY["audit"]
    assert "was deleted or moved while in use" in not_ready_reasons(caplog)
    assert not audit.exists()  # not begun anew behind the operator's back

    for path in files:  # put back
        if Path(f"{path}.away").exists():
            Path(f"{path}.away").rename(path)
    time.sleep(1.1)  # the log is looked for again once a second
    assert client.get("/readyz").status_code == 200
    assert decide(client, body("MV1"))["decision"] == "auto_approve"
    assert decide(client, body("MV0"))["replayed"] is True  # the history came back with it


def test_a_worker_never_takes_up_a_log_another_worker_began_after_its_own_was_deleted(
    make_client: Callable[..., TestClient], settings: Settings, caplog: pytest.LogCaptureFixture
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
    assert first.get("/readyz").json()["checks"]["audit"] == NOT_READY["audit"]
    assert "is not the log this worker began with" in not_ready_reasons(caplog)


def test_no_champion_fails_closed_until_an_admin_reload(
    make_client: Callable[..., TestClient],
    champion_loader: Callable,
    caplog: pytest.LogCaptureFixture,
) -> None:
    champion_loader(no_champion())
    client = make_client()
    answer = decide(client, body("NC1"))
    assert answer["decision"] == "manual_review"
    assert codes(answer) == ["SCORE_UNAVAILABLE"]
    assert answer["model"]["version"] is None
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["model"] == NOT_READY["model"]
    assert "alias not found" in not_ready_reasons(caplog)

    failed = client.post("/v1/admin/model/reload", headers=ADMIN)
    assert failed.status_code == 503

    champion_loader(stub_champion("8"))
    reloaded = client.post("/v1/admin/model/reload", headers=ADMIN)
    assert reloaded.json() == {"model": {"name": "buyer-quality", "version": "8"}, "previous": None}
    assert decide(client, body("NC2"))["decision"] == "auto_approve"
    assert client.get("/readyz").status_code == 200


def test_a_failed_reload_keeps_the_current_model(
    client: TestClient, champion_loader: Callable
) -> None:
    champion_loader(no_champion())
    assert client.post("/v1/admin/model/reload", headers=ADMIN).status_code == 503
    assert decide(client, body())["model"]["version"] == "7"
