"""Supervision of one worker's dependencies: the online store, the audit log, the champion.

Each is opened when first needed and looked after while the worker serves: a store file
replaced under it is reopened, an audit log deleted, moved or replaced is let go of (and only
the same log is taken up again), and the champion is loaded in a thread and swapped in. What
cannot be opened is retried later and reported (`*_error`, `/readyz`, the
`fastrefund_unavailable` counter); deciding goes on without it, failing closed
(`serving.service`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from serving import backends
from serving.audit import AuditUnavailable
from serving.backends import Audit, Store
from serving.config import Settings
from serving.database import Database
from serving.metrics import Metrics
from serving.model import Champion, ModelUnavailable, load_champion
from serving.store import StoreUnavailable

logger = logging.getLogger("serving")

Clock = Callable[[], float]


class Supervisor:
    """One worker's online store, audit log and champion, kept open and current.

    Args:
        settings: Where the store, the log and the registry are.
        metrics: Where dependency failures are counted.
        clock: Seconds since the epoch (tests move time).
        max_threshold: The highest premium threshold a champion may carry (the policy's).
    """

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        clock: Clock = time.time,
        *,
        max_threshold: float,
    ):
        self.settings = settings
        self.max_threshold = max_threshold
        self.metrics = metrics
        self.clock = clock
        self.champion: Champion | None = None
        self.model_error: str = "not loaded yet"
        # The PostgreSQL pool when FASTREFUND_DATABASE_URL is set (store and log share it).
        self.database: Database | None = None
        self.store: Store | None = None
        self.store_error: str = "not opened yet"
        self._store_synced = False  # whether `store` has the audit log's overrides
        self.audit: Audit | None = None
        self._audit_id: str | None = None  # the log this worker began with
        self._audit_gone = ""  # why, while the log it had is missing
        self.audit_error: str = "not opened yet"
        self._next_store_try = 0.0
        self._next_audit_try = 0.0
        self._reload_lock = asyncio.Lock()

    async def start(self) -> None:
        """Open the store and the audit log and load the champion, as a worker starts.

        Nothing here stops the worker: what is missing is logged, reported by `/readyz`,
        and looked for again when needed; decisions fail closed meanwhile.
        """
        self.open_store()
        try:
            self.open_audit()
        except AuditUnavailable as exc:
            logger.error("audit log unavailable", extra={"fields": {"error": str(exc)}})
        try:
            await self.load_model()
        except ModelUnavailable:
            pass  # logged; decisions fail closed until a reload succeeds

    def _database(self) -> Database | None:
        if self.database is None and self.settings.database_url is not None:
            self.database = backends.open_database(self.settings)
        return self.database

    def open_store(self) -> Store | None:
        """The online store, with every admin override the audit log keeps applied.

        Every `store_check_seconds`: opened if it was missing, and reopened if another file
        replaced it (the open connection would go on reading the old one). A new file gets
        the audit log's overrides before it serves (`OnlineStore.apply_overrides`): one
        deleted and materialized anew, or restored from a backup, would otherwise serve
        revoked buyers. A replacement that cannot be opened or given them leaves the old file
        serving; a first store that cannot be given them (the audit log is down) is not
        served until it has them.
        """
        now = time.monotonic()
        if now >= self._next_store_try:
            self._next_store_try = now + self.settings.store_check_seconds
            self._refresh_store()
        if self.store is not None and not self._store_synced:
            self._store_synced = self._apply_overrides(self.store)
        return self.store if self._store_synced else None

    def _refresh_store(self) -> None:
        if self.store is not None and not self.store.replaced():
            return
        try:
            store = backends.open_store(self.settings, self._database())
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
            return
        synced = self._apply_overrides(store)
        if self.store is None:
            self.store, self._store_synced = store, synced
            if synced:
                self.store_error = ""
            return
        if not synced:
            store.close()
            logger.error(
                "online store replaced, but the admin overrides could not be applied to the "
                "new file; still serving the previous one",
                extra={"fields": {"error": self.store_error}},
            )
            return
        self.store.close()
        logger.warning(
            "online store replaced: reopened, the audit log's admin overrides applied",
            extra={"fields": {"path": str(store.path), "as_of": store.meta().as_of}},
        )
        self.store, self._store_synced, self.store_error = store, True, ""

    def _apply_overrides(self, store: Store) -> bool:
        """Give a store the audit log's overrides; False (and `store_error` says why) when the
        log cannot be read or the store written. Never long: a second at most."""
        try:
            written = store.apply_overrides(self.open_audit().overrides(), timeout=1.0)
        except (AuditUnavailable, StoreUnavailable) as exc:
            self.metrics.unavailable.labels(component="store").inc()
            self.store_error = f"admin overrides not applied to the online store yet: {exc}"
            return False
        if written:
            logger.warning(
                "admin overrides missing from the online store re-applied from the audit log",
                extra={"fields": {"path": str(store.path), "overrides": written}},
            )
        self.store_error = ""
        return True

    def open_audit(self) -> Audit:
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
            audit = backends.open_audit(self.settings, self._database(), self._audit_id is None)
        except AuditUnavailable as exc:
            self.metrics.unavailable.labels(component="audit").inc()
            self.audit_error = self._audit_gone or str(exc)
            raise AuditUnavailable(self.audit_error) from exc
        if self._audit_id is not None and audit.log_id != self._audit_id:
            audit.close()
            self.metrics.unavailable.labels(component="audit").inc()
            self.audit_error = (
                f"audit log {audit.path} is not the log this worker began with (another worker "
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
        path = self.settings.audit_path  # a file: only SQLite's log can move (`moved`)
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

    async def load_model(self, before_swap: Callable[[Champion], None] | None = None) -> Champion:
        """Load the champion in a thread and swap it in; requests keep flowing meanwhile.

        On failure the current model (if any) keeps serving; so it does when `before_swap`
        (the admin reload's audit record, written before the model serves) raises.

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
                    self.max_threshold,
                )
            except ModelUnavailable as exc:
                self.metrics.unavailable.labels(component="model").inc()
                if self.champion is None:
                    self.model_error = str(exc)
                logger.error("champion not loaded", extra={"fields": {"error": str(exc)}})
                raise
            previous = self.champion.version if self.champion is not None else None
            if before_swap is not None:
                before_swap(champion)
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
        if self.database is not None:
            self.database.close()
