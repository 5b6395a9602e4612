"""The online store in PostgreSQL: `serving.store.OnlineStore`'s reads, and the snapshot
write `materialize` makes.

A snapshot is written under a new id (its generation) and made current in the same
transaction that deletes the previous one's rows: readers see the old snapshot until that
commit and the new one after it, never a mix (a lookup is one statement, so one MVCC
snapshot). Admin overrides are not in the snapshot: every lookup joins the audit log's
`overrides` table, so a revocation made on one instance holds on every instance from its
next request, and a new snapshot keeps them all.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable

from serving.database import Database, connect, describe, ensure_schema
from serving.records import BuyerRecord, Override, ShopRecord, StoreMeta
from serving.store import StoreUnavailable, _records

# The same columns, in the same order, as SQLite's lookup (`serving.store._records` reads
# both); q.i is the pair's position.
_LOOKUP = """
SELECT c.snapshot_id,
       b.registered_at, b.order_count, b.features, b.revoked::int, b.revoked_reason,
       bo.flag::int, bo.reason,
       s.eligible::int, s.reasons, s.metrics,
       so.flag::int, so.reason,
       q.i
FROM store_current AS c
CROSS JOIN unnest(%s::text[], %s::text[]) WITH ORDINALITY AS q (buyer_id, shop_id, i)
LEFT JOIN store_buyers AS b ON b.snapshot_id = c.snapshot_id AND b.buyer_id = q.buyer_id
LEFT JOIN overrides AS bo ON bo.kind = 'buyer' AND bo.target = q.buyer_id
LEFT JOIN store_shops AS s ON s.snapshot_id = c.snapshot_id AND s.shop_id = q.shop_id
LEFT JOIN overrides AS so ON so.kind = 'shop' AND so.target = q.shop_id
"""
# One pair (the request path's common case): plain equalities, so each table is read by its
# primary key whatever the statistics say.
_LOOKUP_ONE = """
SELECT c.snapshot_id,
       b.registered_at, b.order_count, b.features, b.revoked::int, b.revoked_reason,
       bo.flag::int, bo.reason,
       s.eligible::int, s.reasons, s.metrics,
       so.flag::int, so.reason,
       1
FROM store_current AS c
LEFT JOIN store_buyers AS b ON b.snapshot_id = c.snapshot_id AND b.buyer_id = %(buyer)s
LEFT JOIN overrides AS bo ON bo.kind = 'buyer' AND bo.target = %(buyer)s
LEFT JOIN store_shops AS s ON s.snapshot_id = c.snapshot_id AND s.shop_id = %(shop)s
LEFT JOIN overrides AS so ON so.kind = 'shop' AND so.target = %(shop)s
WHERE c.id = 1
"""
_META = (
    "SELECT id, as_of, feature_set_version, feature_columns, materialized_at, policy_version "
    "FROM store_snapshots WHERE id = {}"
)
_SWAP_LOCK = 0x46525357  # "FRSW": one materialization swaps at a time


class PgOnlineStore:
    """The online store's reads on the instance's pool."""

    def __init__(self, database: Database):
        self._db = database
        self.path = database.name
        self._meta: StoreMeta | None = None

    @classmethod
    def open(cls, database: Database) -> PgOnlineStore:
        """Open the store; it must hold a snapshot.

        Raises:
            StoreUnavailable: The database cannot be read or holds no snapshot.
        """
        store = cls(database)
        store.meta()
        return store

    def close(self) -> None:
        """Nothing to close: the pool is the instance's."""

    def replaced(self) -> bool:
        """Never: a new snapshot is seen by the next lookup, in place."""
        return False

    def apply_overrides(self, overrides: Iterable[Override], timeout: float = 5.0) -> int:
        """Nothing to write: lookups read the overrides where the audit log keeps them."""
        return 0

    def meta(self) -> StoreMeta:
        """The current snapshot's description.

        Raises:
            StoreUnavailable: No snapshot is current, or the database cannot be read.
        """
        with self._db.connection(StoreUnavailable) as conn:
            row = conn.execute(
                _META.format("(SELECT snapshot_id FROM store_current WHERE id = 1)")
            ).fetchone()
        if row is None:
            raise StoreUnavailable(f"online store {self.path} holds no snapshot; run materialize")
        self._meta = _meta(row)
        return self._meta

    def lookup(
        self, pairs: Iterable[tuple[str, str]]
    ) -> tuple[StoreMeta, list[tuple[BuyerRecord | None, ShopRecord | None]]]:
        """Look up (buyer_id, shop_id) pairs, all in one statement (one snapshot).

        Raises:
            StoreUnavailable: The store cannot be read.
        """
        pairs = list(pairs)
        if not pairs:
            return self.meta(), []
        buyers = [b for b, _ in pairs]
        shops = [s for _, s in pairs]
        for _ in range(3):
            with self._db.connection(StoreUnavailable) as conn:
                if len(pairs) == 1:
                    one = {"buyer": buyers[0], "shop": shops[0]}
                    rows = conn.execute(_LOOKUP_ONE, one).fetchall()
                else:
                    rows = conn.execute(_LOOKUP, (buyers, shops)).fetchall()
                if not rows:
                    raise StoreUnavailable(
                        f"online store {self.path} holds no snapshot; run materialize"
                    )
                generation = rows[0][0]
                meta = self._meta
                if meta is None or meta.generation != generation:
                    row = conn.execute(_META.format("%s"), (generation,)).fetchone()
                    if row is None:
                        continue  # replaced and deleted meanwhile: look again
                    meta = self._meta = _meta(row)
            ordered: list[tuple | None] = [None] * len(pairs)
            for row in rows:
                ordered[row[13] - 1] = row
            found = [_records(pair, row) for pair, row in zip(pairs, ordered, strict=True)]  # type: ignore[arg-type]
            return meta, found
        raise StoreUnavailable(f"online store {self.path}: refreshing too often to read")

    def buyer(self, buyer_id: str) -> BuyerRecord | None:
        """One buyer, overrides applied (None when unknown)."""
        return self.lookup([(buyer_id, "")])[1][0][0]

    def shop(self, shop_id: str) -> ShopRecord | None:
        """One shop, overrides applied (None when unknown)."""
        return self.lookup([("", shop_id)])[1][0][1]


