"""The online store: materialized buyer features, shop eligibility and revocations (SQLite).

One file, WAL mode. `materialize` replaces the snapshot tables in a single transaction, so
readers keep the previous snapshot until the new one commits and a failed run changes
nothing. Admin overrides (revoke or restore a buyer, set a shop's eligibility) live in their
own tables and survive every refresh.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from pydantic_core import to_json

from serving.records import BuyerRecord, Override, ShopRecord, StoreMeta

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS buyers (
    buyer_id TEXT PRIMARY KEY,
    registered_at REAL NOT NULL,
    order_count INTEGER NOT NULL,
    features BLOB NOT NULL,
    revoked INTEGER NOT NULL,
    revoked_reason TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shops (
    shop_id TEXT PRIMARY KEY,
    eligible INTEGER NOT NULL,
    reasons TEXT NOT NULL,
    metrics TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS buyer_overrides (
    buyer_id TEXT PRIMARY KEY, revoked INTEGER NOT NULL, reason TEXT NOT NULL,
    actor TEXT NOT NULL, at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shop_overrides (
    shop_id TEXT PRIMARY KEY, eligible INTEGER NOT NULL, reason TEXT NOT NULL,
    actor TEXT NOT NULL, at REAL NOT NULL
) WITHOUT ROWID;
"""


class StoreUnavailable(RuntimeError):
    """The online store is missing, not materialized, or unreadable."""


def connect(path: str | Path, create: bool = False) -> sqlite3.Connection:
    """Open a SQLite database in WAL mode; without `create` a missing file is an error."""
    path = Path(path)
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    mode = "rwc" if create else "rw"
    conn = sqlite3.connect(
        f"file:{path.resolve()}?mode={mode}",
        uri=True,
        isolation_level=None,
        check_same_thread=False,
        timeout=5.0,
    )
    conn.execute("PRAGMA busy_timeout=5000")
    _wal(conn)
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _wal(conn: sqlite3.Connection, attempts: int = 50) -> None:
    """Put the database in WAL mode. Switching a file that is not in WAL yet needs it to
    itself, and SQLite refuses at once (no busy wait) while another connection, such as a
    second worker starting on the same new file, reads it: retried for up to ~5 s."""
    for attempt in range(attempts):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.1)


def write_snapshot(
    path: str | Path,
    meta: StoreMeta,
    buyers: Iterable[tuple[str, float, int, bytes, int, str | None]],
    shops: Iterable[tuple[str, int, str, str]],
) -> None:
    """Replace the snapshot in one transaction: all of it commits, or nothing changes.

    Args:
        path: The store file (created if missing).
        meta: Describes the snapshot.
        buyers: Rows (buyer_id, registered_at epoch seconds, order_count, float64 feature
            bytes, revoked 0/1, revoked_reason).
        shops: Rows (shop_id, eligible 0/1, reasons, metrics JSON).
    """
    conn = connect(path, create=True)
    try:
        conn.executescript(SCHEMA)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM buyers")
            conn.execute("DELETE FROM shops")
            conn.executemany("INSERT INTO buyers VALUES (?, ?, ?, ?, ?, ?)", buyers)
            conn.executemany("INSERT INTO shops VALUES (?, ?, ?, ?)", shops)
            conn.execute("DELETE FROM meta")
            conn.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [
                    ("as_of", meta.as_of),
                    ("feature_set_version", meta.feature_set_version),
                    ("feature_columns", json.dumps(list(meta.feature_columns))),
                    ("materialized_at", meta.materialized_at),
                    ("policy_version", meta.policy_version),
                    ("generation", uuid.uuid4().hex),
                ],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


_LOOKUP = """
SELECT (SELECT value FROM meta WHERE key = 'generation'),
       b.registered_at, b.order_count, b.features, b.revoked, b.revoked_reason,
       bo.revoked, bo.reason,
       s.eligible, s.reasons, s.metrics,
       so.eligible, so.reason
FROM (SELECT ?1 AS buyer_id, ?2 AS shop_id) AS q
LEFT JOIN buyers AS b ON b.buyer_id = q.buyer_id
LEFT JOIN buyer_overrides AS bo ON bo.buyer_id = q.buyer_id
LEFT JOIN shops AS s ON s.shop_id = q.shop_id
LEFT JOIN shop_overrides AS so ON so.shop_id = q.shop_id
"""

