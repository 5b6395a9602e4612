"""The audit log (SQLite): every decision with its request, features, model and policy.

It is also the source of truth for idempotency (refund_id is the key) and for the velocity
limits (auto-approvals per buyer, counted from the records).
"""

from __future__ import annotations

import json
import operator
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
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
            # Checkpoints run in the background (`checkpoint`, then `finish_checkpoint`), not
            # inside a request's commit; this is only the backstop if they stop.
            conn.execute("PRAGMA wal_autocheckpoint=10000")
            conn.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise AuditUnavailable(f"audit log {path}: {exc}") from exc
        return cls(conn, path)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def checkpoint(self) -> None:
        """Copy the WAL into the database without blocking writers (run in a thread).

        Under steady writes this never catches up with the last commit, and SQLite only
        rewinds the WAL once every frame is copied; `finish_checkpoint` does the rest.
        """
        conn = connect(self.path)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    def finish_checkpoint(self) -> None:
        """Copy the frames committed since `checkpoint` started, on the writer's connection.

        Run between requests right after `checkpoint`: only a fraction of a second's frames
        are left, so it is short, and with every frame copied the next commit rewinds the
        WAL. Without it the WAL keeps growing until SQLite's own checkpoint copies
        `wal_autocheckpoint` pages inside some request's commit (30-75 ms measured).
        """
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            raise AuditUnavailable(f"audit log {self.path}: {exc}") from exc

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

    @contextmanager
    def reading(self) -> Iterator[AuditTransaction]:
        """A read transaction: one consistent view, nothing written, nothing locked for writers.

        Raises:
            AuditUnavailable: The log cannot be read.
        """
        conn = self._conn
        try:
            conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise AuditUnavailable(f"audit log {self.path}: {exc}") from exc
        try:
            yield AuditTransaction(conn)
        except sqlite3.Error as exc:
            raise AuditUnavailable(f"audit log {self.path}: {exc}") from exc
        finally:
            _rollback(conn)

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


_INSERT = "INSERT OR IGNORE INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_FIELDS = tuple(field.name for field in fields(DecisionRecord))


# A record's fields as a row, in one C call (not dataclasses.astuple: it deep-copies every
# field; a generator of getattr costs ~3 us a record).
_row: Callable[[DecisionRecord], tuple] = operator.attrgetter(*_FIELDS)


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

    def get_many(self, refund_ids: Sequence[str]) -> dict[str, DecisionRecord]:
        """The stored decisions among these refund ids, in one statement."""
        if len(refund_ids) == 1:  # the plain statement is cheaper than json_each
            stored = self.get(refund_ids[0])
            return {} if stored is None else {stored.refund_id: stored}
        rows = self._conn.execute(
            "SELECT * FROM decisions WHERE refund_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(refund_ids)),),
        )
        return {row[0]: DecisionRecord(*row) for row in rows}

    def approvals_many(self, buyer_ids: Iterable[str], now: float) -> dict[str, tuple[int, int]]:
        """`approvals` for many buyers in one statement (buyers without any are left out)."""
        buyers = sorted(set(buyer_ids))
        if len(buyers) == 1:
            counts = self.approvals(buyers[0], now)
            return {buyers[0]: counts} if counts[1] else {}
        rows = self._conn.execute(
            "SELECT buyer_id, SUM(decided_at > ?), COUNT(*) FROM decisions "
            "WHERE buyer_id IN (SELECT value FROM json_each(?)) "
            "AND decision = 'auto_approve' AND decided_at > ? GROUP BY buyer_id",
            (now - DAY_SECONDS, json.dumps(buyers), now - 30 * DAY_SECONDS),
        )
        return {buyer: (int(day), int(month)) for buyer, day, month in rows}

    def insert(self, record: DecisionRecord) -> bool:
        """Store a decision unless its refund_id is already stored; True when stored."""
        cursor = self._conn.execute(_INSERT, _row(record))
        return cursor.rowcount == 1

    def insert_many(self, records: Sequence[DecisionRecord]) -> int:
        """Store decisions (one `executemany`), skipping refund ids already stored; returns
        how many were stored."""
        cursor = self._conn.executemany(
            _INSERT,
            [_row(record) for record in records],
        )
        return cursor.rowcount
