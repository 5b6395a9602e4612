"""PostgreSQL down, then back; connections killed between requests: decisions answer 503
(nothing approved, nothing recorded), /readyz is not ready, and the instance recovers
without a restart; no refund is ever recorded twice."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from serving.config import Settings
from tests.pg import PgCluster
from tests.serving.conftest import DECIDER, URL, body
from tests.serving.test_postgres_parity import write_pg_test_store


@pytest.fixture
def own_cluster() -> Iterator[PgCluster]:
    """A cluster of this test's own: it is stopped and started."""
    cluster = PgCluster.create()
    yield cluster
    cluster.destroy()


def _until_200(client: TestClient, payload: dict, seconds: float = 15.0) -> tuple[dict, int]:
    """Send until answered 200; the answer and how many 503s came first."""
    deadline = time.monotonic() + seconds
    refused = 0
    while time.monotonic() < deadline:
        response = client.post(URL, json=payload, headers=DECIDER)
        if response.status_code == 200:
            return response.json(), refused
        assert response.status_code == 503, response.text
        refused += 1
        time.sleep(0.1)
    raise AssertionError(f"not answered within {seconds} s ({refused} refusals)")


def test_postgres_down_is_503_and_not_ready_then_recovers_without_restart(
    own_cluster: PgCluster,
    settings: Settings,
    champion_loader: Callable,
    make_client: Callable[..., TestClient],
) -> None:
    url = own_cluster.create_database()
    write_pg_test_store(url)
    postgres = settings.model_copy(update={"database_url": Settings(database_url=url).database_url})
    client = make_client(postgres)
    assert client.post(URL, json=body("RF-up"), headers=DECIDER).json()["decision"] == (
        "auto_approve"
    )
    own_cluster.stop()
    for i in range(5):
        down = client.post(URL, json=body(f"RF-down-{i}", buyer_id="B_GOOD2"), headers=DECIDER)
        assert down.status_code == 503, down.text  # never an answer, never an approval
        assert "fall back to merchant review" in down.text
    ready = client.get("/readyz")
    assert ready.status_code == 503 and not ready.json()["ready"]
    password = url.split("@")[0].split(":")[-1]
    assert password not in ready.text
    assert password not in client.get("/metrics").text
    own_cluster.start()
    answer, _ = _until_200(client, body("RF-down-0", buyer_id="B_GOOD2"))
    assert answer["decision"] == "auto_approve" and not answer["replayed"]  # decided anew
    deadline = time.monotonic() + 10
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").text
        time.sleep(0.1)

    # Every server connection killed between requests (a failover, a proxy restart): the
    # next requests may be refused, none is approved twice, and service resumes by itself.
    with psycopg.connect(url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'fastrefund'"
        ).fetchone()
    assert killed is not None and killed[0] >= 1
    again, _ = _until_200(client, body("RF-down-0", buyer_id="B_GOOD2"))
    assert again["replayed"] and again["decision"] == "auto_approve"  # the stored answer
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT refund_id FROM decisions ORDER BY 1").fetchall()
    assert rows == [("RF-down-0",), ("RF-up",)]
