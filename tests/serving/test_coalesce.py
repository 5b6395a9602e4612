"""Micro-batching of single decisions: requests of one event-loop turn are decided together,
each answered as it would have been alone; a failure reaches every caller of its group."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import httpx
import pytest

from serving.app import create_app
from serving.audit import AuditUnavailable
from serving.coalesce import Coalescer
from serving.config import Settings
from tests.serving.conftest import DECIDER, Clock, body, codes

URL = "/v1/refund-decisions"


class Recorder:
    """A stand-in for `Service.decide` that records the groups it was given."""

    def __init__(self, fail: bool = False):
        self.groups: list[list[str]] = []
        self.fail = fail

    def __call__(self, requests: Sequence) -> list:
        self.groups.append(list(requests))
        if self.fail:
            raise AuditUnavailable("audit log: disk full")
        return [f"answer to {r}" for r in requests]


def test_requests_of_one_turn_are_decided_together_in_order() -> None:
    decide = Recorder()
    sizes: list[int] = []

    async def main() -> list:
        coalescer = Coalescer(decide, max_batch=64, on_flush=sizes.append)
        together = await asyncio.gather(*(coalescer.decide(f"R{i}") for i in range(5)))
        alone = await coalescer.decide("R5")
        return [*together, alone]

    answers = asyncio.run(main())
    assert decide.groups == [["R0", "R1", "R2", "R3", "R4"], ["R5"]]
    assert answers == [f"answer to R{i}" for i in range(6)]
    assert sizes == [5, 1]


def test_a_group_is_at_most_max_batch() -> None:
    decide = Recorder()

    async def main() -> list:
        coalescer = Coalescer(decide, max_batch=2)
        return await asyncio.gather(*(coalescer.decide(f"R{i}") for i in range(5)))

    assert asyncio.run(main()) == [f"answer to R{i}" for i in range(5)]
    assert decide.groups == [["R0", "R1"], ["R2", "R3"], ["R4"]]


def test_a_failed_group_fails_every_caller_in_it() -> None:
    async def main() -> list:
        coalescer = Coalescer(Recorder(fail=True))
        return await asyncio.gather(
            *(coalescer.decide(f"R{i}") for i in range(3)), return_exceptions=True
        )

    results = asyncio.run(main())
    assert all(isinstance(r, AuditUnavailable) for r in results)


def test_one_bad_request_fails_alone_and_its_group_is_decided_one_by_one() -> None:
    calls: list[list[str]] = []

    def decide(requests: Sequence[str]) -> list[str]:
        calls.append(list(requests))
        if "BAD" in requests:
            raise RuntimeError("a bug on this row")
        return [f"answer to {r}" for r in requests]

    async def main() -> list:
        coalescer = Coalescer(decide)
        names = ["R0", "BAD", "R2"]
        return await asyncio.gather(
            *(coalescer.decide(name) for name in names), return_exceptions=True
        )

    first, bad, third = asyncio.run(main())
    assert (first, third) == ("answer to R0", "answer to R2")
    assert isinstance(bad, RuntimeError)
    assert calls == [["R0", "BAD", "R2"], ["R0"], ["BAD"], ["R2"]]


def test_a_failing_flush_metric_does_not_hold_the_answers() -> None:
    def broken_metric(size: int) -> None:
        raise ValueError("metric down")

    async def main() -> list:
        coalescer = Coalescer(Recorder(), on_flush=broken_metric)
        together = await asyncio.gather(*(coalescer.decide(f"R{i}") for i in range(3)))
        return [*together, await asyncio.wait_for(coalescer.decide("R3"), timeout=5)]

    assert asyncio.run(main()) == [f"answer to R{i}" for i in range(4)]


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Coalescer(Recorder(), max_batch=0)


def test_concurrent_requests_get_the_answers_they_would_get_one_by_one(
    settings: Settings, clock: Clock, champion_loader: object
) -> None:
    """Sent at once through the real app (one group), and one by one (a fresh audit log):
    the same decisions, velocity counts, replays and 409s."""
    requests = [
        body("C1"),
        body("C2"),
        body("C3"),  # the buyer's third approval today: VELOCITY_LIMIT
        body("C1"),  # the same request again: a replay
        body("C2", paid_amount="10.00"),  # another request under C2: 409
        body("C4", paid_amount="300.00"),
        body("C5", buyer_id="B_GOOD2"),
    ]

    async def run(app_settings: Settings, at_once: bool) -> tuple[list, str]:
        app = create_app(app_settings, clock=clock)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                post = lambda payload: client.post(URL, json=payload, headers=DECIDER)  # noqa: E731
                if at_once:
                    replies = await asyncio.gather(*(post(r) for r in requests))
                else:
                    replies = [await post(r) for r in requests]
                metrics = (await client.get("/metrics")).text
        return [(r.status_code, r.json()) for r in replies], metrics

    together, metrics = asyncio.run(run(settings, at_once=True))
    alone_settings = settings.model_copy(
        update={"audit_path": settings.audit_path.with_name("alone.db")}
    )
    alone, _ = asyncio.run(run(alone_settings, at_once=False))

    assert [status for status, _ in together] == [200, 200, 200, 200, 409, 200, 200]
    assert together == alone
    decisions = [answer.get("decision") for _, answer in together]
    assert decisions[:3] == ["auto_approve", "auto_approve", "manual_review"]
    assert codes(together[2][1]) == ["VELOCITY_LIMIT"]
    assert together[3][1]["replayed"] is True
    # Grouped: fewer audit transactions than requests.
    count = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith('fastrefund_decisions_per_transaction_count{route="single"}')
    )
    assert count < len(requests)


def test_threaded_flushes_overlap_and_requests_meanwhile_wait_in_one_group() -> None:
    """workers=2 (PostgreSQL): two flushes are in flight at once, each answered only when its
    `decide` returned; what arrives while both are busy goes as one group to the first free."""
    both_in = threading.Barrier(2, timeout=5)
    release = threading.Event()
    groups: list[list[str]] = []

    def decide(requests: Sequence[str]) -> list[str]:
        groups.append(list(requests))
        if len(groups) <= 2:
            both_in.wait()  # fails (BrokenBarrierError) unless the two flushes overlap
            release.wait(5)
        return [f"answer to {r}" for r in requests]

    async def main() -> list:
        coalescer = Coalescer(decide, max_batch=1, workers=2)
        first = [asyncio.ensure_future(coalescer.decide(f"R{i}")) for i in range(2)]
        await asyncio.sleep(0.05)
        later = [asyncio.ensure_future(coalescer.decide(f"L{i}")) for i in range(3)]
        await asyncio.sleep(0.05)
        assert not any(task.done() for task in first + later)  # none before its decide ended
        coalescer.max_batch = 64
        release.set()
        answers = await asyncio.gather(*first, *later)
        await coalescer.drain()
        return answers

    answers = asyncio.run(main())
    assert answers == [f"answer to {r}" for r in ("R0", "R1", "L0", "L1", "L2")]
    assert sorted(groups[:2]) == [["R0"], ["R1"]]
    assert sorted(sum(groups[2:], [])) == ["L0", "L1", "L2"] and len(groups) <= 4


def test_threaded_failures_fall_back_one_by_one_in_the_thread() -> None:
    loop_thread = threading.get_ident()
    threads: set[int] = set()

    def decide(requests: Sequence[str]) -> list[str]:
        threads.add(threading.get_ident())
        if "BAD" in requests:
            raise RuntimeError("a bug on this row")
        if "DOWN" in requests:
            raise AuditUnavailable("database down")
        return [f"answer to {r}" for r in requests]

    async def main() -> tuple[list, list]:
        coalescer = Coalescer(decide, workers=2)
        mixed = await asyncio.gather(
            *(coalescer.decide(n) for n in ("R0", "BAD", "R2")), return_exceptions=True
        )
        down = await asyncio.gather(
            *(coalescer.decide(n) for n in ("R3", "DOWN")), return_exceptions=True
        )
        await coalescer.drain()
        return mixed, down

    (first, bad, third), down = asyncio.run(main())
    assert (first, third) == ("answer to R0", "answer to R2")
    assert isinstance(bad, RuntimeError)
    assert all(isinstance(r, AuditUnavailable) for r in down)
    assert threads and loop_thread not in threads  # never decided on the loop


def test_drain_waits_for_the_flush_of_a_caller_that_went_away() -> None:
    decided: list[str] = []

    def decide(requests: Sequence[str]) -> list[str]:
        time.sleep(0.1)
        decided.extend(requests)
        return [f"answer to {r}" for r in requests]

    async def main() -> None:
        coalescer = Coalescer(decide, workers=1)
        gone = asyncio.ensure_future(coalescer.decide("GONE"))
        await asyncio.sleep(0.02)  # its flush is in the thread
        gone.cancel()
        queued = asyncio.ensure_future(coalescer.decide("QUEUED"))  # waits for the thread
        await asyncio.sleep(0)
        await coalescer.drain()
        assert decided == ["GONE", "QUEUED"] and queued.result() == "answer to QUEUED"

    asyncio.run(main())
