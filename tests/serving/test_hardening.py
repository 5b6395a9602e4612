"""Issue 14's smaller findings: what /readyz tells a caller, /docs and /metrics outside
development, SQLite paths, the range of requested_at, the admin reload's audit record."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from serving.audit import AuditLog, AuditUnavailable
from serving.config import ConfigError, Settings
from serving.routes.health import NOT_READY
from tests.serving.conftest import (
    ADMIN,
    DECIDER,
    URL,
    body,
    decide,
    not_ready_reasons,
    stub_champion,
)

DECIDER_TOKEN, ADMIN_TOKEN = "d" * 32, "a" * 32


def _production(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "environment": "production",
            "decider_tokens": [SecretStr(DECIDER_TOKEN)],
            "admin_tokens": [SecretStr(ADMIN_TOKEN)],
            "audit_synchronous": "FULL",
        }
    )


def test_readyz_shows_no_path_and_logs_the_reason(
    make_client: Callable[..., TestClient], settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.store_path.unlink()
    client = make_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["store"] == NOT_READY["store"]
    assert str(settings.store_path.parent) not in ready.text
    assert str(settings.store_path) in not_ready_reasons(caplog)
    client.get("/readyz")
    assert len([r for r in caplog.records if "check" in getattr(r, "fields", {})]) == 1  # once


def test_docs_and_metrics_are_not_public_outside_development(
    make_client: Callable[..., TestClient], settings: Settings
) -> None:
    development = make_client()
    assert development.get("/docs").status_code == 200
    assert development.get("/metrics").status_code == 200
    production = make_client(_production(settings))
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert production.get(path).status_code == 404, path
    assert production.get("/metrics").status_code == 401
    assert production.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    scraped = production.get("/metrics", headers={"Authorization": f"Bearer {DECIDER_TOKEN}"})
    assert scraped.status_code == 200 and "fastrefund_" in scraped.text
    assert production.get("/readyz").status_code == 200  # a load balancer needs no token
    assert production.get("/healthz").status_code == 200


@pytest.mark.parametrize("name", ["online#2.db", "online.db?mode=memory", "a?b/audit.db"])
def test_a_sqlite_path_with_uri_characters_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    monkeypatch.setenv("FASTREFUND_STORE_PATH", str(tmp_path / name))
    with pytest.raises(ConfigError, match="FASTREFUND_STORE_PATH: .*'\\?' or '#'"):
        Settings.load()
    monkeypatch.delenv("FASTREFUND_STORE_PATH")
    monkeypatch.setenv("FASTREFUND_AUDIT_PATH", str(tmp_path / name))
    with pytest.raises(ConfigError, match="FASTREFUND_AUDIT_PATH"):
        Settings.load()


@pytest.mark.parametrize(
    ("requested_at", "accepted"),
    [
        ("0001-01-01T00:00:00Z", False),
        ("1999-12-31T23:59:59Z", False),
        ("2000-01-01T00:00:00Z", True),
        ("2099-12-31T23:59:59Z", True),
        ("2100-01-01T00:00:00Z", False),
        ("9999-12-31T23:59:59+00:00", False),
    ],
)
def test_requested_at_is_bounded_to_years_2000_to_2099(
    client: TestClient, requested_at: str, accepted: bool
) -> None:
    payload = {**body(f"Y{requested_at[:4]}"), "requested_at": requested_at}
    response = client.post(URL, json=payload, headers=DECIDER)
    if accepted:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "requested_at"]
        batch = client.post(f"{URL}/batch", json={"requests": [payload]}, headers=DECIDER)
        assert batch.json()["results"][0]["status"] == 422


def test_an_admin_reload_is_audited_before_the_new_model_serves(
    client: TestClient, champion_loader: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    champion_loader(stub_champion("8"))

    def refuse(*_: object, **__: object) -> None:
        raise AuditUnavailable("audit log: disk full")

    with monkeypatch.context() as patched:
        patched.setattr(AuditLog, "record_admin_action", refuse)
        assert client.post("/v1/admin/model/reload", headers=ADMIN).status_code == 503
    # Not recorded, so not served: version 7 answers.
    assert decide(client, body("RL1"))["model"]["version"] == "7"
    assert client.get("/readyz").json()["checks"]["model"] == "ok: version 7"
    reloaded = client.post("/v1/admin/model/reload", headers=ADMIN)
    assert reloaded.json()["model"]["version"] == "8"
    assert decide(client, body("RL2"))["model"]["version"] == "8"
