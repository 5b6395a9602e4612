"""The same decisions on SQLite and on PostgreSQL: one sequence of requests (approvals up to
the velocity limits, replays, 409s, batches, a revocation and a restore, the loss budget,
rules failing) gets the same answers, byte for byte, from the app on either backend, and the
audit logs hold the same records."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from serving.__main__ import app
from serving.config import Settings
from serving.database import ensure_schema
from serving.export import export_decisions as export_sqlite
from serving.postgres_export import export_decisions as export_postgres
from serving.postgres_store import write_snapshot as write_pg_snapshot
from serving.records import StoreMeta
from tests.serving.conftest import (
    ADMIN,
    BUYERS,
    COLUMNS,
    DAY,
    DECIDER,
    NOW,
    SHOPS,
    URL,
    Clock,
    body,
    write_test_store,
)

DEFAULT_POLICY_PATH = Path(__file__).resolve().parents[2] / "serving" / "policy.yaml"


def write_pg_test_store(url: str) -> None:
    """`write_test_store`'s snapshot, in PostgreSQL."""
    meta = StoreMeta("2025-06-15", "test-v1", COLUMNS, "2025-06-15T00:00:00+00:00", "test")
    buyers = [
        (b, NOW - age * DAY, n, np.array([hint, float(n)]).tobytes(), int(r is not None), r)
        for b, (hint, n, age, r) in BUYERS.items()
    ]
    shops = [
        (s, int(ok), why, json.dumps({"tracking_after_refund": 0}))
        for s, (ok, why) in SHOPS.items()
    ]
    ensure_schema(url)
    write_pg_snapshot(url, meta, buyers, shops)


def sequence(client: TestClient, clock: Clock) -> list[tuple[int, object]]:
    """Every answer of one fixed sequence of requests, in order."""
    out: list[tuple[int, object]] = []

    def post(path: str, payload: dict, headers: dict = DECIDER, method: str = "POST") -> None:
        response = client.request(method, path, json=payload, headers=headers)
        out.append((response.status_code, response.json()))

    for i in range(4):  # the third and fourth hit the daily limit
        post(URL, body(f"RF{i}"))
    post(URL, body("RF0"))  # a replay
    post(URL, body("RF0", paid_amount="10.00"))  # same refund_id, another body: 409
    for buyer in ("B_BAD", "B_FEW", "B_YOUNG", "B_REVOKED", "B_NAN", "B_EDGE", "B_UNKNOWN"):
        post(URL, body(f"RF-{buyer}", buyer_id=buyer))
    post(URL, body("RF-late", shop_id="S_LATE"))
    post(URL, body("RF-big", paid_amount="300.00", buyer_id="B_GOOD2"))
    clock.now += DAY  # a new day: the daily window is empty again, the 30-day one is not
    items = [body(f"RB{i}", buyer_id="B_GOOD" if i % 2 else "B_MIN") for i in range(6)]
    items.append(body("RF1"))  # a replay inside a batch
    post(f"{URL}/batch", {"requests": items})
    revoke = {"reason": "chargeback ring"}
    post("/v1/admin/buyers/B_GOOD2/revoke", revoke, ADMIN)
    post(URL, body("RF-revoked", buyer_id="B_GOOD2"))
    post("/v1/admin/buyers/B_GOOD2/restore", {"reason": "cleared"}, ADMIN)
    post(URL, body("RF-restored", buyer_id="B_GOOD2"))
    post("/v1/admin/shops/S_OK/eligibility", {"eligible": False, "reason": "audit"}, ADMIN, "PUT")
    post(URL, body("RF-shop", buyer_id="B_GOOD2"))
    for day in range(2, 7):  # across days, up to the 30-day limit
        clock.now += DAY
        post(URL, body(f"RM{day}", buyer_id="B_MIN"))
    return out


def _rows(answers: list[tuple[int, object]]) -> str:
    return json.dumps(answers, sort_keys=True)


def loss_budget_policy(tmp_path: Path) -> Path:
    policy = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    policy["version"] = "parity-loss-budget"
    policy["loss_budget"] = {"max_per_shop_day_fen": 2000.0, "max_per_buyer_30_days_fen": 700.0}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


