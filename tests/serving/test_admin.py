"""The admin routes: admin tokens only, ids a request can carry, revoke, restore, shop eligibility,
recorded and in order, and decisions going on meanwhile."""

from __future__ import annotations

import shutil
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.config import Settings
from serving.routes.health import NOT_READY
from tests.serving.conftest import (
    ADMIN,
    DECIDER,
    body,
    codes,
    decide,
    not_ready_reasons,
    write_test_store,
)


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
    settings.store_path.unlink()
    write_test_store(settings.store_path)  # a new store is not given the change that failed
    assert "BUYER_REVOKED" not in codes(decide(client, body("AL3")))


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


def _overrides(client: TestClient) -> None:
    """Revoke B_GOOD, restore B_REVOKED (revoked by the snapshot), make S_LATE eligible."""
    for path, payload in (
        ("/v1/admin/buyers/B_GOOD/revoke", {"reason": "ring member"}),
        ("/v1/admin/buyers/B_REVOKED/restore", {"reason": "appeal"}),
    ):
        assert client.post(path, json=payload, headers=ADMIN).status_code == 200
    change = {"eligible": True, "reason": "audited"}
    assert client.put("/v1/admin/shops/S_LATE/eligibility", json=change, headers=ADMIN).is_success


def _assert_overrides_hold(client: TestClient, prefix: str) -> None:
    assert codes(decide(client, body(f"{prefix}1"))) == ["BUYER_REVOKED"]
    restored = decide(client, body(f"{prefix}2", buyer_id="B_REVOKED", shop_id="S_LATE"))
    assert restored["decision"] == "auto_approve"


def test_overrides_survive_the_store_deleted_and_materialized_anew(
    client: TestClient, settings: Settings, make_client
) -> None:
    _overrides(client)
    for suffix in ("", "-wal", "-shm"):  # `rm online.db*`, then a cron materialize
        Path(f"{settings.store_path}{suffix}").unlink(missing_ok=True)
    write_test_store(settings.store_path, as_of="2025-06-20")
    assert client.get("/v1/admin/buyers/B_GOOD", headers=ADMIN).json()["as_of"] == "2025-06-20"
    _assert_overrides_hold(client, "DM")
    # A worker started afterwards (a restart, another worker) applies them before serving.
    _assert_overrides_hold(make_client(), "DN")


def test_overrides_survive_the_store_restored_from_a_backup(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    backup = tmp_path / "backup.db"
    shutil.copy(settings.store_path, backup)  # taken before any override
    _overrides(client)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{settings.store_path}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, settings.store_path)  # the restore: the backup's file at the path
    _assert_overrides_hold(client, "BK")


def test_a_new_store_not_given_the_overrides_is_not_served(
    client: TestClient, settings: Settings, make_client, caplog: pytest.LogCaptureFixture
) -> None:
    _overrides(client)
    client.close()
    settings.store_path.unlink()
    write_test_store(settings.store_path)  # materialized anew: no overrides in it
    Path(settings.audit_path).rename(f"{settings.audit_path}.away")
    Path(settings.audit_path).mkdir()  # and the audit log cannot be opened
    fresh = make_client()
    store = fresh.get("/readyz").json()["checks"]["store"]
    assert store == NOT_READY["store"], store
    assert "admin overrides not applied to the online store yet" in not_ready_reasons(caplog)
    assert fresh.get("/v1/admin/buyers/B_GOOD", headers=ADMIN).status_code == 503  # not "ok"
    Path(settings.audit_path).rmdir()
    Path(f"{settings.audit_path}.away").rename(settings.audit_path)  # the log is back
    time.sleep(1.1)  # a log that failed to open is looked for again after a second
    view = fresh.get("/v1/admin/buyers/B_GOOD", headers=ADMIN).json()
    assert view["revoked"] is True, view
    _assert_overrides_hold(fresh, "NG")
