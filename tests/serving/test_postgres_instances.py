"""Two `python -m serving run` instances on one PostgreSQL, driven at once over HTTP: a
buyer's parallel requests spread over both get exactly the daily velocity limit of
approvals, the same refund_id sent to both at once is one record (one answer, its replay),
and a revocation made on one instance holds on the other from its next request.

A few rounds of benchmarks/bench_postgres.py's 50 (docs/benchmarks.md has the figure).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg
import pytest

from benchmarks.bench_postgres import (
    ADMIN,
    DECIDER,
    URL,
    World,
    build_world,
    concurrency,
    eligible_shop,
    instances,
    materialize_into,
    premium_candidates,
    request,
)
from tests.pg import PgCluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("pg-world"), buyers=800)


def test_two_instances_hold_velocity_idempotency_and_revocations(
    world: World, pg_cluster: PgCluster, tmp_path: Path
) -> None:
    url = pg_cluster.create_database()
    out = materialize_into(world, url)  # a new database: materialize migrates it first
    assert "PostgreSQL" in out and url.split("@")[0].split(":")[-1] not in out
    with instances(world, url, tmp_path) as servers:
        report = concurrency(world, url, servers, rounds=4, parallel=8, seed=1)
        assert report.other_status == 0, report
        assert report.approvals == [report.limit] * 4, report  # never more, never fewer
        assert report.same_id_records == [1] * 4, report
        assert report.same_id_answers_equal == 4, report

        # A revocation on instance 0 holds on instance 1 from its next request.
        buyer = premium_candidates(world, url, servers[0], 40)[-1]
        shop = eligible_shop(url)
        first, second = (httpx.Client(base_url=s.base, timeout=10) for s in servers)
        revoked = first.post(
            f"/v1/admin/buyers/{buyer}/revoke", json={"reason": "ring"}, headers=ADMIN
        )
        assert revoked.status_code == 200 and revoked.json()["revoked"]
        answer = second.post(URL, json=request("REV-1", buyer, shop), headers=DECIDER).json()
        assert answer["decision"] == "manual_review"
        assert "BUYER_REVOKED" in [r["code"] for r in answer["reasons"]], answer
        restored = second.post(
            f"/v1/admin/buyers/{buyer}/restore", json={"reason": "cleared"}, headers=ADMIN
        )
        assert restored.status_code == 200 and not restored.json()["revoked"]
        answer = first.post(URL, json=request("REV-2", buyer, shop), headers=DECIDER).json()
        assert answer["decision"] == "auto_approve", answer
        assert second.get("/readyz").status_code == 200
        first.close()
        second.close()
    password = url.split("@")[0].split(":")[-1]
    for log in tmp_path.glob("server-*.log"):
        assert password not in log.read_text()  # nor anywhere the instances wrote
    with psycopg.connect(url) as conn:  # what was committed, not only what was answered
        most = conn.execute(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM decisions "
            "WHERE decision = 'auto_approve' GROUP BY buyer_id) AS per_buyer"
        ).fetchone()
    assert most == (report.limit,)
