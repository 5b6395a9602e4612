"""Several API instances on one PostgreSQL: the concurrency figure and the throughput figures.

Builds a simulated world (benchmarks/reliability.py's: a log, a registry with a trained
champion), starts a throwaway PostgreSQL 15 cluster (tests/pg.py), materializes the online
store into it with `python -m serving materialize` (which migrates the new database), then:

1. concurrency, `--rounds` rounds (default 50): each round takes a new premium buyer with
   enough history at an eligible shop and fires `--parallel` (default 8) requests for them
   at once, spread over two `python -m serving run` instances on the same database; the
   auto-approvals granted must be the daily velocity limit exactly (2), every round. Also
   the same refund_id sent at once to both instances: one record, the same answer twice;
2. throughput and latency with bench_serving.py's load generator (wrk, 16 connections, each
   request a new refund): one instance on SQLite, one on PostgreSQL, two on PostgreSQL (one
   wrk per instance, run together), flat out and paced at `--rate` (1,500/s in total).

Run: `.venv/bin/python benchmarks/bench_postgres.py` (needs wrk for part 2:
`apt-get install -y wrk`; `--rounds 50 --seconds 15` are the defaults).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the repository's packages and tests
    sys.path.insert(0, str(ROOT))

from benchmarks.reliability import (  # noqa: E402
    ADMIN_TOKEN,
    DECIDER,
    PYTHON,
    URL,
    Server,
    World,
    build_world,
    server_env,
)
from serving.policy import load_policy  # noqa: E402

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def pg_env(world: World, url: str, audit: Path, **extra: str) -> dict:
    """A server's environment on `world` with its store and audit log in PostgreSQL."""
    return server_env(world, audit, FASTREFUND_DATABASE_URL=url, **extra)


def materialize_into(world: World, url: str) -> str:
    """`python -m serving materialize` into the database (migrating it first); its output."""
    import subprocess

    env = pg_env(world, url, world.root / "unused-audit.db")
    done = subprocess.run(
        [PYTHON, "-m", "serving", "materialize", "--data", str(world.log_dir)]
        + ["--as-of", world.as_of[1]],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


@contextmanager
def instances(world: World, url: str, work: Path, count: int = 2) -> Iterator[list[Server]]:
    """`count` instances of `python -m serving run` on one database, each on its own port."""
    servers = [
        Server(pg_env(world, url, work / f"unused-{i}.db"), work / f"server-{i}.log")
        for i in range(count)
    ]
    with ExitStack() as stack:
        for server in servers:  # one at a time: two cold starts at once take twice as long
            server.start()
            stack.callback(server.stop)
        yield servers


def premium_candidates(world: World, url: str, server: Server, wanted: int) -> list[str]:
    """Buyers every rule but velocity would approve: known, premium by the champion, at
    least the policy's history (orders, account age), not revoked; in the order found."""
    policy = load_policy()
    oldest = time.time() - policy.min_history.account_age_days * 86_400 - 86_400
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT b.buyer_id FROM store_buyers AS b JOIN store_current AS c "
            "ON c.snapshot_id = b.snapshot_id WHERE NOT b.revoked AND b.order_count >= %s "
            "AND b.registered_at < %s ORDER BY b.buyer_id",
            (policy.min_history.orders, oldest),
        ).fetchall()
    found: list[str] = []
    with httpx.Client(base_url=server.base, headers=ADMIN, timeout=10) as client:
        for (buyer,) in rows:
            view = client.get(f"/v1/admin/buyers/{buyer}").json()
            if view.get("premium") and view.get("known"):
                found.append(buyer)
                if len(found) == wanted:
                    break
    return found


def eligible_shop(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT s.shop_id FROM store_shops AS s JOIN store_current AS c "
            "ON c.snapshot_id = s.snapshot_id WHERE s.eligible ORDER BY s.shop_id LIMIT 1"
        ).fetchone()
    if row is None:
        raise RuntimeError("no eligible shop in the store")
    return row[0]


def request(refund_id: str, buyer: str, shop: str) -> dict:
    return {
        "refund_id": refund_id,
        "requested_at": "2026-06-01T02:00:00Z",
        "kind": "refund_only",
        "order": {
            "order_id": f"O-{refund_id}",
            "buyer_id": buyer,
            "shop_id": shop,
            "category": "apparel",
            "is_virtual": False,
            "is_custom": False,
            "paid_amount": "99.00",
            "currency": "CNY",
            "status": "paid_unshipped",
            "tracking_number": None,
        },
    }


