"""The audit log (SQLite): every decision with its request, features, model and policy.

It is also the source of truth for idempotency (refund_id is the key) and for the velocity
limits (auto-approvals per buyer, counted from the records).
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pydantic_core import to_json

from serving.records import Override
from serving.store import StoreMeta, connect, file_id

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
    features BLOB NOT NULL,
    model_name TEXT,
    model_version TEXT,
    policy_version TEXT NOT NULL,
    response TEXT NOT NULL,
    snapshot TEXT,
    challenger_version TEXT,
    challenger_score REAL,
    challenger_decision TEXT
);
CREATE INDEX IF NOT EXISTS approvals_by_buyer
    ON decisions (buyer_id, decided_at) WHERE decision = 'auto_approve';
CREATE INDEX IF NOT EXISTS approvals_by_shop
    ON decisions (shop_id, decided_at) WHERE decision = 'auto_approve';
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY,
    as_of TEXT NOT NULL,
    feature_set_version TEXT NOT NULL,
    feature_columns TEXT NOT NULL,
    materialized_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS identity (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    log_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS health (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS admin_actions (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS overrides (
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    flag INTEGER NOT NULL,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (kind, target)
) WITHOUT ROWID;
"""
# `overrides` is every admin override in force (the last one for each buyer and shop), written
# in the transaction that records the admin action: the durable copy the store's own override
# tables are restored from when a store file is replaced (`OnlineStore.apply_overrides`).
# A decision's feature vector is stored as the online store holds it: float64 little-endian
# (440 bytes for 55 features; NaN for a missing value), in the column order of its snapshot,
# described once in `snapshots` (the store's generation, date, feature set and columns).
# Empty when the buyer was unknown or the store unavailable. `AuditLog.features` reads it
# back. Logs written before `snapshot` existed hold the features as JSON text; they are
# extended in place on open and read back the same way.
# `challenger_*` is the challenger in shadow (`serving.shadow`): the version scored beside the
# champion on the same feature row, its score and the decision it would have made; never
# acted on. Null when no challenger was loaded, or it could not score that row.


class AuditUnavailable(RuntimeError):
    """The audit log cannot be read or written; no decision may be answered."""


class DecisionRecord(NamedTuple):
    """One row of the audit log, in its columns' order (a tuple: built in ~0.7 us where a
    frozen dataclass took ~5, and bound to the insert as it is)."""

    refund_id: str
    request_hash: str
    buyer_id: str
    shop_id: str
    decision: str
    decided_at: float
    request: str
    features: bytes | str  # float64 vector (see SCHEMA); JSON text in logs from before
    model_name: str | None
    model_version: str | None
    policy_version: str
    response: str
    snapshot: str | None  # snapshots.id of the features; None when the store was unavailable
    # The challenger in shadow (see SCHEMA); None when there was none or it failed.
    challenger_version: str | None = None
    challenger_score: float | None = None
    challenger_decision: str | None = None


BUSY_TIMEOUT_MS = 250  # the longest a request waits for the audit log's write lock
# How long /readyz stays not ready after a write transaction failed (a full disk, a read-only
# file): long enough for a load balancer's probe to see it and drain the instance, even when
# the health row's own write slips through (it rewrites a page already there; a decision
# needs new ones).
WRITE_FAILURE_HOLD_SECONDS = 5.0
_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)  # another writer's lock, not a failure