def _meta(row: tuple) -> StoreMeta:
    generation, as_of, feature_set_version, columns, materialized_at, policy_version = row
    return StoreMeta(
        as_of=as_of,
        feature_set_version=feature_set_version,
        feature_columns=tuple(json.loads(columns)),
        materialized_at=materialized_at,
        policy_version=policy_version,
        generation=generation,
    )


def write_snapshot(
    url: str,
    meta: StoreMeta,
    buyers: Iterable[tuple[str, float, int, bytes, int, str | None]],
    shops: Iterable[tuple[str, int, str, str]],
) -> str:
    """Write a snapshot and make it current in one transaction (`store.write_snapshot`'s
    rows); the schema is migrated first when behind. Returns the snapshot's id.

    Raises:
        DatabaseError, SchemaError: The database cannot be reached, migrated or written
            (nothing changed).
    """
    import psycopg

    from serving.database import DatabaseError

    ensure_schema(url)
    snapshot_id = uuid.uuid4().hex
    with connect(url) as conn:
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SWAP_LOCK,))
                conn.execute(
                    "INSERT INTO store_snapshots VALUES (%s, %s, %s, %s, %s, %s)",
                    (
                        snapshot_id,
                        meta.as_of,
                        meta.feature_set_version,
                        json.dumps(list(meta.feature_columns)),
                        meta.materialized_at,
                        meta.policy_version,
                    ),
                )
                with conn.cursor().copy(
                    "COPY store_buyers (snapshot_id, buyer_id, registered_at, order_count, "
                    "features, revoked, revoked_reason) FROM STDIN"
                ) as copy:
                    for buyer_id, registered_at, count, vector, revoked, why in buyers:
                        copy.write_row(
                            (
                                snapshot_id,
                                buyer_id,
                                registered_at,
                                count,
                                vector,
                                bool(revoked),
                                why,
                            )
                        )
                with conn.cursor().copy(
                    "COPY store_shops (snapshot_id, shop_id, eligible, reasons, metrics) FROM STDIN"
                ) as copy:
                    for shop_id, eligible, reasons, metrics in shops:
                        copy.write_row((snapshot_id, shop_id, bool(eligible), reasons, metrics))
                conn.execute(
                    "INSERT INTO store_current VALUES (1, %s) "
                    "ON CONFLICT (id) DO UPDATE SET snapshot_id = excluded.snapshot_id",
                    (snapshot_id,),
                )
                for table in ("store_buyers", "store_shops"):
                    conn.execute(f"DELETE FROM {table} WHERE snapshot_id <> %s", (snapshot_id,))
                conn.execute("DELETE FROM store_snapshots WHERE id <> %s", (snapshot_id,))
            # Fresh statistics for the batch lookups' plan (a hash join over a table the
            # planner thinks empty scans every buyer on every lookup).
            conn.execute("ANALYZE store_buyers, store_shops, store_current, overrides")
        except psycopg.Error as exc:
            raise DatabaseError(describe(exc, url)) from None
    return snapshot_id
