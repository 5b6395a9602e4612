"""The decision service: a batch of requests → their inputs → decisions → audit records.

`Service` is one worker's `Supervisor` (store, audit log, champion) that also decides: for a
batch of validated requests it gathers each decision's inputs (the store's buyer and shop,
the champion's score, the audit log's approval counts), calls the pure `decision.decide`,
builds the answer and the audit record, commits, and counts the metrics. A single request
is a batch of one. Everything here is synchronous: on SQLite sub-millisecond per decision,
so it runs on the event loop; on PostgreSQL each call waits on round trips, so the coalescer
runs several at once in threads (serving.coalesce). Model loading runs in a thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from serving import answers, rules
from serving.answers import Answer
from serving.audit import AuditUnavailable, DecisionRecord
from serving.config import Settings
from serving.decision import decide, snapshot_too_old
from serving.drift_window import DriftCollector, DriftWindow
from serving.metrics import Metrics
from serving.model import Champion
from serving.policy import Policy
from serving.records import BuyerRecord, ShopRecord, StoreMeta
from serving.schemas import DecisionRequest
from serving.scoring import Scorer
from serving.store import StoreUnavailable
from serving.supervisor import Clock, Supervisor

logger = logging.getLogger("serving")

# The answer's reason when the store cannot be read: the caller learns that the buyer could
# not be checked; the file and the error (paths, SQLite messages) are for the operators.
_STORE_DOWN = "buyer and shop could not be checked: the online store is unavailable"

_Found = list[tuple[BuyerRecord | None, ShopRecord | None]]


@dataclass(frozen=True, slots=True)
class _Context:
    """What every decision of one batch shares."""

    now: float
    decided_at: str
    champion: Champion | None
    meta: StoreMeta | None
    store_failure: str | None
    model_ref: dict
    snapshot: str | None  # the store snapshot's id in the audit log


def _snapshot_id(meta: StoreMeta) -> str:
    """The snapshot's id in the audit log: its generation (a store from before generations
    existed: a digest of what describes it)."""
    if meta.generation:
        return meta.generation
    described = json.dumps([meta.as_of, meta.feature_set_version, meta.feature_columns])
    return hashlib.sha256((described + meta.materialized_at).encode()).hexdigest()[:32]


class Service(Supervisor):
    """One worker's decision service.

    Args:
        settings: The service's configuration.
        policy: The policy every decision is judged by.
        metrics: Where decisions, reasons and failures are counted.
        clock: Seconds since the epoch (tests move time for the velocity limits).
    """

    def __init__(
        self, settings: Settings, policy: Policy, metrics: Metrics, clock: Clock = time.time
    ):
        super().__init__(settings, metrics, clock, max_threshold=policy.max_premium_threshold)
        self.policy = policy
        self._scorer = Scorer(metrics)
        # The challenger in shadow (serving.shadow): scored beside the champion, never acted on.
        self.challenger: Champion | None = None
        self._shadow_scorer = Scorer(metrics, component="shadow")
        self._decision_counters: dict[str, Any] = {}
        self._reason_counters: dict[str, Any] = {}
        self._bookkeeping = threading.Lock()
        metrics.policy.labels(version=policy.version).set(1)
        # What this worker scored, for its drift gauges on /metrics (serving.drift_window).
        self.drift = DriftWindow()
        self.drift_gauges = DriftCollector(
            self.drift, lambda: self.champion, policy.drift_psi_alert, policy.drift_exempt_features
        )
        metrics.registry.register(self.drift_gauges)

    def decide(self, requests: Sequence[DecisionRequest]) -> list[Answer]:
        """Decide and audit a batch; every answer is committed before it is returned.

        A single request costs the audit log a velocity count and an insert (a replay is
        found by the insert being ignored). A batch reads what it needs up front (stored
        decisions for its refund ids, approvals for its buyers: one statement each), keeps
        both current in memory as it decides (so it counts its own approvals and sees its
        own refund ids), and inserts everything with one `executemany`; all inside one
        `BEGIN IMMEDIATE` transaction, so no other writer can interleave.

        Raises:
            AuditUnavailable: The audit log cannot be written; nothing is answered.
        """
        return self._decide(requests, commit=True)

    def evaluate(self, requests: Sequence[DecisionRequest]) -> list[Answer]:
        """What `decide` would answer now, without recording anything (a dry run).

        The same lookup, rules (velocity counted from the audit log as it stands), score
        and answer; no decision is stored or counted, and the audit log's write lock is not
        taken (opening the log may still create it, and a dependency failure met on the way
        is counted in `fastrefund_unavailable` like any other). A refund_id already decided
        gets its stored answer (replayed) or a 409, as `decide` would give. For notebooks,
        what-if tools and the benchmark of the decision itself.

        Like `decide`, it judges with the store's snapshot and the service's clock, not as of
        the request's `requested_at`: to replay requests of the past, materialize a store as
        of their date first (a snapshot newer than the request knows things that request's
        decision could not have), or call `serving.decision.decide` with inputs of that date.

        Raises:
            AuditUnavailable: The audit log cannot be read.
        """
        return self._decide(requests, commit=False)

    def _decide(self, requests: Sequence[DecisionRequest], commit: bool) -> list[Answer]:
        audit = self.open_audit()
        now = self.clock()
        champion = self.champion  # one model for the whole batch, even across a reload
        store_failure, meta, found = self._lookup(requests)
        scores = self._scorer.scores(champion, meta, found) if store_failure is None else None
        shadow = self._shadow_scores(champion, meta, found) if store_failure is None else None
        context = _Context(
            now=now,
            decided_at=answers.iso_timestamp(now),
            champion=champion,
            meta=meta,
            store_failure=store_failure,
            model_ref={"name": self.settings.model_name, "version": champion and champion.version},
            snapshot=_snapshot_id(meta) if meta is not None else None,
        )
        replies: list[Answer] = []
        made: list[tuple[str, tuple[rules.Failure, ...]]] = []
        scored: list[tuple[Any, float]] = []  # new decisions' vectors and scores (drift)
        single = commit and len(requests) == 1
        with audit.transaction() if commit else audit.reading() as tx:
            if commit:
                # Several instances on one database: wait for, then hold until commit, each
                # of the batch's buyers and refund ids (and shops, when the loss budget sums
                # their approvals), so that no other instance counts or inserts alongside
                # (serving.postgres_audit). SQLite's transaction already holds the whole log.
                tx.hold(
                    [r.order.buyer_id for r in requests],
                    [r.refund_id for r in requests],
                    [r.order.shop_id for r in requests] if self.policy.loss_budget.active else (),
                )
            described = None  # the snapshot this transaction describes in the log, if any
            snapshot = context.snapshot
            if commit and meta and snapshot and snapshot not in audit.snapshots_recorded:
                tx.record_snapshot(snapshot, meta)  # once per log; the records refer to it
                described = snapshot
            if not single:
                known = tx.get_many([request.refund_id for request in requests])
                approvals = tx.approvals_many((r.order.buyer_id for r in requests), now)
            pending: list[DecisionRecord] = []
            batch_loss: dict[
                tuple[str, str], float
            ] = {}  # expected loss approved earlier in the batch
            for i, request in enumerate(requests):
                request_text = request.model_dump_json()
                request_hash = hashlib.sha256(request_text.encode()).hexdigest()
                buyer_id = request.order.buyer_id
                if single:
                    counts = tx.approvals(buyer_id, now)
                else:
                    previous = known.get(request.refund_id)
                    if previous is not None:  # decided before, or earlier in this batch
                        replies.append(self._replay(previous, request_hash, commit))
                        continue
                    counts = approvals.get(buyer_id, (0, 0))
                score = scores[i] if scores is not None else None
                exposure = (0.0, 0.0)
                if self.policy.loss_budget.active:  # the loss budget's running sums
                    shop_id = request.order.shop_id
                    day, month = tx.expected_loss_approved(shop_id, buyer_id, now)
                    exposure = (
                        day + batch_loss.get(("shop", shop_id), 0.0),
                        month + batch_loss.get(("buyer", buyer_id), 0.0),
                    )
                reply, record, failed = self._decide_one(
                    context, request, request_text, request_hash, found[i], score, counts, exposure
                )
                if shadow is not None:
                    record = self._with_shadow(
                        record,
                        context,
                        request,
                        found[i],
                        shadow[1][i],
                        counts,
                        exposure,
                        shadow[0],
                    )
                if single:
                    if not tx.insert(record):  # the refund_id was decided before
                        previous = tx.get(request.refund_id)
                        replies.append(self._replay(previous, request_hash, commit))  # type: ignore[arg-type]
                        continue
                else:
                    known[request.refund_id] = record
                    pending.append(record)
                    if record.decision == rules.AUTO_APPROVE:
                        approvals[buyer_id] = (counts[0] + 1, counts[1] + 1)
                        if score is not None:  # this batch's approvals are not stored yet
                            loss = score * request.order.paid_amount
                            for key in (("shop", request.order.shop_id), ("buyer", buyer_id)):
                                batch_loss[key] = batch_loss.get(key, 0.0) + loss
                replies.append(reply)
                made.append((record.decision, failed))
                if score is not None:
                    scored.append((found[i][0].features, score))  # type: ignore[union-attr]
            if commit and pending and tx.insert_many(pending) != len(pending):
                # Cannot happen: the transaction holds the write lock and every refund id
                # already stored was looked up in it. Roll back rather than answer.
                raise AuditUnavailable(f"audit log {audit.path}: a batch insert was ignored")
        if not commit:
            return replies
        # Committed. On PostgreSQL several flushes run at once in threads (serving.coalesce):
        # the drift window's ring and the counters' caches take one at a time.
        with self._bookkeeping:
            if described is not None:
                audit.snapshots_recorded.add(described)
            self._count_made(made)  # only once committed: a rolled-back batch decided nothing
            if scored and champion is not None and meta is not None:
                self.drift.record(champion.version, meta.feature_columns, scored)
        return replies

    def _decide_one(
        self,
        context: _Context,
        request: DecisionRequest,
        request_text: str,
        request_hash: str,
        found: tuple[BuyerRecord | None, ShopRecord | None],
        score: float | None,
        approvals: tuple[int, int],
        exposure: tuple[float, float] = (0.0, 0.0),
    ) -> tuple[Answer, DecisionRecord, tuple[rules.Failure, ...]]:
        """One request's decision, its answer and its audit record (not yet stored)."""
        champion, columns = context.champion, context.meta.feature_columns if context.meta else ()
        threshold = champion.threshold if champion is not None else None
        buyer, shop = found
        decision = decide(
            request,
            buyer,
            shop,
            score,
            threshold,
            approvals,
            self.policy,
            context.now,
            feature_count=len(columns),
            unavailable=context.store_failure,
            exposure=exposure,
        )
        factors = None
        if not decision.premium and score is not None and champion is not None and context.meta:
            # Only where shown: a buyer scored above the threshold (an approval pays nothing).
            factors = self._scorer.factors(champion, context.meta, buyer)
        reply = answers.decision_answer(
            request.refund_id,
            decision,
            score,
            threshold,
            context.model_ref,
            self.policy.version,
            context.decided_at,
            factors,
        )
        # The vector as the store holds it (float64, the snapshot's column order): ~440 bytes
        # and no formatting, where JSON was ~1.7 KB a record (AuditLog.features reads it).
        vector = (
            buyer.features.tobytes()
            if buyer is not None and len(buyer.features) == len(columns)
            else b""
        )
        record = DecisionRecord(
            refund_id=request.refund_id,
            request_hash=request_hash,
            buyer_id=request.order.buyer_id,
            shop_id=request.order.shop_id,
            decision=decision.decision,
            decided_at=context.now,
            request=request_text,
            features=vector,
            model_name=self.settings.model_name,
            model_version=champion.version if champion is not None else None,
            policy_version=self.policy.version,
            response=reply.text,
            snapshot=context.snapshot,
        )
        return reply, record, decision.reasons

    def _shadow_scores(
        self, champion: Champion | None, meta: StoreMeta | None, found: _Found
    ) -> tuple[Champion, list[float | None]] | None:
        """The challenger's scores for the batch, when one other than the champion is loaded;
        None otherwise, or when it cannot score (logged and counted, never raised)."""
        challenger = self.challenger
        if challenger is None or (champion is not None and challenger.version == champion.version):
            return None
        try:
            scores = self._shadow_scorer.scores(challenger, meta, found)
        except Exception as exc:  # noqa: BLE001 - the shadow never fails a decision
            self.metrics.unavailable.labels(component="shadow").inc()
            logger.error("shadow scoring failed", extra={"fields": {"error": repr(exc)}})
            return None
        return None if scores is None else (challenger, scores)

    def _with_shadow(
        self,
        record: DecisionRecord,
        context: _Context,
        request: DecisionRequest,
        found: tuple[BuyerRecord | None, ShopRecord | None],
        score: float | None,
        approvals: tuple[int, int],
        exposure: tuple[float, float],
        challenger: Champion,
    ) -> DecisionRecord:
        """The record with the challenger's version, score and the decision it would have made
        on the same inputs (the same pure `decide`); the answer is the champion's alone."""
        if score is None:
            return record
        would = decide(
            request,
            found[0],
            found[1],
            score,
            challenger.threshold,
            approvals,
            self.policy,
            context.now,
            feature_count=len(context.meta.feature_columns) if context.meta else 0,
            unavailable=context.store_failure,
            exposure=exposure,
        )
        return record._replace(
            challenger_version=challenger.version,
            challenger_score=score,
            challenger_decision=would.decision,
        )

    def snapshot_too_old(self, meta: StoreMeta) -> str | None:
        """Why the store's snapshot is past the policy's `max_snapshot_age_days`, or None.
        Not applied in development, whose simulated worlds lie in the past."""
        if self.settings.environment == "development":
            return None
        return snapshot_too_old(meta.as_of, self.clock(), self.policy.max_snapshot_age_days)

    def buyer_standing(self, buyer: BuyerRecord | None) -> dict:
        """A buyer's score by the champion now, the premium flag and, when not premium, the
        factors behind it (the admin view of a buyer); empty without a champion or score."""
        champion, store = self.champion, self.store
        if champion is None or store is None or buyer is None:
            return {}
        meta = store.meta()
        scores = self._scorer.scores(champion, meta, [(buyer, None)])
        score = scores[0] if scores else None
        if score is None:
            return {}
        premium = score <= champion.threshold
        view: dict = {"score": score, "threshold": champion.threshold, "premium": premium}
        if not premium:
            view["factors"] = self._scorer.factors(champion, meta, buyer)
        view["model"] = {"name": champion.name, "version": champion.version}
        return view

    def _replay(self, stored: DecisionRecord, request_hash: str, count: bool = True) -> Answer:
        """The stored answer again, or a 409 when the stored request was another one."""
        if stored.request_hash != request_hash:
            if count:
                self.metrics.conflicts.inc()
            return answers.conflict(stored.refund_id)
        if count:
            self.metrics.replays.inc()
        return answers.replayed(stored.response)

    def _count_made(self, made: list[tuple[str, tuple[rules.Failure, ...]]]) -> None:
        """Count committed decisions and their reasons. Tallied first, so a batch increments
        each counter once (each increment takes the counter's lock)."""
        decisions: dict[str, int] = {}
        reasons: dict[str, int] = {}
        for decision, failed in made:
            decisions[decision] = decisions.get(decision, 0) + 1
            for failure in failed:
                reasons[failure.code.value] = reasons.get(failure.code.value, 0) + 1
        for decision, n in decisions.items():
            self._count(self._decision_counters, self.metrics.decisions, decision, n)
        for reason, n in reasons.items():
            self._count(self._reason_counters, self.metrics.reasons, reason, n)

    @staticmethod
    def _count(cache: dict, counter: Any, label: str, n: int = 1) -> None:
        child = cache.get(label)
        if child is None:
            child = cache[label] = counter.labels(label)
        child.inc(n)

    def _lookup(
        self, requests: Sequence[DecisionRequest]
    ) -> tuple[str | None, StoreMeta | None, _Found]:
        """Buyers and shops from the store, or why they could not be read."""
        empty: _Found = [(None, None)] * len(requests)
        store = self.open_store()
        if store is None:
            return _STORE_DOWN, None, empty  # why is in the log and /readyz, not the answer
        try:
            meta, found = store.lookup((r.order.buyer_id, r.order.shop_id) for r in requests)
            stale = self.snapshot_too_old(meta)
            if stale is not None:  # as if there were no store (also on /readyz)
                return stale, None, empty
        except StoreUnavailable as exc:
            self.metrics.unavailable.labels(component="store").inc()
            logger.error("online store read failed", extra={"fields": {"error": str(exc)}})
            return _STORE_DOWN, None, empty
        return None, meta, found