class AuditLog:
    """The audit log on one connection (one per worker; SQLite serializes writers)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, log_id: str):
        self._conn = conn
        self.path = path
        self.log_id = log_id  # written once, when the log is created
        self._file = file_id(path)
        # Snapshots this connection has seen committed in `snapshots` (described once).
        self.snapshots_recorded: set[str] = set()
        self._write_failed_at = -math.inf  # time.monotonic() of the last failed write

    def write_failed_recently(self, hold: float = WRITE_FAILURE_HOLD_SECONDS) -> bool:
        """Whether a write transaction failed in the last `hold` seconds (not counting a
        write lock another writer held too long): /readyz reports not ready meanwhile."""
        return time.monotonic() - self._write_failed_at < hold

    def _note_write_failure(self, exc: BaseException | None) -> None:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _BUSY:
            self._write_failed_at = time.monotonic()

    @classmethod
    def open(cls, path: str | Path, synchronous: str = "NORMAL", create: bool = True) -> AuditLog:
        """Open the audit log, creating it if needed and `create`.

        Raises:
            AuditUnavailable: The file cannot be created or opened.
        """
        path = Path(path)
        conn = None
        try:
            conn = connect(path, create=create)
            # The request path waits for the write lock on the event loop: a few ms is
            # another worker's commit; a lock held longer (a stuck writer, someone's shell)
            # is answered 503 after this, not after 5 s with every request frozen behind it.
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")
            # Checkpoints run in the background (`checkpoint`, then `finish_checkpoint`), not
            # inside a request's commit; this is only the backstop if they stop.
            conn.execute("PRAGMA wal_autocheckpoint=10000")
            _upgrade(conn)
            conn.executescript(SCHEMA)
            # Which log this is, whatever its path: a worker never takes another for it.
            conn.execute("INSERT OR IGNORE INTO identity VALUES (1, ?)", (uuid.uuid4().hex,))
            log_id = conn.execute("SELECT log_id FROM identity").fetchone()[0]
        except (OSError, sqlite3.Error) as exc:
            if conn is not None:
                conn.close()
            raise AuditUnavailable(f"audit log {path}: {exc}") from exc
        return cls(conn, path, log_id)

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

    def moved(self) -> bool:
        """Whether the file at the log's path is no longer the one this connection writes:
        deleted or renamed (what it writes then is lost to everyone else), or replaced."""
        return file_id(self.path) != self._file

    def ping(self, now: float) -> None:
        """Check the log takes a write as a decision's commit would: the write lock and a
        one-row update, so a log that can be read but not written (a full disk, a read-only
        file) is not reported ready.

        Raises:
            AuditUnavailable: It cannot.
        """
        with self.transaction():
            self._conn.execute("INSERT OR REPLACE INTO health VALUES (1, ?)", (now,))

    def _begin(self, statement: str) -> sqlite3.Connection:
        """Start a transaction on the log's connection.

        Raises:
            AuditUnavailable: It cannot be started.
        """
        try:
            self._conn.execute(statement)
        except sqlite3.Error as exc:
            raise AuditUnavailable(f"audit log {self.path}: {exc}") from exc
        return self._conn

    @contextmanager
    def transaction(self) -> Iterator[AuditTransaction]:
        """A write transaction: everything recorded in it commits together, or nothing does.

        Reads inside it see its own writes, so a batch counts its own approvals.

        Raises:
            AuditUnavailable: The log cannot be written (the transaction is rolled back).
        """
        try:
            conn = self._begin("BEGIN IMMEDIATE")
        except AuditUnavailable as exc:
            self._note_write_failure(exc.__cause__)
            raise
        try:
            yield AuditTransaction(conn)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            self._note_write_failure(exc)
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
        conn = self._begin("BEGIN")
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

    def features(self, refund_id: str) -> dict | None:
        """The feature vector a decision was made with, as the audit record keeps it.

        Returns:
            None when the refund was never decided; else `{"as_of", "feature_set_version",
            "values"}`, `values` mapping each feature to its value (None when missing), or
            None itself when the buyer was unknown or the store unavailable.

        Raises:
            AuditUnavailable: The log cannot be read.
        """
        try:
            row = self._conn.execute(
                "SELECT d.features, s.as_of, s.feature_set_version, s.feature_columns "
                "FROM decisions AS d LEFT JOIN snapshots AS s ON s.id = d.snapshot "
                "WHERE d.refund_id = ?",
                (refund_id,),
            ).fetchone()
        except sqlite3.Error as exc:
            raise AuditUnavailable(f"audit log {self.path}: {exc}") from exc
        if row is None:
            return None
        vector, as_of, feature_set_version, columns = row
        if isinstance(vector, str):  # written before snapshots: JSON of the same shape
            return json.loads(vector)
        values = None
        if vector and columns:
            names = json.loads(columns)
            numbers = np.frombuffer(vector, dtype="<f8").tolist()
            values = {n: None if math.isnan(v) else v for n, v in zip(names, numbers, strict=True)}
        return {"as_of": as_of, "feature_set_version": feature_set_version, "values": values}

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

    def record_override(self, override: Override, action: str, detail: str) -> Override | None:
        """Keep an admin override durably and record its action, in one transaction.

        Returns:
            The override it replaced (None when there was none), for `revert_override`.

        Raises:
            AuditUnavailable: The log cannot be written; nothing was recorded.
        """
        o = override
        with self.transaction():
            row = self._conn.execute(
                "SELECT * FROM overrides WHERE kind = ? AND target = ?", (o.kind, o.target)
            ).fetchone()
            self._conn.execute("INSERT OR REPLACE INTO overrides VALUES (?, ?, ?, ?, ?, ?)", o)
            self._conn.execute(
                "INSERT INTO admin_actions (at, actor, action, target, reason, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (o.at, o.actor, action, o.target, o.reason, detail),
            )
        return None if row is None else _override(row)

    def revert_override(
        self, override: Override, previous: Override | None, action: str, detail: str
    ) -> None:
        """Put back the override `record_override` replaced (the change could not be made),
        recording `action` (the failure), in one transaction.

        Raises:
            AuditUnavailable: The log cannot be written.
        """
        with self.transaction():
            self._conn.execute(
                "DELETE FROM overrides WHERE kind = ? AND target = ?",
                (override.kind, override.target),
            )
            if previous is not None:
                self._conn.execute("INSERT INTO overrides VALUES (?, ?, ?, ?, ?, ?)", previous)
            self._conn.execute(
                "INSERT INTO admin_actions (at, actor, action, target, reason, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (override.at, override.actor, action, override.target, override.reason, detail),
            )

    def overrides(self) -> list[Override]:
        """Every admin override in force.

        Raises:
            AuditUnavailable: The log cannot be read.
        """
        try:
            rows = self._conn.execute("SELECT * FROM overrides ORDER BY at").fetchall()
        except sqlite3.Error as exc:
            raise AuditUnavailable(f"audit log {self.path}: {exc}") from exc
        return [_override(row) for row in rows]


def _override(row: tuple) -> Override:
    kind, target, flag, reason, actor, at = row
    return Override(kind, target, bool(flag), reason, actor, at)


_FIELDS = DecisionRecord._fields
_INSERT = (
    f"INSERT OR IGNORE INTO decisions ({', '.join(_FIELDS)}) "
    f"VALUES ({', '.join('?' * len(_FIELDS))})"
)


# Columns added after the first logs were written, in the order SCHEMA lists them (a record
# is read back by position, `DecisionRecord(*row)`).
_ADDED_COLUMNS = (
    ("snapshot", "TEXT"),
    ("challenger_version", "TEXT"),
    ("challenger_score", "REAL"),
    ("challenger_decision", "TEXT"),
)


def _upgrade(conn: sqlite3.Connection) -> None:
    """Extend a log written before `snapshots` (features as JSON text) or before the shadow
    challenger's columns in place: the missing nullable columns, at the end; its records
    stay as they are. One way: older code cannot write the new rows. Under the write lock,
    so workers opening the same old log together upgrade it once."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(decisions)")}
        if columns:
            for name, kind in _ADDED_COLUMNS:
                if name not in columns:
                    conn.execute(f"ALTER TABLE decisions ADD COLUMN {name} {kind}")
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _json_text(values: list) -> str:
    # A statement's json_each parameter: pydantic's serializer, ~5x faster than json.dumps.
    return to_json(values).decode()


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # the transaction is already gone; nothing was committed