# Many pairs in one statement: the pairs travel as one JSON array [[buyer, shop], ...] (one
# SQL text, so the prepared statement is reused whatever the batch size), and `q.key` is the
# pair's position. One statement is also one read transaction: one snapshot for the batch.
_LOOKUP_MANY = """
SELECT (SELECT value FROM meta WHERE key = 'generation'),
       b.registered_at, b.order_count, b.features, b.revoked, b.revoked_reason,
       bo.revoked, bo.reason,
       s.eligible, s.reasons, s.metrics,
       so.eligible, so.reason,
       q.key
FROM (SELECT key, value ->> 0 AS buyer_id, value ->> 1 AS shop_id FROM json_each(?1)) AS q
LEFT JOIN buyers AS b ON b.buyer_id = q.buyer_id
LEFT JOIN buyer_overrides AS bo ON bo.buyer_id = q.buyer_id
LEFT JOIN shops AS s ON s.shop_id = q.shop_id
LEFT JOIN shop_overrides AS so ON so.shop_id = q.shop_id
"""


def _records(pair: tuple[str, str], row: tuple) -> tuple[BuyerRecord | None, ShopRecord | None]:
    buyer_id, shop_id = pair
    registered_at, order_count, features, revoked, revoked_reason = row[1:6]
    override_revoked, override_reason = row[6:8]
    eligible, reasons, metrics, override_eligible, override_why = row[8:13]
    buyer = None
    if registered_at is not None:
        is_revoked, why = bool(revoked), revoked_reason or ""
        if override_revoked is not None:
            is_revoked, why = bool(override_revoked), override_reason
        vector = np.frombuffer(features, dtype=np.float64)
        buyer = BuyerRecord(buyer_id, registered_at, order_count, vector, is_revoked, why)
    elif override_revoked:
        # An admin revoked a buyer the snapshot does not know: keep them revoked.
        buyer = BuyerRecord(buyer_id, float("nan"), 0, np.empty(0), True, override_reason)
    shop = None
    if override_eligible is not None:
        shop = ShopRecord(
            shop_id, bool(override_eligible), f"set by admin: {override_why}", metrics
        )
    elif eligible is not None:
        shop = ShopRecord(shop_id, bool(eligible), reasons or "", metrics)
    return buyer, shop