@pytest.mark.parametrize("budget", [False, True], ids=["policy", "loss-budget"])
def test_the_same_sequence_gets_the_same_answers_on_sqlite_and_postgres(
    budget: bool,
    tmp_path: Path,
    pg_url: str,
    settings: Settings,
    champion_loader: Callable,
    make_client: Callable[..., TestClient],
    clock: Clock,
) -> None:
    policy = loss_budget_policy(tmp_path) if budget else None
    sqlite = settings.model_copy(update={"policy_path": policy})
    write_pg_test_store(pg_url)
    postgres = sqlite.model_copy(
        update={"database_url": Settings(database_url=pg_url).database_url}
    )
    start = clock.now
    on_sqlite = sequence(make_client(sqlite), clock)
    clock.now = start
    on_postgres = sequence(make_client(postgres), clock)
    assert _rows(on_postgres) == _rows(on_sqlite)
    statuses = [status for status, _ in on_sqlite]
    assert 409 in statuses and all(s in (200, 409) for s in statuses), statuses
    decided = [a for _, a in on_sqlite if isinstance(a, dict) and "decision" in a]
    assert any(a["decision"] == "auto_approve" for a in decided)
    assert any("VELOCITY" in json.dumps(a) for a in decided)
    if budget:
        assert any("LOSS_BUDGET_EXCEEDED" in json.dumps(a) for a in decided)
    columns = "refund_id, request_hash, buyer_id, decision, decided_at, response, features"
    import sqlite3

    with sqlite3.connect(sqlite.audit_path) as conn:
        lite = conn.execute(f"SELECT {columns} FROM decisions ORDER BY refund_id").fetchall()
    with psycopg.connect(pg_url) as conn:
        pg = conn.execute(f"SELECT {columns} FROM decisions ORDER BY refund_id").fetchall()
    assert [tuple(r[:6]) + (bytes(r[6]),) for r in pg] == [tuple(r) for r in lite]
    assert len(lite) > 20
    # export-decisions gives the same table from either log (the CLI picks PostgreSQL when
    # FASTREFUND_DATABASE_URL is set and no --audit is given).
    exported_lite = export_sqlite(sqlite.audit_path)
    exported_pg = export_postgres(pg_url)
    pd.testing.assert_frame_equal(exported_pg, exported_lite)
    assert (exported_pg["reasons"] != "").any() and len(exported_pg) == len(lite)
    out = tmp_path / "pg.csv"
    result = CliRunner().invoke(
        app, ["export-decisions", "--out", str(out)], env={"FASTREFUND_DATABASE_URL": pg_url}
    )
    assert result.exit_code == 0, result.output
    assert f"{len(lite):,} decisions" in result.output


def test_a_new_snapshot_keeps_the_overrides_and_swaps_at_once(
    pg_url: str, settings: Settings, champion_loader: Callable, make_client: Callable
) -> None:
    write_pg_test_store(pg_url)
    postgres = settings.model_copy(
        update={"database_url": Settings(database_url=pg_url).database_url}
    )
    client = make_client(postgres)
    revoked = client.post("/v1/admin/buyers/B_GOOD/revoke", json={"reason": "ring"}, headers=ADMIN)
    assert revoked.status_code == 200 and revoked.json()["revoked"]
    write_pg_test_store(pg_url)  # materialized again
    view = client.get("/v1/admin/buyers/B_GOOD", headers=ADMIN).json()
    assert view["revoked"] and view["revoked_reason"] == "ring"
    answer = client.post(URL, json=body("RF-after"), headers=DECIDER).json()
    assert answer["decision"] == "manual_review"
    with psycopg.connect(pg_url) as conn:
        snapshots = conn.execute("SELECT count(*) FROM store_snapshots").fetchone()
        buyers = conn.execute("SELECT count(DISTINCT snapshot_id) FROM store_buyers").fetchone()
    assert snapshots == (1,) and buyers == (1,)  # the old snapshot went in the same commit
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text


def test_sqlite_store_fixture_is_the_same_snapshot(tmp_path: Path) -> None:
    # The parity above needs both stores to hold the same rows.
    write_test_store(tmp_path / "s.db")
    import sqlite3

    with sqlite3.connect(tmp_path / "s.db") as conn:
        assert conn.execute("SELECT count(*) FROM buyers").fetchone() == (len(BUYERS),)
