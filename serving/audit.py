"""The audit log (SQLite): every decision with its request, features, model and policy.

It is also the source of truth for idempotency (refund_id is the key) and for the velocity
limits (auto-approvals per buyer, counted from the records).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from serving.store import connect

DAY_SECONDS = 86_400.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    refund_id TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    buyer_id TEXT NOT NULL,
    shop_id TEXT NOT NULL,
    decision TEXT NOT NULL,
    decided_at REAL NOT NULL,
    request TEXT NOT NULL,
    features TEXT NOT NULL,
    model_name TEXT,
    model_version TEXT,
    policy_version TEXT NOT NULL,
    response TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS approvals_by_buyer
    ON decisions (buyer_id, decided_at) WHERE decision = 'auto_approve';
CREATE TABLE IF NOT EXISTS admin_actions (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


class AuditUnavailable(RuntimeError):
    """The audit log cannot be read or written; no decision may be answered."""


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One row of the audit log."""

    refund_id: str
    request_hash: str
    buyer_id: str
    shop_id: str
    decision: str
    decided_at: float
    request: str
    features: str
    model_name: str | None
    model_version: str | None
    policy_version: str
    response: str


class AuditLog:
    """The audit log on one connection (one per worker; SQLite serializes writers)."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, path: str | Path, synchronous: str = "NORMAL") -> AuditLog:
        """Open (creating if needed) the audit log.

        Raises:
            AuditUnavailable: The file cannot be created or opened.
        """
        path = Path(path)
        try:
            conn = connect(path, create=True)
            conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")
            # Checkpoints run in the background (`checkpoint`), not inside a request's commit.
            conn.execute("PRAGMA wal_autocheckpoint=10000")
            conn.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise AuditUnavailable(f"audit log {path}: {exc}") from exc
        return cls(conn, path)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def checkpoint(self) -> None:
        """Copy the WAL into the database without blocking writers (run off the hot path)."""
        conn = connect(self.path)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    def ping(self) -> None:
        """Check the log can be read.

        Raises:
            AuditUnavailable: It cannot.
        """
        try:
            self._conn.execute("SELECT 1 FROM decisions LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise AuditUnavailable(f"audit log {self.path}: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[AuditTransaction]:
        """A write transaction: everything recorded in it commits together, or nothing does.

        Reads inside it see its own writes, so a batch counts its own approvals.

        Raises:
            AuditUnavailable: The log cannot be written (the transaction is rolled back).
        """
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise AuditUnavailable(f"audit log {self.path}: {exc}") from exc
        try:
            yield AuditTransaction(conn)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise AuditUnavailable(f"audit log {self.path}: {exc}") from exc
        except BaseException:
            _rollback(conn)
            raise

    def get(self, refund_id: str) -> DecisionRecord | None:
        """The stored decision for a refund, if any.

        Raises:
            AuditUnavailable: The log cannot be read.
        """
        try:
            return AuditTransaction(self._conn).get(refund_id)
        except sqlite3.Error as exc:
            raise AuditUnavailable(f"audit log {self.path}: {exc}") from exc

    def record_admin_action(
        self, at: float, actor: str, action: str, target: str, reason: str, detail: str
    ) -> None:
        """Store an admin action (who, what, on what, why).

        Raises:
            AuditUnavailable: The log cannot be written.
        """
        try:
            self._conn.execute(
                "INSERT INTO admin_actions (at, actor, action, target, reason, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (at, actor, action, target, reason, detail),
            )
        except sqlite3.Error as exc:
            raise AuditUnavailable(f"audit log {self.path}: {exc}") from exc


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # the transaction is already gone; nothing was committed


class AuditTransaction:
    """Reads and writes inside one audit transaction."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def get(self, refund_id: str) -> DecisionRecord | None:
        """The stored decision for a refund, if any."""
        row = self._conn.execute(
            "SELECT * FROM decisions WHERE refund_id = ?", (refund_id,)
        ).fetchone()
        return None if row is None else DecisionRecord(*row)

    def approvals(self, buyer_id: str, now: float) -> tuple[int, int]:
        """Auto-approvals of a buyer in the last day and the last 30 days before `now`."""
        row = self._conn.execute(
            "SELECT COALESCE(SUM(decided_at > ?), 0), COUNT(*) FROM decisions "
            "WHERE buyer_id = ? AND decision = 'auto_approve' AND decided_at > ?",
            (now - DAY_SECONDS, buyer_id, now - 30 * DAY_SECONDS),
        ).fetchone()
        return int(row[0]), int(row[1])

    def insert(self, record: DecisionRecord) -> bool:
        """Store a decision unless its refund_id is already stored; True when stored."""
        cursor = self._conn.execute(
            "INSERT OR IGNORE INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.refund_id,
                record.request_hash,
                record.buyer_id,
                record.shop_id,
                record.decision,
                record.decided_at,
                record.request,
                record.features,
                record.model_name,
                record.model_version,
                record.policy_version,
                record.response,
            ),
        )
        return cursor.rowcount == 1
