"""One interface for the audit log and the online store, two implementations, chosen by
configuration: SQLite files (`serving.audit`, `serving.store`: the embedded default) or
PostgreSQL when FASTREFUND_DATABASE_URL is set (`serving.postgres_audit`,
`serving.postgres_store`: several instances on one database).

The decision code (`serving.service`, `serving.decision`) sees only these protocols.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from serving.audit import AuditLog, DecisionRecord
from serving.config import Settings
from serving.database import Database
from serving.records import BuyerRecord, Override, ShopRecord, StoreMeta
from serving.store import OnlineStore


class AuditTx(Protocol):
    """Reads and writes inside one audit transaction."""

    def hold(
        self, buyers: Iterable[str], refunds: Iterable[str], shops: Iterable[str] = ()
    ) -> None: ...
    def get(self, refund_id: str) -> DecisionRecord | None: ...
    def approvals(self, buyer_id: str, now: float) -> tuple[int, int]: ...
    def expected_loss_approved(
        self, shop_id: str, buyer_id: str, now: float
    ) -> tuple[float, float]: ...
    def get_many(self, refund_ids: Sequence[str]) -> dict[str, DecisionRecord]: ...
    def approvals_many(
        self, buyer_ids: Iterable[str], now: float
    ) -> dict[str, tuple[int, int]]: ...
    def record_snapshot(self, snapshot_id: str, meta: StoreMeta) -> None: ...
    def insert(self, record: DecisionRecord) -> bool: ...
    def insert_many(self, records: Sequence[DecisionRecord]) -> int: ...


class Audit(Protocol):
    """The audit log: decisions, idempotency, velocity counts, admin actions, overrides."""

    log_id: str
    snapshots_recorded: set[str]

    @property
    def path(self) -> object: ...  # what messages call it (a file, or a redacted URL)
    def close(self) -> None: ...
    def checkpoint(self) -> None: ...
    def finish_checkpoint(self) -> None: ...
    def moved(self) -> bool: ...
    def ping(self, now: float) -> None: ...
    def write_failed_recently(self, hold: float = ...) -> bool: ...
    def transaction(self) -> AbstractContextManager[AuditTx]: ...
    def reading(self) -> AbstractContextManager[AuditTx]: ...
    def get(self, refund_id: str) -> DecisionRecord | None: ...
    def features(self, refund_id: str) -> dict | None: ...
    def record_admin_action(
        self, at: float, actor: str, action: str, target: str, reason: str, detail: str
    ) -> None: ...
    def record_override(self, override: Override, action: str, detail: str) -> Override | None: ...
    def revert_override(
        self, override: Override, previous: Override | None, action: str, detail: str
    ) -> None: ...
    def overrides(self) -> list[Override]: ...


class Store(Protocol):
    """The online store's reads (overrides applied) and its copy of the overrides."""

    @property
    def path(self) -> object: ...
    def close(self) -> None: ...
    def replaced(self) -> bool: ...
    def apply_overrides(self, overrides: Iterable[Override], timeout: float = 5.0) -> int: ...
    def meta(self) -> StoreMeta: ...
    def lookup(
        self, pairs: Iterable[tuple[str, str]]
    ) -> tuple[StoreMeta, list[tuple[BuyerRecord | None, ShopRecord | None]]]: ...
    def buyer(self, buyer_id: str) -> BuyerRecord | None: ...
    def shop(self, shop_id: str) -> ShopRecord | None: ...


# An instance's connections to PostgreSQL; all but one may be deciding at once (the one left
# for the background checks, the admin routes and /readyz: a flush waiting for a connection
# the others hold would be taken for a database that is down).
POOL_SIZE = 4


def open_database(settings: Settings) -> Database | None:
    """The instance's pool when the settings name a PostgreSQL database, else None."""
    if settings.database_url is None:
        return None
    return Database(settings.database_url.get_secret_value(), max_size=POOL_SIZE)


def flush_threads(settings: Settings) -> int:
    """How many of the coalescer's flushes run at once in threads (`serving.coalesce`): none
    on SQLite (inline on the loop: sub-millisecond, and SQLite serializes its writers), all
    but one of the pool's connections on PostgreSQL (each flush waits on round trips)."""
    return 0 if settings.database_url is None else POOL_SIZE - 1


def open_audit(settings: Settings, database: Database | None, create: bool = True) -> Audit:
    """The audit log the settings name.

    Raises:
        AuditUnavailable: It cannot be opened.
    """
    if database is not None:
        from serving.postgres_audit import PgAuditLog

        return PgAuditLog.open(database, create)
    return AuditLog.open(settings.audit_path, settings.audit_synchronous, create)


def open_store(settings: Settings, database: Database | None) -> Store:
    """The online store the settings name.

    Raises:
        StoreUnavailable: It cannot be opened or holds no snapshot.
    """
    if database is not None:
        from serving.postgres_store import PgOnlineStore

        return PgOnlineStore.open(database)
    return OnlineStore.open(settings.store_path)


def describe_location(settings: Settings) -> dict[str, str]:
    """Where the store and the audit log are, as logs may show it (never a password)."""
    if settings.database_url is not None:
        from serving.database import redact

        where = redact(settings.database_url.get_secret_value())
        return {"store": where, "audit": where}
    # Absolute: a relative default resolves against the working directory.
    return {
        "store": str(settings.store_path.resolve()),
        "audit": str(settings.audit_path.resolve()),
    }
