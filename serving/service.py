"""The decision service: request → hard rules → buyer score → decision → audit record.

`Service` holds what a worker needs (policy, champion, online store, audit log) and decides
batches of validated requests; a single request is a batch of one. Everything here is
synchronous and sub-millisecond per decision, so it runs on the event loop; only model
loading runs in a thread.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from pydantic_core import to_json

from serving import rules
from serving.audit import AuditLog, AuditUnavailable, DecisionRecord
from serving.config import Settings
from serving.metrics import Metrics
from serving.model import Champion, ModelUnavailable, load_champion
from serving.policy import Policy
from serving.schemas import DecisionRequest
from serving.store import BuyerRecord, OnlineStore, ShopRecord, StoreMeta, StoreUnavailable

logger = logging.getLogger("serving")

# The answer's reason when the store cannot be read: the caller learns that the buyer could
# not be checked; the file and the error (paths, SQLite messages) are for the operators.
_STORE_DOWN = "buyer and shop could not be checked: the online store is unavailable"

Clock = Callable[[], float]

_REASON_ORDER = {reason: i for i, reason in enumerate(rules.Reason)}

# Whether the store holds the model's columns, and where (None: in the model's order).
_ColumnIndex = tuple[bool, np.ndarray | None]


class Outcome(NamedTuple):
    """One request's answer: 200 with a decision, or 409 for a refund_id conflict."""

    status: int
    body: dict
    text: str  # `body` as the JSON that was audited and is answered


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


def _json(payload: dict) -> str:
    # pydantic's serializer: the same compact JSON as json.dumps(ensure_ascii=False), ~5x
    # faster on the audit record's feature vector (float formatting dominates there). A NaN
    # (a missing feature) or an infinity is written as null: valid JSON, no per-value check.
    return to_json(payload, inf_nan_mode="null").decode()


def _snapshot_id(meta: StoreMeta) -> str:
    """The snapshot's id in the audit log: its generation (a store from before generations
    existed: a digest of what describes it)."""
    if meta.generation:
        return meta.generation
    described = json.dumps([meta.as_of, meta.feature_set_version, meta.feature_columns])
    return hashlib.sha256((described + meta.materialized_at).encode()).hexdigest()[:32]


def _iso(epoch: float) -> str:
    """`epoch` as ISO 8601 UTC to the millisecond, e.g. "2025-06-01T02:00:00.123Z": what
    `datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")` gives (rounded to
    the microsecond half to even, then truncated), with the seconds formatted once a second
    (in the server, datetime's formatting cost ~15 us a batch)."""
    fraction, seconds = math.modf(epoch)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    return f"{_iso_seconds(int(seconds))}.{micros // 1000:03d}Z"


