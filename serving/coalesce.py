"""Micro-batching: the single decisions that arrive together are decided as one batch.

Under load a worker reads several requests in one turn of its event loop. Decided one by one,
each pays for its own audit transaction, store statement and cold model walk; decided
together, they share one `BEGIN IMMEDIATE ... COMMIT`, one store statement, and trees that
are still in the CPU cache after the first row. `Service.decide` already gives every item of
a batch the answer it would have had alone in that order (replays, 409s and velocity counts
included), so a caller cannot tell, except by the latency.

The first request of a turn schedules a flush for the next turn (`loop.call_soon`); the
requests parsed meanwhile join it. No timer: a request alone waits one loop turn, not a
window, and nothing is ever held back to fill a batch.

Where a flush runs depends on the backend (`workers`):

- SQLite (0): on the loop, inline. A flush is sub-millisecond and SQLite serializes its
  writers anyway: a thread would only add a hand-off.
- PostgreSQL (n > 0): in one of n threads, each flush on its own pooled connection, so the
  loop goes on reading requests while a flush waits on the network, and up to n flushes are
  in flight at once. Two flushes of one process are then what two instances are, and correct
  for the same reasons (the advisory locks, `ON CONFLICT` with replay:
  `serving.postgres_audit`). While all n are busy the requests that arrive wait in one group
  for the first thread free: the busier the database, the bigger the batches.

Either way a flush's answers are set only once `decide` has returned, that is after its
COMMIT; its callers' futures are resolved on the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from serving.answers import Answer
from serving.audit import AuditUnavailable
from serving.schemas import DecisionRequest

logger = logging.getLogger("serving")

Decide = Callable[[Sequence[DecisionRequest]], list[Answer]]
# Each request's answer, or what deciding it raised; and whether the group was decided as one.
_Outcome = tuple[list[Answer | Exception], bool]


class Coalescer:
    """Collect single requests for one loop turn, then decide them together.

    Args:
        decide: `Service.decide`: every answer committed to the audit log before it returns.
        max_batch: Most requests decided together; more wait for the next flush.
        on_flush: Called with each flush's size (for a metric).
        workers: Threads that run flushes, at most this many at once (fewer than the
            database pool's connections); 0 runs each flush inline on the loop.
    """

    def __init__(
        self,
        decide: Decide,
        max_batch: int = 64,
        on_flush: Callable[[int], None] | None = None,
        workers: int = 0,
    ):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if workers < 0:
            raise ValueError("workers must be 0 (inline) or more")
        self._decide = decide
        self.max_batch = max_batch
        self._on_flush = on_flush
        self.workers = workers
        self._executor = (
            ThreadPoolExecutor(workers, thread_name_prefix="flush") if workers else None
        )
        self._pending: list[tuple[DecisionRequest, asyncio.Future[Answer]]] = []
        self._scheduled = False
        self._in_flight: set[asyncio.Future[_Outcome]] = set()

    async def decide(self, request: DecisionRequest) -> Answer:
        """This request's answer, decided with whatever arrived in the same turn.

        Raises:
            AuditUnavailable: The group could not be stored; none of it was answered.
            Exception: What deciding this request alone raised (a group that fails
                otherwise is decided again one request at a time, so one bad request does
                not take its neighbours down).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        self._pending.append((request, future))
        self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        # With every thread busy, the next flush is scheduled when one is done (`_landed`).
        if self._scheduled or not self._pending or len(self._in_flight) >= max(self.workers, 1):
            return
        self._scheduled = True
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        self._scheduled = False
        group, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        if not group:
            return
        # A caller that went away (client disconnect) cancels its future; its request is
        # still decided and audited like any other that reached the service.
        requests = [request for request, _ in group]
        if self._executor is None:
            self._schedule(loop)  # the rest go in the next turn, after this group is answered
            self._answer(group, self._run(requests))
            return
        work = loop.run_in_executor(self._executor, self._run, requests)
        self._in_flight.add(work)
        work.add_done_callback(lambda done: self._landed(group, done))
        self._schedule(loop)  # the rest go to the next thread free, if any

    def _landed(
        self,
        group: list[tuple[DecisionRequest, asyncio.Future[Answer]]],
        work: asyncio.Future[_Outcome],
    ) -> None:
        """A threaded flush is done (on the loop): answer its callers, start the next."""
        self._in_flight.discard(work)
        try:
            outcome = work.result()
        except BaseException as exc:  # noqa: BLE001 - `_run` catches Exception: this is worse
            error = exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
            outcome = [error] * len(group), False
        self._answer(group, outcome)
        self._schedule(asyncio.get_running_loop())

    def _run(self, requests: list[DecisionRequest]) -> _Outcome:
        """Decide a group (on the loop or in a thread); never raises."""
        try:
            return list(self._decide(requests)), True
        except AuditUnavailable as exc:  # nothing of the group was stored: all get the 503
            return [exc] * len(requests), False
        except Exception as exc:  # noqa: BLE001 - a bug or a bad row: find whose it is
            if len(requests) == 1:
                return [exc], False
        # The group was rolled back; decided one by one, only the request that fails alone
        # gets the error (a 503), and the others their answers.
        results: list[Answer | Exception] = []
        for request in requests:
            try:
                results.append(self._decide([request])[0])
            except Exception as alone:  # noqa: BLE001
                results.append(alone)
        return results, False

    def _answer(
        self, group: list[tuple[DecisionRequest, asyncio.Future[Answer]]], outcome: _Outcome
    ) -> None:
        results, together = outcome
        for (_, future), result in zip(group, results, strict=True):
            if isinstance(result, Exception):
                _fail(future, result)
            elif not future.done():
                future.set_result(result)
        if together and self._on_flush is not None:
            try:
                self._on_flush(len(group))
            except Exception:  # noqa: BLE001 - a metric must not take the answers down
                logger.exception("coalescer: on_flush failed")

    async def drain(self) -> None:
        """Wait until every request handed to it is decided and answered (those of callers
        that went away too), then stop the threads: before the database pool is closed."""
        while self._pending or self._in_flight or self._scheduled:
            if self._in_flight:
                await asyncio.wait(list(self._in_flight))
            else:
                await asyncio.sleep(0)  # a scheduled flush runs in this turn
            self._schedule(asyncio.get_running_loop())
        if self._executor is not None:
            self._executor.shutdown(wait=True)


def _fail(future: asyncio.Future, exc: Exception) -> None:
    """Fail one caller with its own copy of `exc` (one shared instance would gather every
    caller's traceback)."""
    if future.done():
        return
    try:
        own = type(exc)(*exc.args)
        own.__cause__ = exc.__cause__
    except Exception:  # noqa: BLE001 - an exception type that cannot be rebuilt
        own = exc
    future.set_exception(own)