def at_once(servers: list[Server], payloads: list[dict]) -> list[tuple[int, dict]]:
    """POST every payload at the same moment (a barrier), payload i to server i mod n."""
    barrier = threading.Barrier(len(payloads))
    results: list[tuple[int, dict] | None] = [None] * len(payloads)
    clients = [httpx.Client(base_url=s.base, headers=DECIDER, timeout=30) for s in servers]

    def send(i: int) -> None:
        client = clients[i % len(clients)]
        barrier.wait()
        response = client.post(URL, json=payloads[i])
        results[i] = (response.status_code, response.json())

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(payloads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client in clients:
        client.close()
    return [r for r in results if r is not None]


@dataclass
class ConcurrencyReport:
    rounds: int = 0
    parallel: int = 0
    limit: int = 0
    exact: int = 0  # rounds whose approvals were the limit exactly
    approvals: list[int] = field(default_factory=list)
    other_status: int = 0  # answers that were not 200
    same_id_rounds: int = 0
    same_id_records: list[int] = field(default_factory=list)  # records per refund_id
    same_id_answers_equal: int = 0


def concurrency(
    world: World, url: str, servers: list[Server], rounds: int, parallel: int, seed: int = 0
) -> ConcurrencyReport:
    """The velocity rounds and the same-refund_id rounds (see the module's docstring)."""
    limit = load_policy().velocity.max_auto_approvals_per_day
    report = ConcurrencyReport(rounds=rounds, parallel=parallel, limit=limit)
    buyers = premium_candidates(world, url, servers[0], rounds + rounds)
    if len(buyers) < rounds + rounds:
        raise RuntimeError(f"only {len(buyers)} premium buyers for {rounds} rounds")
    shop = eligible_shop(url)
    tag = f"{seed}-{random.Random(seed).randrange(10**6)}"
    for r in range(rounds):
        buyer = buyers[r]
        payloads = [request(f"V{tag}-{r}-{i}", buyer, shop) for i in range(parallel)]
        answers = at_once(servers, payloads)
        report.other_status += sum(status != 200 for status, _ in answers)
        approved = sum(a.get("decision") == "auto_approve" for _, a in answers)
        report.approvals.append(approved)
        report.exact += approved == limit
        # The same refund_id to both instances at once: one record, one answer twice.
        same = request(f"D{tag}-{r}", buyers[rounds + r], shop)
        twice = at_once(servers, [same, same])
        report.same_id_rounds += 1
        report.other_status += sum(status != 200 for status, _ in twice)
        (_, first), (_, second) = twice
        strip = {"replayed"}
        report.same_id_answers_equal += {k: v for k, v in first.items() if k not in strip} == {
            k: v for k, v in second.items() if k not in strip
        } and sorted([first.get("replayed"), second.get("replayed")]) == [False, True]
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT refund_id, count(*) FROM decisions WHERE refund_id LIKE %s GROUP BY 1",
            (f"D{tag}-%",),
        ).fetchall()
    report.same_id_records = sorted(n for _, n in rows)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--buyers", type=int, default=1500, help="simulated buyers")
    parser.add_argument("--seconds", type=int, default=15, help="duration of each wrk run")
    parser.add_argument("--rate", type=int, default=1500, help="decisions/s offered in total")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    from tests.pg import PgCluster

    with tempfile.TemporaryDirectory(prefix="bench-postgres-") as tmp:
        work = Path(tmp)
        print("building the world (simulate, materialize, train)...", flush=True)
        world = build_world(work / "world", buyers=args.buyers)
        cluster = PgCluster.create(fsync=True)
        try:
            url = cluster.create_database()
            print(materialize_into(world, url).strip(), flush=True)
            with instances(world, url, work) as servers:
                report = concurrency(world, url, servers, args.rounds, args.parallel)
                print(f"concurrency: {json.dumps(report.__dict__)}", flush=True)
            if not args.skip_throughput:
                from benchmarks.postgres_load import throughput

                throughput(world, cluster, work, args.seconds, args.rate)
        finally:
            cluster.destroy()


if __name__ == "__main__":
    main()
