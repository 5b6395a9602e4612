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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


@dataclass(frozen=True, slots=True)
class StoreMeta:
    """What the current snapshot is: its date, feature set and columns."""

    as_of: str
    feature_set_version: str
    feature_columns: tuple[str, ...]
    materialized_at: str
    policy_version: str


@dataclass(frozen=True, slots=True)
class BuyerRecord:
    """A buyer as the online store knows them (overrides applied)."""

    buyer_id: str
    registered_at: float
    order_count: int
    features: np.ndarray
    revoked: bool
    revoked_reason: str


@dataclass(frozen=True, slots=True)
class ShopRecord:
    """A shop's eligibility (overrides applied) and the metrics it was decided from."""

    shop_id: str
    eligible: bool
    reasons: str
    metrics: dict


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
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


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
                ],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


class OnlineStore:
    """Reads for the request path (one connection per worker) and the admin overrides."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self._conn = conn
        self.path = path
        self._data_version: int | None = None
        self._meta: StoreMeta | None = None

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
        )
        self._data_version = version
        return self._meta

    def lookup(
        self, pairs: Iterable[tuple[str, str]]
    ) -> tuple[StoreMeta, list[tuple[BuyerRecord | None, ShopRecord | None]]]:
        """Look up (buyer_id, shop_id) pairs in one read transaction (one consistent snapshot).

        Raises:
            StoreUnavailable: The store cannot be read.
        """
        conn = self._conn
        try:
            conn.execute("BEGIN")
            try:
                meta = self.meta()
                found = [(self._buyer(b), self._shop(s)) for b, s in pairs]
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"online store {self.path}: {exc}") from exc
        return meta, found

    def _buyer(self, buyer_id: str) -> BuyerRecord | None:
        row = self._conn.execute(
            "SELECT registered_at, order_count, features, revoked, revoked_reason "
            "FROM buyers WHERE buyer_id = ?",
            (buyer_id,),
        ).fetchone()
        override = self._conn.execute(
            "SELECT revoked, reason FROM buyer_overrides WHERE buyer_id = ?", (buyer_id,)
        ).fetchone()
        if row is None:
            if override is not None and override[0]:
                # An admin revoked a buyer the snapshot does not know: keep them revoked.
                return BuyerRecord(buyer_id, float("nan"), 0, np.empty(0), True, override[1])
            return None
        revoked, reason = bool(row[3]), row[4] or ""
        if override is not None:
            revoked, reason = bool(override[0]), override[1]
        return BuyerRecord(
            buyer_id, row[0], row[1], np.frombuffer(row[2], dtype=np.float64), revoked, reason
        )

    def _shop(self, shop_id: str) -> ShopRecord | None:
        row = self._conn.execute(
            "SELECT eligible, reasons, metrics FROM shops WHERE shop_id = ?", (shop_id,)
        ).fetchone()
        override = self._conn.execute(
            "SELECT eligible, reason FROM shop_overrides WHERE shop_id = ?", (shop_id,)
        ).fetchone()
        if row is None and override is None:
            return None
        eligible, reasons = (bool(row[0]), row[1]) if row is not None else (False, "")
        metrics = json.loads(row[2]) if row is not None else {}
        if override is not None:
            eligible, reasons = bool(override[0]), f"set by admin: {override[1]}"
        return ShopRecord(shop_id, eligible, reasons, metrics)

    def buyer(self, buyer_id: str) -> BuyerRecord | None:
        """One buyer, overrides applied (None when unknown)."""
        return self.lookup([(buyer_id, "")])[1][0][0]

    def shop(self, shop_id: str) -> ShopRecord | None:
        """One shop, overrides applied (None when unknown)."""
        return self.lookup([("", shop_id)])[1][0][1]

    def set_buyer_revoked(self, buyer_id: str, revoked: bool, reason: str, actor: str) -> None:
        """Revoke or restore the service for a buyer; survives every refresh."""
        self._write(
            "INSERT OR REPLACE INTO buyer_overrides VALUES (?, ?, ?, ?, ?)",
            (buyer_id, int(revoked), reason, actor, time.time()),
        )

    def set_shop_eligibility(self, shop_id: str, eligible: bool, reason: str, actor: str) -> None:
        """Grant or withdraw the service for a shop; survives every refresh."""
        self._write(
            "INSERT OR REPLACE INTO shop_overrides VALUES (?, ?, ?, ?, ?)",
            (shop_id, int(eligible), reason, actor, time.time()),
        )

    def _write(self, sql: str, params: tuple) -> None:
        try:
            self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"online store {self.path}: {exc}") from exc
