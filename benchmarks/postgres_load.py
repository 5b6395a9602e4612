"""bench_postgres.py's throughput part: bench_serving.py's wrk load generator against one
instance on SQLite, one on PostgreSQL and two on PostgreSQL, in the same run.

Each configuration gets a 3 s warm-up, then a flat-out run and a run paced at `rate` in
total (two instances: one wrk each at rate / 2, run together; 16 connections in all). Every
request is a new refund_id; the decisions committed are counted in the audit log afterwards.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import psycopg

from benchmarks.bench_postgres import instances
from benchmarks.reliability import DECIDER_TOKEN, Server, World, server_env
from tests.pg import PgCluster


def _loaders():  # bench_serving is a script of benchmarks/ (it imports its siblings so)
    import bench_serving

    return bench_serving


def _script(world: World, prefix: str, rate: int | None, threads: int = 2) -> str:
    bs = _loaders()
    quoted = ",".join(f'"{b}"' for b in world.buyers)
    shops = ",".join(f'"{s}"' for s in world.shops)
    fill = {"buyers": quoted, "shops": shops, "token": DECIDER_TOKEN}
    script = bs.LUA_SINGLE % {**fill, "prefix": prefix, "wrap": bs.WRAP_SINGLE}
    if rate is not None:
        script += bs.LUA_PACE % {"rate": rate, "threads": threads}
    return script


def _run(servers: list[Server], world: World, prefix: str, rate: int | None, seconds: int,
         work: Path) -> dict:  # fmt: skip
    """One wrk per server, together; 16 connections in all, `rate` in total."""
    bs = _loaders()
    results: list[dict] = [{} for _ in servers]
    share = None if rate is None else rate // len(servers)

    def one(i: int) -> None:
        url = f"{servers[i].base}/v1/refund-decisions"
        script = _script(world, f"{prefix}{i}x", share)
        results[i] = bs.wrk(url, script, 16 // len(servers), seconds, work, f"{prefix}{i}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(servers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "rps": sum(r["rps"] for r in results),
        "p50_ms": max(r["p50_ms"] for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),  # the worse instance's
        "errors": sum(r["errors"] for r in results),
        "requests": sum(r["requests"] for r in results),
        "per_instance": results,
    }


def _measure(servers: list[Server], world: World, name: str, seconds: int, rate: int,
             work: Path) -> dict:  # fmt: skip
    _run(servers, world, f"W{name}", None, 3, work)  # warm-up
    flat = _run(servers, world, f"F{name}", None, seconds, work)
    paced = _run(servers, world, f"P{name}", rate, seconds, work)
    return {"flat": flat, "paced": paced}


def _committed_sqlite(audit: Path, prefix: str) -> int:
    with sqlite3.connect(audit) as conn:
        row = conn.execute(
            "SELECT count(*) FROM decisions WHERE refund_id LIKE ?", (f"{prefix}%",)
        ).fetchone()
    return int(row[0])


def _committed_pg(url: str, prefix: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM decisions WHERE refund_id LIKE %s", (f"{prefix}%",)
        ).fetchone()
    return int(row[0]) if row else 0


def throughput(world: World, cluster: PgCluster, work: Path, seconds: int, rate: int) -> dict:
    """The three configurations, one after the other; prints a table and returns the runs."""
    from benchmarks.bench_postgres import materialize_into

    results: dict = {}
    # Durability matched in pairs: SQLite NORMAL (no fsync at commit: a crash of the host
    # can lose the last commits) against PostgreSQL's synchronous_commit=off (the same for
    # the database host), and SQLite FULL against PostgreSQL's default (an fsync a commit).
    for key, synchronous in (("sqlite_1", "NORMAL"), ("sqlite_full_1", "FULL")):
        audit = work / f"audit-{key}.db"
        server = Server(server_env(world, audit, synchronous), work / f"{key}.log")
        server.start()
        name = key.replace("_", "")
        try:
            results[key] = _measure([server], world, name, seconds, rate, work)
        finally:
            server.stop()
        results[key]["committed"] = _committed_sqlite(audit, f"F{name}") + _committed_sqlite(
            audit, f"P{name}"
        )
    for key, count, options in (
        ("pg_1", 1, ""),
        ("pg_2", 2, ""),
        ("pg_async_1", 1, "?options=-csynchronous_commit%3Doff"),
        ("pg_async_2", 2, "?options=-csynchronous_commit%3Doff"),
    ):
        url = cluster.create_database()  # a fresh database each: no history to count
        materialize_into(world, url)
        name = key.replace("_", "")
        with instances(world, url + options, work, count) as servers:
            results[key] = _measure(servers, world, name, seconds, rate, work)
        results[key]["committed"] = _committed_pg(url, f"F{name}") + _committed_pg(url, f"P{name}")
    (work / "postgres-results.json").write_text(json.dumps(results, indent=2))
    base = results["sqlite_1"]["flat"]["rps"]
    paced_head = f"paced at {rate:,}/s in total: decisions/s, p50, p99"
    print(
        f"| configuration | flat out: decisions/s, p50, p99 | {paced_head} | errors | committed |"
    )
    print("|---|---|---|---|---|")
    for key, label in (
        ("sqlite_1", "1 instance, SQLite NORMAL (the default)"),
        ("pg_async_1", "1 instance, PostgreSQL, synchronous_commit=off"),
        ("pg_async_2", "2 instances, one PostgreSQL, synchronous_commit=off"),
        ("sqlite_full_1", "1 instance, SQLite FULL"),
        ("pg_1", "1 instance, PostgreSQL (default: synchronous_commit=on)"),
        ("pg_2", "2 instances, one PostgreSQL (synchronous_commit=on)"),
    ):
        f, p = results[key]["flat"], results[key]["paced"]
        print(
            f"| {label} | {f['rps']:,.0f}/s ({f['rps'] / base:.2f}x SQLite), "
            f"p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms | {p['rps']:,.0f}/s, "
            f"p50 {p['p50_ms']:.1f} ms, p99 {p['p99_ms']:.1f} ms | "
            f"{f['errors'] + p['errors']} | {results[key]['committed']:,} of "
            f"{f['requests'] + p['requests']:,} answers |"
        )
    return results
