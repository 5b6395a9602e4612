"""Serving fixtures: a hand-made online store with a stub champion (fast), and a simulated
world with a real LightGBM champion registered in a temporary MLflow (slow)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

import serving.lifespan
import serving.supervisor
from serving.app import create_app
from serving.config import DEV_ADMIN_TOKEN, DEV_DECIDER_TOKEN, Settings
from serving.model import Champion, ModelUnavailable
from serving.store import StoreMeta, write_snapshot

NOW = 1_750_000_000.0  # 2025-06-15T15:06:40Z
DAY = 86_400.0
THRESHOLD = 0.05
DECIDER = {"Authorization": f"Bearer {DEV_DECIDER_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {DEV_ADMIN_TOKEN}"}
COLUMNS = ("score_hint", "orders_total")


class HintBooster:
    """Scores a buyer with their `score_hint` feature, so tests choose each buyer's score."""

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, rows: np.ndarray, **_: object) -> np.ndarray:
        self.calls += 1
        return rows[:, 0].copy()


class BrokenBooster:
    """A model whose every prediction fails."""

    def predict(self, rows: np.ndarray, **_: object) -> np.ndarray:
        raise RuntimeError("corrupt tree")


def stub_champion(version: str = "7", booster: object | None = None) -> Champion:
    """A champion scoring with HintBooster, threshold 0.05."""
    return Champion(
        "buyer-quality", version, booster or HintBooster(), THRESHOLD, COLUMNS, "test-v1"
    )


# buyer_id: (score_hint, order_count, account age days, revoked reason)
BUYERS = {
    "B_GOOD": (0.01, 10, 400, None),
    "B_GOOD2": (0.02, 10, 400, None),
    "B_EDGE": (THRESHOLD, 10, 400, None),
    "B_BAD": (0.90, 10, 400, None),
    "B_FEW": (0.01, 2, 400, None),
    "B_MIN": (0.01, 3, 30.01, None),
    "B_YOUNG": (0.01, 10, 29.5, None),
    "B_REVOKED": (0.01, 10, 400, "abuse confirmed on refund R9"),
    "B_NAN": (math.nan, 10, 400, None),
}
SHOPS = {"S_OK": (True, ""), "S_LATE": (False, "late shipment rate above 15%")}


def write_test_store(path: Path, as_of: str = "2025-06-15") -> Path:
    """The hand-made store: BUYERS and SHOPS with features (score_hint, orders_total)."""
    meta = StoreMeta(as_of, "test-v1", COLUMNS, "2025-06-15T00:00:00+00:00", "test")
    buyers = [
        (
            buyer_id,
            NOW - age * DAY,
            orders,
            np.array([hint, float(orders)]).tobytes(),
            int(reason is not None),
            reason,
        )
        for buyer_id, (hint, orders, age, reason) in BUYERS.items()
    ]
    shops = [
        (shop_id, int(ok), why, json.dumps({"tracking_after_refund": 0}))
        for shop_id, (ok, why) in SHOPS.items()
    ]
    write_snapshot(path, meta, buyers, shops)
    return path


def body(refund_id: str = "RF1", **order: object) -> dict:
    """A request that passes every rule for B_GOOD at S_OK; override order fields."""
    kind = order.pop("kind", "refund_only")
    return {
        "refund_id": refund_id,
        "requested_at": "2025-06-15T02:00:00Z",
        "kind": kind,
        "order": {
            "order_id": f"O-{refund_id}",
            "buyer_id": "B_GOOD",
            "shop_id": "S_OK",
            "category": "apparel",
            "is_virtual": False,
            "is_custom": False,
            "paid_amount": "299.99",
            "currency": "CNY",
            "status": "paid_unshipped",
            "tracking_number": None,
            **order,
        },
    }


def with_order(**fields: object) -> dict:
    """`body()` with order fields set as given, unchecked (for malformed bodies)."""
    payload = body()
    payload["order"].update(fields)
    return payload


def not_ready_reasons(caplog: pytest.LogCaptureFixture) -> str:
    """The reasons /readyz logged behind its public phrases (serving.routes.health), joined."""
    return " ".join(
        r.fields["reason"] for r in caplog.records if "check" in getattr(r, "fields", {})
    )


def codes(answer: dict) -> list[str]:
    """The reason codes of an answer."""
    return [reason["code"] for reason in answer["reasons"]]


URL = "/v1/refund-decisions"


def decide(client: TestClient, payload: dict, headers: dict = DECIDER) -> dict:
    """POST one decision request; it must be answered 200. Returns the answer."""
    response = client.post(URL, json=payload, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


class Clock:
    """A settable clock for the velocity windows."""

    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    write_test_store(tmp_path / "online.db")
    return Settings(
        store_path=tmp_path / "online.db",
        audit_path=tmp_path / "audit.db",
        mlflow_tracking_uri="sqlite:///unused.db",
        store_check_seconds=0,
        model_check_seconds=0,  # the registry watcher has its own test
    )


@pytest.fixture
def champion_loader(monkeypatch: pytest.MonkeyPatch) -> Callable[[Champion | Exception], None]:
    """Choose what loading the champion yields: a Champion, or an exception to raise."""

    def use(result: Champion | Exception) -> None:
        def load(*_: object) -> Champion:
            if isinstance(result, Exception):
                raise result
            return result

        monkeypatch.setattr(serving.supervisor, "load_champion", load)

    async def no_challenger(*_: object) -> None:
        return None  # no registry here: no shadow (tests/serving/test_shadow.py sets one)

    monkeypatch.setattr(serving.lifespan, "refresh_challenger", no_challenger)
    monkeypatch.setattr(serving.lifespan, "follow_challenger", no_challenger)
    use(stub_champion())
    return use


@pytest.fixture
def make_client(
    settings: Settings, clock: Clock, champion_loader: Callable
) -> Iterator[Callable[..., TestClient]]:
    """Start the real app (lifespan included) with the given settings."""
    clients: list[TestClient] = []

    def make(app_settings: Settings | None = None) -> TestClient:
        client = TestClient(create_app(app_settings or settings, clock=clock))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """The app over the hand-made store with the stub champion."""
    return make_client()


def no_champion() -> ModelUnavailable:
    return ModelUnavailable("models:/buyer-quality@champion: alias not found")


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its tables made and nothing in it: creating the tables
    takes MLflow ~8 s, so tests that need a registry of their own copy this file instead."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    uri = f"sqlite:///{path}"
    MlflowClient(uri, uri).search_experiments()
    return path
