"""End to end: a simulated world, materialized; a champion trained and promoted in a temporary
MLflow; the real app loading it; a reload under concurrent HTTP load."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn
from fastapi.testclient import TestClient
from mlflow import MlflowClient

import features
from features.simulate import simulate, write_world
from serving.app import create_app
from serving.config import Settings
from serving.materialize import materialize
from serving.policy import load_policy
from tests.serving.champions import MODEL, register_champion, training_frame
from tests.serving.conftest import ADMIN, DECIDER, body, codes

pytestmark = pytest.mark.slow

URL = "/v1/refund-decisions"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("e2e")
    simulated = simulate(buyers=2500, shops=40, days=300, seed=5)
    write_world(simulated, root / "log")
    store = root / "online.db"
    report = materialize(root / "log", store_path=store, policy=load_policy())
    uri = f"sqlite:///{root / 'mlflow.db'}"
    log = simulated.log
    frame, y = training_frame(log, "2025-06-01")
    version, booster, threshold = register_champion(uri, root / "artifacts", frame, y)
    return {
        "root": root,
        "log": log,
        "store": store,
        "report": report,
        "uri": uri,
        "version": version,
        "booster": booster,
        "threshold": threshold,
        "frame": frame,
        "y": y,
    }


@pytest.fixture
def settings(world: dict, tmp_path: Path) -> Settings:
    return Settings(
        store_path=world["store"],
        audit_path=tmp_path / "audit.db",
        mlflow_tracking_uri=world["uri"],
    )


def _online_features(world: dict) -> pd.DataFrame:
    log = world["log"]
    return features.build_features(log, [world["report"].as_of]).set_index("buyer_id")


def _order_for(buyer_id: str, refund_id: str) -> dict:
    return body(refund_id, buyer_id=buyer_id, shop_id="S_ANY", paid_amount="99.00")


def test_champion_scores_online_exactly_as_offline(world: dict, settings: Settings) -> None:
    offline = _online_features(world)
    columns = list(features.FEATURE_COLUMNS)
    expected = world["booster"].predict(offline[columns].to_numpy(dtype=np.float64))
    expected = pd.Series(expected, index=offline.index)
    buyers = offline.index[:40]
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        for i, buyer_id in enumerate(buyers):
            answer = client.post(URL, json=_order_for(buyer_id, f"E{i}"), headers=DECIDER).json()
            assert answer["model"] == {"name": MODEL, "version": world["version"]}
            assert answer["buyer"]["score"] == pytest.approx(expected[buyer_id], abs=1e-12)
            assert answer["buyer"]["threshold"] == pytest.approx(world["threshold"])
            assert answer["buyer"]["premium"] == (expected[buyer_id] <= world["threshold"])


def test_real_world_decisions_follow_the_store(world: dict, settings: Settings) -> None:
    store = sqlite3.connect(world["store"])
    revoked = store.execute("SELECT buyer_id FROM buyers WHERE revoked = 1 LIMIT 1").fetchone()[0]
    eligible = store.execute("SELECT shop_id FROM shops WHERE eligible = 1 LIMIT 1").fetchone()[0]
    ineligible = store.execute("SELECT shop_id FROM shops WHERE eligible = 0 LIMIT 1").fetchone()
    offline = _online_features(world)
    columns = list(features.FEATURE_COLUMNS)
    scores = pd.Series(world["booster"].predict(offline[columns].to_numpy()), index=offline.index)
    counts = dict(store.execute("SELECT buyer_id, order_count FROM buyers").fetchall())
    revoked_ids = {r[0] for r in store.execute("SELECT buyer_id FROM buyers WHERE revoked = 1")}
    premium = [
        b
        for b in scores.index[scores <= world["threshold"]]
        if counts[b] >= 3 and b not in revoked_ids
    ]
    with TestClient(create_app(settings)) as client:
        answer = client.post(
            URL, json=body("W1", buyer_id=revoked, shop_id=eligible), headers=DECIDER
        ).json()
        assert "BUYER_REVOKED" in codes(answer)
        answer = client.post(
            URL, json=body("W2", buyer_id=premium[0], shop_id=eligible), headers=DECIDER
        ).json()
        assert answer["decision"] == "auto_approve", answer
        if ineligible:
            answer = client.post(
                URL, json=body("W3", buyer_id=premium[1], shop_id=ineligible[0]), headers=DECIDER
            ).json()
            assert codes(answer) == ["SHOP_NOT_ELIGIBLE"]
        shop = client.get(f"/v1/admin/shops/{eligible}", headers=ADMIN).json()
        assert "tracking_after_refund" in shop["metrics"]


class _Server:
    def __init__(self, settings: Settings):
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=0, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live(settings: Settings) -> Iterator[str]:
    with _Server(settings) as url:
        yield url


def test_reload_under_concurrent_requests_loses_none(
    world: dict, settings: Settings, live: str
) -> None:
    buyers = list(_online_features(world).index[:50])
    version_2, _, _ = register_champion(
        world["uri"], world["root"] / "artifacts", world["frame"], world["y"], seed=3
    )
    per_thread, threads = 60, 4

    def fire(thread: int) -> list[tuple[int, str | None]]:
        seen = []
        with httpx.Client(base_url=live, headers=DECIDER, timeout=30) as http:
            for i in range(per_thread):
                payload = _order_for(buyers[i % len(buyers)], f"C{thread}-{i}")
                response = http.post(URL, json=payload)
                version = response.json()["model"]["version"] if response.is_success else None
                seen.append((response.status_code, version))
        return seen

    with ThreadPoolExecutor(threads + 1) as pool:
        futures = [pool.submit(fire, t) for t in range(threads)]
        time.sleep(0.3)
        with httpx.Client(base_url=live, headers=ADMIN, timeout=60) as admin:
            reload = admin.post("/v1/admin/model/reload")
        results = [r for f in futures for r in f.result()]

    assert reload.status_code == 200
    assert reload.json()["model"]["version"] == version_2
    assert len(results) == per_thread * threads
    assert all(status == 200 for status, _ in results)
    assert {v for _, v in results} <= {world["version"], version_2}
    with httpx.Client(base_url=live, headers=DECIDER) as http:
        after = http.post(URL, json=_order_for(buyers[0], "C-after")).json()
    assert after["model"]["version"] == version_2
    with sqlite3.connect(settings.audit_path) as audit:
        assert audit.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == len(results) + 1


def test_a_broken_model_file_fails_closed_and_keeps_the_last_good_model(
    world: dict, settings: Settings, tmp_path: Path
) -> None:
    artifacts = tmp_path / "broken-artifacts"
    version, _, _ = register_champion(
        world["uri"], artifacts, world["frame"], world["y"], seed=1, alias=None
    )
    for model_file in artifacts.rglob("model.lgb"):
        model_file.write_text("this is not a LightGBM model")
    client_ml = MlflowClient(world["uri"])
    good = str(client_ml.get_model_version_by_alias(MODEL, "champion").version)
    buyer = str(_online_features(world).index[0])
    with TestClient(create_app(settings)) as client:
        client_ml.set_registered_model_alias(MODEL, "champion", version)
        try:
            reload = client.post("/v1/admin/model/reload", headers=ADMIN)
            assert reload.status_code == 503
            answer = client.post(URL, json=_order_for(buyer, "BR1"), headers=DECIDER).json()
            assert answer["model"]["version"] == good
            with TestClient(create_app(settings)) as fresh:
                answer = fresh.post(URL, json=_order_for(buyer, "BR2"), headers=DECIDER).json()
                assert answer["decision"] == "manual_review"
                assert "SCORE_UNAVAILABLE" in codes(answer)
                assert fresh.get("/readyz").status_code == 503
        finally:
            client_ml.set_registered_model_alias(MODEL, "champion", good)


def test_no_champion_alias_fails_closed(world: dict, tmp_path: Path) -> None:
    settings = Settings(
        store_path=world["store"],
        audit_path=tmp_path / "audit.db",
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'empty-mlflow.db'}",
    )
    buyer = str(_online_features(world).index[0])
    with TestClient(create_app(settings)) as client:
        answer = client.post(URL, json=_order_for(buyer, "NA1"), headers=DECIDER).json()
        assert answer["decision"] == "manual_review"
        assert "SCORE_UNAVAILABLE" in codes(answer)
        assert answer["model"]["version"] is None
