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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from serving.answers import Answer
from serving.audit import AuditUnavailable
from serving.schemas import DecisionRequest

logger = logging.getLogger("serving")

Decide = Callable[[Sequence[DecisionRequest]], list[Answer]]


class Coalescer:
    """Collect single requests for one loop turn, then decide them together.

    Args:
        decide: `Service.decide`: every answer committed to the audit log before it returns.
        max_batch: Most requests decided together; more wait for the next flush.
        on_flush: Called with each flush's size (for a metric).
    """

    def __init__(
        self,
        decide: Decide,
        max_batch: int = 64,
        on_flush: Callable[[int], None] | None = None,
    ):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._decide = decide
        self.max_batch = max_batch
        self._on_flush = on_flush
        self._pending: list[tuple[DecisionRequest, asyncio.Future[Answer]]] = []
        self._scheduled = False

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
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        group, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        self._scheduled = bool(self._pending)
        if self._pending:  # the rest go in the next turn, after this group is answered
            asyncio.get_running_loop().call_soon(self._flush)
        # A caller that went away (client disconnect) cancels its future; its request is
        # still decided and audited like any other that reached the service.
        try:
            answers = self._decide([request for request, _ in group])
        except AuditUnavailable as exc:  # nothing of the group was stored: all get the 503
            for _, future in group:
                _fail(future, exc)
            return
        except Exception as exc:  # noqa: BLE001 - a bug or a bad row: find whose it is
            if len(group) == 1:
                _fail(group[0][1], exc)
                return
            # The group was rolled back; decided one by one, only the request that fails
            # alone gets the error (a 503), and the others their answers.
            for request, future in group:
                try:
                    answer = self._decide([request])[0]
                except Exception as alone:  # noqa: BLE001
                    _fail(future, alone)
                else:
                    if not future.done():
                        future.set_result(answer)
            return
        for (_, future), answer in zip(group, answers, strict=True):
            if not future.done():
                future.set_result(answer)
        if self._on_flush is not None:
            try:
                self._on_flush(len(group))
            except Exception:  # noqa: BLE001 - a metric must not take the answers down
                logger.exception("coalescer: on_flush failed")


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