class AuditTransaction:
    """Reads and writes inside one audit transaction."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def hold(
        self, buyers: Iterable[str], refunds: Iterable[str], shops: Iterable[str] = ()
    ) -> None:
        """Nothing to take: `BEGIN IMMEDIATE` already holds the whole log for this
        transaction (PostgreSQL's log locks each buyer, refund id and shop instead)."""

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

    def expected_loss_approved(
        self, shop_id: str, buyer_id: str, now: float
    ) -> tuple[float, float]:
        """The expected loss auto-approved (sum of P(bad) x paid amount, fen) for a shop in
        the last day and for a buyer in the last 30 days before `now`: the loss budget's
        running sums, read from each approval's answer (its score) and request (its paid
        amount, "299.99" CNY: rounded to fen)."""
        loss = (
            "COALESCE(SUM(json_extract(response, '$.buyer.score') * "
            "ROUND(CAST(json_extract(request, '$.order.paid_amount') AS REAL) * 100)), 0.0)"
        )
        shop = self._conn.execute(
            f"SELECT {loss} FROM decisions WHERE shop_id = ? AND decision = 'auto_approve' "
            "AND decided_at > ?",
            (shop_id, now - DAY_SECONDS),
        ).fetchone()
        buyer = self._conn.execute(
            f"SELECT {loss} FROM decisions WHERE buyer_id = ? AND decision = 'auto_approve' "
            "AND decided_at > ?",
            (buyer_id, now - 30 * DAY_SECONDS),
        ).fetchone()
        return float(shop[0]), float(buyer[0])

    def get_many(self, refund_ids: Sequence[str]) -> dict[str, DecisionRecord]:
        """The stored decisions among these refund ids, in one statement."""
        if len(refund_ids) == 1:  # the plain statement is cheaper than json_each
            stored = self.get(refund_ids[0])
            return {} if stored is None else {stored.refund_id: stored}
        rows = self._conn.execute(
            "SELECT * FROM decisions WHERE refund_id IN (SELECT value FROM json_each(?))",
            (_json_text(list(refund_ids)),),
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
            (now - DAY_SECONDS, _json_text(buyers), now - 30 * DAY_SECONDS),
        )
        return {buyer: (int(day), int(month)) for buyer, day, month in rows}

    def record_snapshot(self, snapshot_id: str, meta: StoreMeta) -> None:
        """Describe a store snapshot the decisions' feature vectors refer to (once)."""
        columns = json.dumps(list(meta.feature_columns))
        self._conn.execute(
            "INSERT OR IGNORE INTO snapshots VALUES (?, ?, ?, ?, ?)",
            (snapshot_id, meta.as_of, meta.feature_set_version, columns, meta.materialized_at),
        )

    def insert(self, record: DecisionRecord) -> bool:
        """Store a decision unless its refund_id is already stored; True when stored."""
        cursor = self._conn.execute(_INSERT, record)
        return cursor.rowcount == 1

    def insert_many(self, records: Sequence[DecisionRecord]) -> int:
        """Store decisions (one `executemany`), skipping refund ids already stored; returns
        how many were stored."""
        cursor = self._conn.executemany(_INSERT, records)
        return cursor.rowcount