@functools.lru_cache(maxsize=4)
def _iso_seconds(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


class Service:
    """One worker's decision service."""

    def __init__(
        self, settings: Settings, policy: Policy, metrics: Metrics, clock: Clock = time.time
    ):
        self.settings = settings
        self.policy = policy
        self.metrics = metrics
        self.clock = clock
        self.champion: Champion | None = None
        self.model_error: str = "not loaded yet"
        self.store: OnlineStore | None = None
        self.store_error: str = "not opened yet"
        self.audit: AuditLog | None = None
        self._audit_id: str | None = None  # the log this worker began with
        self._audit_gone = ""  # why, while the log it had is missing
        self.audit_error: str = "not opened yet"
        self._next_store_try = 0.0
        self._next_audit_try = 0.0
        self._columns: tuple[tuple[str, tuple[str, ...]], _ColumnIndex] | None = None
        self._reload_lock = asyncio.Lock()
        self._decision_counters: dict[str, Any] = {}
        self._reason_counters: dict[str, Any] = {}
        metrics.policy.labels(version=policy.version).set(1)

    # -- dependencies -----------------------------------------------------------------

    def open_store(self) -> OnlineStore | None:
        """The online store. Every `store_check_seconds`: opened if it was missing, and
        reopened if another file replaced it (the open connection would go on reading the
        old one); a replacement that cannot be opened leaves the old file serving."""
        now = time.monotonic()
        if now < self._next_store_try:
            return self.store
        self._next_store_try = now + self.settings.store_check_seconds
        if self.store is not None and not self.store.replaced():
            return self.store
        try:
            store = OnlineStore.open(self.settings.store_path)
        except StoreUnavailable as exc:
            self.metrics.unavailable.labels(component="store").inc()
            if self.store is None:
                self.store_error = str(exc)
                logger.warning("online store unavailable", extra={"fields": {"error": str(exc)}})
            else:
                logger.error(
                    "online store replaced by a file that cannot be read; still serving the "
                    "previous one",
                    extra={"fields": {"error": str(exc)}},
                )
            return self.store
        if self.store is not None:
            self.store.close()
            logger.warning(
                "online store replaced: reopened (its admin overrides are the new file's)",
                extra={"fields": {"path": str(store.path), "as_of": store.meta().as_of}},
            )
        self.store, self.store_error = store, ""
        return store

    def open_audit(self) -> AuditLog:
        """The audit log, looked for at most once a second while it is down.

        Once a worker has had a log it keeps to it: one deleted or moved away while in use
        is not begun anew (the velocity counts and replays of everything before would be
        gone without a word), and a file at the path that holds another log is refused (a
        restarted worker began it), until the service restarts. The same log put back, from
        a backup or a rotation undone, is reopened.

        Raises:
            AuditUnavailable: It cannot be opened, or is not this worker's log.
        """
        if self.audit is not None:
            if not self.audit.moved():  # one stat a transaction
                return self.audit
            self._let_go_of_audit()
        now = time.monotonic()
        if now < self._next_audit_try:
            raise AuditUnavailable(self.audit_error)
        self._next_audit_try = now + 1.0
        path = self.settings.audit_path
        try:
            audit = AuditLog.open(path, self.settings.audit_synchronous, self._audit_id is None)
        except AuditUnavailable as exc:
            self.metrics.unavailable.labels(component="audit").inc()
            self.audit_error = self._audit_gone or str(exc)
            raise AuditUnavailable(self.audit_error) from exc
        if self._audit_id is not None and audit.log_id != self._audit_id:
            audit.close()
            self.metrics.unavailable.labels(component="audit").inc()
            self.audit_error = (
                f"audit log {path} is not the log this worker began with (another worker "
                "began it after this one's was deleted or moved?): no decision is answered "
                "until the service restarts, so that all count approvals in one log"
            )
            raise AuditUnavailable(self.audit_error)
        if self._audit_gone:
            logger.warning("audit log back: reopened", extra={"fields": {"path": str(path)}})
        self.audit, self._audit_id = audit, audit.log_id
        self.audit_error = self._audit_gone = ""
        return audit

    def _let_go_of_audit(self) -> None:
        """The file at the audit log's path is not the one open: close it, and say why."""
        assert self.audit is not None
        path = self.audit.path
        self.audit.close()
        self.audit, self._next_audit_try = None, 0.0
        if path.exists():
            logger.warning("audit log file replaced", extra={"fields": {"path": str(path)}})
            return
        self._audit_gone = (
            f"audit log {path} was deleted or moved while in use: no decision is answered "
            "until it is back (restore it, or restart the service to begin an empty log)"
        )
        logger.error("audit log gone", extra={"fields": {"error": self._audit_gone}})

    async def load_model(self) -> Champion:
        """Load the champion in a thread and swap it in; requests keep flowing meanwhile.

        On failure the current model (if any) keeps serving.

        Raises:
            ModelUnavailable: The champion cannot be loaded.
        """
        async with self._reload_lock:
            settings = self.settings
            try:
                champion = await asyncio.to_thread(
                    load_champion,
                    settings.tracking_uri(),
                    settings.model_name,
                    settings.model_alias,
                )
            except ModelUnavailable as exc:
                self.metrics.unavailable.labels(component="model").inc()
                if self.champion is None:
                    self.model_error = str(exc)
                logger.error("champion not loaded", extra={"fields": {"error": str(exc)}})
                raise
            previous = self.champion.version if self.champion is not None else None
            self.champion = champion  # one reference swap: a request sees one model or the other
            self.model_error = ""
            self.metrics.serving_model(champion.name, champion.version)
            logger.info(
                "champion loaded",
                extra={
                    "fields": {
                        "model": champion.name,
                        "version": champion.version,
                        "previous": previous,
                    }
                },
            )
            return champion

    def close(self) -> None:
        """Close the databases."""
        for db in (self.store, self.audit):
            if db is not None:
                db.close()

    # -- deciding ---------------------------------------------------------------------

    def decide(self, requests: Sequence[DecisionRequest]) -> list[Outcome]:
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

    def evaluate(self, requests: Sequence[DecisionRequest]) -> list[Outcome]:
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
        decision could not have).

        Raises:
            AuditUnavailable: The audit log cannot be read.
        """
        return self._decide(requests, commit=False)

    def _decide(self, requests: Sequence[DecisionRequest], commit: bool) -> list[Outcome]:
        audit = self.open_audit()
        now = self.clock()
        champion = self.champion  # one model for the whole batch, even across a reload
        store_failure, meta, found = self._lookup(requests)
        scores = self._scores(champion, meta, found) if store_failure is None else None
        context = _Context(
            now=now,
            decided_at=_iso(now),
            champion=champion,
            meta=meta,
            store_failure=store_failure,
            model_ref={"name": self.settings.model_name, "version": champion and champion.version},
            snapshot=_snapshot_id(meta) if meta is not None else None,
        )
        outcomes: list[Outcome] = []
        made: list[tuple[str, list[rules.Failure]]] = []
        single = commit and len(requests) == 1
        with audit.transaction() if commit else audit.reading() as tx:
            described = None  # the snapshot this transaction describes in the log, if any
            snapshot = context.snapshot
            if commit and meta and snapshot and snapshot not in audit.snapshots_recorded:
                tx.record_snapshot(snapshot, meta)  # once per log; the records refer to it
                described = snapshot
            if not single:
                known = tx.get_many([request.refund_id for request in requests])
                approvals = tx.approvals_many((r.order.buyer_id for r in requests), now)
            pending: list[DecisionRecord] = []
            for i, request in enumerate(requests):
                request_text = request.model_dump_json()
                request_hash = hashlib.sha256(request_text.encode()).hexdigest()
                buyer_id = request.order.buyer_id
                if single:
                    counts = tx.approvals(buyer_id, now)
                else:
                    previous = known.get(request.refund_id)
                    if previous is not None:  # decided before, or earlier in this batch
                        outcomes.append(self._replay(previous, request_hash, commit))
                        continue
                    counts = approvals.get(buyer_id, (0, 0))
                score = scores[i] if scores is not None else None
                outcome, record, failed = self._decide_one(
                    context, request, request_text, request_hash, found[i], score, counts
                )
                if single:
                    if not tx.insert(record):  # the refund_id was decided before
                        previous = tx.get(request.refund_id)
                        outcomes.append(self._replay(previous, request_hash, commit))  # type: ignore[arg-type]
                        continue
                else:
                    known[request.refund_id] = record
                    pending.append(record)
                    if record.decision == rules.AUTO_APPROVE:
                        approvals[buyer_id] = (counts[0] + 1, counts[1] + 1)
                outcomes.append(outcome)
                made.append((record.decision, failed))
            if commit and pending and tx.insert_many(pending) != len(pending):
                # Cannot happen: the transaction holds the write lock and every refund id
                # already stored was looked up in it. Roll back rather than answer.
                raise AuditUnavailable(f"audit log {audit.path}: a batch insert was ignored")
        if not commit:
            return outcomes
        if described is not None:  # committed
            audit.snapshots_recorded.add(described)
        # Counted only once committed: a rolled-back batch decided nothing. Tallied first, so
        # a batch increments each counter once (each increment takes the counter's lock).
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
        return outcomes

    def _decide_one(
        self,
        context: _Context,
        request: DecisionRequest,
        request_text: str,
        request_hash: str,
        found: tuple[BuyerRecord | None, ShopRecord | None],
        score: float | None,
        approvals: tuple[int, int],
    ) -> tuple[Outcome, DecisionRecord, list[rules.Failure]]:
        """One request's decision, its answer and its audit record (not yet stored)."""
        now, meta, champion = context.now, context.meta, context.champion
        threshold = champion.threshold if champion is not None else None
        columns = meta.feature_columns if meta is not None else ()
        order = request.order
        buyer, shop = found
        failures = self._rules(request, now, approvals)
        if context.store_failure is None:
            failures += self._store_rules(now, buyer, shop, score, threshold)
        else:
            # Buyer, shop and score cannot be checked: fail closed, say why once.
            failures.append(rules.Failure(rules.Reason.SCORE_UNAVAILABLE, context.store_failure))
        failures.sort(key=lambda f: _REASON_ORDER[f.code])
        decision, failed = rules.decide(failures)
        body = {
            "refund_id": request.refund_id,
            "decision": decision,
            "reasons": [{"code": f.code.value, "message": f.message} for f in failed],
            "buyer": {
                "premium": score is not None and threshold is not None and score <= threshold,
                "score": score,
                "threshold": threshold,
            },
            "model": context.model_ref,
            "policy_version": self.policy.version,
            "decided_at": context.decided_at,
            "replayed": False,
        }
        if decision == rules.AUTO_APPROVE:
            body["note"] = rules.APPROVAL_NOTE
        # The vector as the store holds it (float64, the snapshot's column order): ~440 bytes
        # and no formatting, where JSON was ~1.7 KB a record (AuditLog.features reads it).
        vector = (
            buyer.features.tobytes()
            if buyer is not None and len(buyer.features) == len(columns)
            else b""
        )
        text = _json(body)
        record = DecisionRecord(
            refund_id=request.refund_id,
            request_hash=request_hash,
            buyer_id=order.buyer_id,
            shop_id=order.shop_id,
            decision=decision,
            decided_at=now,
            request=request_text,
            features=vector,
            model_name=self.settings.model_name,
            model_version=champion.version if champion is not None else None,
            policy_version=self.policy.version,
            response=text,
            snapshot=context.snapshot,
        )
        return Outcome(200, body, text), record, failed

    @staticmethod
    def _count(cache: dict, counter: Any, label: str, n: int = 1) -> None:
        child = cache.get(label)
        if child is None:
            child = cache[label] = counter.labels(label)
        child.inc(n)

    def _replay(self, stored: DecisionRecord, request_hash: str, count: bool = True) -> Outcome:
        if stored.request_hash != request_hash:
            if count:
                self.metrics.conflicts.inc()
            body = {
                "detail": f"refund_id {stored.refund_id} was already decided for a "
                "different request",
                "refund_id": stored.refund_id,
            }
            return Outcome(409, body, _json(body))
        if count:
            self.metrics.replays.inc()
        body = json.loads(stored.response)
        body["replayed"] = True
        return Outcome(200, body, _json(body))

    def _lookup(
        self, requests: Sequence[DecisionRequest]
    ) -> tuple[str | None, StoreMeta | None, list[tuple[BuyerRecord | None, ShopRecord | None]]]:
        """Buyers and shops from the store, or why they could not be read."""
        empty: list[tuple[BuyerRecord | None, ShopRecord | None]] = [(None, None)] * len(requests)
        store = self.open_store()
        if store is None:
            return _STORE_DOWN, None, empty  # why is in the log and /readyz, not the answer
        try:
            meta, found = store.lookup((r.order.buyer_id, r.order.shop_id) for r in requests)
        except StoreUnavailable as exc:
            self.metrics.unavailable.labels(component="store").inc()
            logger.error("online store read failed", extra={"fields": {"error": str(exc)}})
            return _STORE_DOWN, None, empty
        return None, meta, found

    def _column_index(self, champion: Champion, meta: StoreMeta) -> _ColumnIndex:
        """Where each of the model's input columns sits in the store's vectors (cached).

        Returns:
            (False, None) when the store lacks some of them; (True, None) when the store holds
            them in the model's order (the usual case: the vectors are used as they are);
            else (True, the positions).
        """
        key = (champion.version, meta.feature_columns)
        if self._columns is not None and self._columns[0] == key:
            return self._columns[1]
        position = {name: i for i, name in enumerate(meta.feature_columns)}
        missing = [c for c in champion.feature_columns if c not in position]
        if missing:
            logger.error(
                "the store lacks the model's features",
                extra={"fields": {"model_version": champion.version, "missing": missing[:10]}},
            )
            found: _ColumnIndex = (False, None)
        else:
            order = [position[c] for c in champion.feature_columns]
            same = order == list(range(len(meta.feature_columns)))
            found = (True, None if same else np.array(order))
        self._columns = (key, found)
        return found

    def _scores(
        self,
        champion: Champion | None,
        meta: StoreMeta | None,
        found: list[tuple[BuyerRecord | None, ShopRecord | None]],
    ) -> list[float | None] | None:
        """The champion's score per request (None where it cannot be trusted)."""
        if champion is None or meta is None:
            return None
        if champion.feature_set_version and (
            champion.feature_set_version != meta.feature_set_version
        ):
            # Trained on other features than the store holds: skew, so no score at all.
            self.metrics.unavailable.labels(component="scoring").inc()
            return None
        usable, index = self._column_index(champion, meta)
        if not usable:
            self.metrics.unavailable.labels(component="scoring").inc()
            return None
        width = len(meta.feature_columns)
        rows = [
            i
            for i, (buyer, _) in enumerate(found)
            if buyer is not None and len(buyer.features) == width
        ]
        scores: list[float | None] = [None] * len(found)
        if not rows:
            return scores
        vectors = [found[i][0].features for i in rows]  # type: ignore[union-attr]
        if index is not None:
            vectors = [vector[index] for vector in vectors]
        try:
            predicted = champion.score_rows(vectors)
        except Exception as exc:  # noqa: BLE001 - fail closed on any scoring failure
            self.metrics.unavailable.labels(component="scoring").inc()
            logger.error("scoring failed", extra={"fields": {"error": repr(exc)}})
            return scores
        if len(predicted) != len(rows):
            self.metrics.unavailable.labels(component="scoring").inc()
            return scores
        for i, value in zip(rows, predicted, strict=True):
            if math.isfinite(value) and 0.0 <= value <= 1.0:
                scores[i] = value
        return scores

    def _rules(
        self, request: DecisionRequest, now: float, approvals: tuple[int, int]
    ) -> list[rules.Failure]:
        """The rules on the request itself and the velocity limits, in POLICY.md's order."""
        policy = self.policy
        order = request.order
        results = [
            rules.order_unshipped(order.status, order.tracking_number),
            rules.amount_below_limit(order.paid_amount, policy.amount_limit_fen),
            rules.goods_not_excluded(
                order.is_virtual, order.is_custom, order.category, policy.excluded_categories
            ),
            rules.refund_only(request.kind),
            rules.within_velocity(*approvals, policy.velocity),
        ]
        return [r for r in results if r is not None]

    def _store_rules(
        self,
        now: float,
        buyer: BuyerRecord | None,
        shop: ShopRecord | None,
        score: float | None,
        threshold: float | None,
    ) -> list[rules.Failure]:
        """The rules on what the online store knows: shop, buyer, history, premium."""
        orders: int | None = None
        age_days: float | None = None
        if buyer is not None and math.isfinite(buyer.registered_at):
            orders, age_days = buyer.order_count, (now - buyer.registered_at) / 86_400.0
        results = [
            rules.shop_eligible(
                None if shop is None else shop.eligible, shop.reasons if shop else ""
            ),
            rules.buyer_not_revoked(
                buyer is not None and buyer.revoked, buyer.revoked_reason if buyer else ""
            ),
            rules.buyer_has_history(orders, age_days, self.policy.min_history),
        ]
        if buyer is not None and len(buyer.features):
            # An unknown buyer has no history rather than an unavailable score.
            results.append(rules.buyer_premium(score, threshold))
        return [r for r in results if r is not None]