def file_id(path: Path) -> tuple[int, int] | None:
    """Which file sits at `path` (device, inode), None when none does."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


class OnlineStore:
    """Reads for the request path (one connection per worker) and the admin overrides."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self._conn = conn
        self.path = path
        self._data_version: int | None = None
        self._meta: StoreMeta | None = None
        self._file = file_id(path)

    def replaced(self) -> bool:
        """Whether another file now sits at the store's path (deleted and materialized
        anew, restored from a backup): this connection still reads the old one. A refresh by
        `materialize` is in place and is seen without reopening."""
        current = file_id(self.path)
        return current is not None and current != self._file

    @classmethod
    def open(cls, path: str | Path) -> OnlineStore:
        """Open an existing, materialized store.

        Raises:
            StoreUnavailable: The file is missing, unreadable or holds no snapshot.
        """
        path = Path(path)
        if not path.is_file():
            raise StoreUnavailable(f"online store {path} does not exist; run materialize")
        try:
            conn = connect(path)
            conn.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"online store {path}: {exc}") from exc
        store = cls(conn, path)
        store.meta()
        return store

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def meta(self) -> StoreMeta:
        """The current snapshot's description, re-read only when another writer committed.

        Raises:
            StoreUnavailable: No snapshot has been materialized, or the file is unreadable.
        """
        try:
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
            if self._meta is not None and version == self._data_version:
                return self._meta
            rows = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"online store {self.path}: {exc}") from exc
        if "feature_columns" not in rows:
            raise StoreUnavailable(f"online store {self.path} holds no snapshot")
        self._meta = StoreMeta(
            as_of=rows["as_of"],
            feature_set_version=rows["feature_set_version"],
            feature_columns=tuple(json.loads(rows["feature_columns"])),
            materialized_at=rows["materialized_at"],
            policy_version=rows["policy_version"],
            generation=rows.get("generation", ""),
        )
        self._data_version = version
        return self._meta

    def lookup(
        self, pairs: Iterable[tuple[str, str]]
    ) -> tuple[StoreMeta, list[tuple[BuyerRecord | None, ShopRecord | None]]]:
        """Look up (buyer_id, shop_id) pairs, all from one consistent snapshot.

        One statement (one pair, or all of a batch) that also returns the snapshot's
        generation; if a refresh committed since `meta` was read, the lookup starts again on
        the new snapshot. That check is also what keeps the cached `meta` current, so a lookup
        is one statement.

        Raises:
            StoreUnavailable: The store cannot be read.
        """
        pairs = list(pairs)
        try:
            for _ in range(3):
                cached = self._meta
                # A snapshot without a generation (an older store) is re-checked every time.
                meta = cached if cached is not None and cached.generation else self.meta()
                rows = self._rows(pairs)
                if all((row[0] or "") == meta.generation for row in rows):
                    found = [_records(pair, row) for pair, row in zip(pairs, rows, strict=True)]
                    return meta, found
                self._meta = None  # a refresh committed meanwhile
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"online store {self.path}: {exc}") from exc
        raise StoreUnavailable(f"online store {self.path}: refreshing too often to read")

    def _rows(self, pairs: list[tuple[str, str]]) -> list[tuple]:
        if len(pairs) == 1:
            return [self._conn.execute(_LOOKUP, pairs[0]).fetchone()]
        rows: list[tuple | None] = [None] * len(pairs)
        for row in self._conn.execute(_LOOKUP_MANY, (to_json(pairs).decode(),)):
            rows[row[13]] = row
        if any(row is None for row in rows):  # cannot happen: json_each yields every pair
            raise StoreUnavailable(f"online store {self.path}: a batch lookup lost rows")
        return rows  # type: ignore[return-value]

    def buyer(self, buyer_id: str) -> BuyerRecord | None:
        """One buyer, overrides applied (None when unknown)."""
        return self.lookup([(buyer_id, "")])[1][0][0]

    def shop(self, shop_id: str) -> ShopRecord | None:
        """One shop, overrides applied (None when unknown)."""
        return self.lookup([("", shop_id)])[1][0][1]

    def apply_overrides(self, overrides: Iterable[Override], timeout: float = 5.0) -> int:
        """Make the store's overrides these (each one replacing the store's for its buyer
        or shop; others are left as they are); returns how many were written.

        The audit log keeps every override durably (`AuditLog.overrides`): this is how a
        store file deleted and materialized anew, or restored from a backup, gets them back
        before it serves. Only the overrides the store does not hold already are written, so
        opening a store that has them all takes no write lock.

        Raises:
            StoreUnavailable: The store could not be written within `timeout` seconds.
        """
        buyers = self._read("SELECT buyer_id, revoked, reason, actor, at FROM buyer_overrides")
        shops = self._read("SELECT shop_id, eligible, reason, actor, at FROM shop_overrides")
        held = {("buyer", row[0]): row[1:] for row in buyers}
        held.update((("shop", row[0]), row[1:]) for row in shops)
        missing = [
            o
            for o in overrides
            if held.get((o.kind, o.target)) != (int(o.flag), o.reason, o.actor, o.at)
        ]
        if not missing:
            return 0
        sql = {
            "buyer": "INSERT OR REPLACE INTO buyer_overrides VALUES (?, ?, ?, ?, ?)",
            "shop": "INSERT OR REPLACE INTO shop_overrides VALUES (?, ?, ?, ?, ?)",
        }
        try:
            conn = connect(self.path)
            try:
                conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
                conn.execute("BEGIN IMMEDIATE")
                for o in missing:
                    conn.execute(sql[o.kind], (o.target, int(o.flag), o.reason, o.actor, o.at))
                conn.execute("COMMIT")
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"online store {self.path}: {exc}") from exc
        return len(missing)

    def _read(self, sql: str) -> list[tuple]:
        try:
            return self._conn.execute(sql).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"online store {self.path}: {exc}") from exc
