"""The background loops: the API follows the champion alias and records each move."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

import serving.background
from serving.config import Settings
from serving.model import ModelUnavailable
from tests.serving.conftest import (
    body,
    decide,
    no_champion,
    stub_champion,
)


def test_the_api_follows_the_champion_alias_and_records_each_move(
    make_client: Callable[..., TestClient],
    settings: Settings,
    champion_loader: Callable,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    points_at: dict[str, str | None] = {"version": None}  # the registry's alias, stubbed
    monkeypatch.setattr(serving.background, "champion_version", lambda *_: points_at["version"])
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
