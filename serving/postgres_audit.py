"""The audit log in PostgreSQL: the SQLite log's interface (`serving.audit`), shared by every
instance that points FASTREFUND_DATABASE_URL at one database.

What holds across instances, and why:

- One record per refund_id: the insert is `ON CONFLICT (refund_id) DO NOTHING`; an
  instance that loses the race reads the winner's record (committed: the insert waited for
  it) and replays it, or answers 409 for another body.
- Velocity limits (and the loss budget's sums) are never exceeded: a deciding transaction
  first takes a transaction-scoped advisory lock for each of its buyers, refund ids and,
  when the loss budget counts, shops (`hold`), then counts. A second instance deciding for
  the same buyer waits at the lock until the first commits, and its count (a new statement,
  so a new READ COMMITTED snapshot) sees the first's approval. A lock taken in the same
  statement as the count would not do: the statement's snapshot predates the wait. Locks
  are taken in one sorted order, so two batches cannot deadlock.
- An approval is answered only after its COMMIT returned (sent with the inserts, the last
  statement of a deciding transaction: `_last_write`); a commit that fails or is lost
  answers 503, and the client's retry finds the record or decides anew.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.audit import (
    DAY_SECONDS,
    WRITE_FAILURE_HOLD_SECONDS,
    AuditUnavailable,
    DecisionRecord,
)
from serving.database import Database, latest_version, schema_version
from serving.records import Override, StoreMeta

if TYPE_CHECKING:
    import psycopg

_FIELDS = DecisionRecord._fields
_COLUMNS = ", ".join(_FIELDS)
_INSERT = (
    f"INSERT INTO decisions ({_COLUMNS}) VALUES ({', '.join(['%s'] * len(_FIELDS))}) "
    "ON CONFLICT (refund_id) DO NOTHING"
)
_LOSS = (
    "COALESCE(SUM((response::jsonb -> 'buyer' ->> 'score')::float8 * "
    "ROUND((request::jsonb -> 'order' ->> 'paid_amount')::numeric * 100)::float8), 0.0)"
)


def lock_key(kind: str, key: str) -> int:
    """The advisory lock of a buyer, refund id or shop: 64 bits of a digest (a signed bigint)."""
    digest = hashlib.blake2b(f"{kind}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _record(row: tuple) -> DecisionRecord:
    values = list(row)
    values[7] = bytes(values[7])  # bytea comes back as bytes or memoryview
    return DecisionRecord(*values)


class PgAuditLog:
    """The audit log on the instance's pool (`serving.database.Database`)."""

    def __init__(self, database: Database, log_id: str):
        self._db = database
        self.path = database.name  # what messages call it (redacted)
        self.log_id = log_id
        self.snapshots_recorded: set[str] = set()
        self._instance = uuid.uuid4().hex  # this process's row in `health`
        self._write_failed_at = -math.inf

    def write_failed_recently(self, hold: float = WRITE_FAILURE_HOLD_SECONDS) -> bool:
        """Whether a write transaction failed in the last `hold` seconds (/readyz)."""
        return time.monotonic() - self._write_failed_at < hold

    @classmethod
    def open(cls, database: Database, create: bool = True) -> PgAuditLog:
        """Open the log: the schema must be this code's (`python -m serving migrate`).

        Raises:
            AuditUnavailable: The database cannot be reached or its schema is not this code's.
        """
        with database.connection(AuditUnavailable) as conn:
            version = schema_version(conn)
            if version != latest_version():
                raise AuditUnavailable(
                    f"audit log {database.name}: schema version {version}, this code needs "
                    f"{latest_version()}: run `python -m serving migrate`"
                )
            with conn.transaction():
                conn.execute(
                    "INSERT INTO identity VALUES (1, %s) ON CONFLICT DO NOTHING",
                    (uuid.uuid4().hex,),
                )
                row = conn.execute("SELECT log_id FROM identity").fetchone()
        assert row is not None
        return cls(database, row[0])

    def close(self) -> None:
        """Nothing to close: the pool is the instance's (`Database.close`)."""

    def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL checkpoints its own WAL."""

    def finish_checkpoint(self) -> None:
        """Nothing to do (see `checkpoint`)."""

    def moved(self) -> bool:
        """A database is not a file: it cannot be moved under the instance."""
        return False

    def ping(self, now: float) -> None:
        """Check the log takes a write as a decision's commit would (this instance's row).

        Raises:
            AuditUnavailable: It cannot.
        """
        with self.transaction() as tx:
            tx.conn.execute(
                "INSERT INTO health VALUES (%s, %s) "
                "ON CONFLICT (instance) DO UPDATE SET checked_at = excluded.checked_at",
                (self._instance, now),
            )

    @contextmanager
    def transaction(self) -> Iterator[PgAuditTransaction]:
        """A write transaction; its COMMIT has returned when the block ends without error.

        Raises:
            AuditUnavailable: The database cannot be written (rolled back, or the commit's
                outcome unknown: nothing may be answered either way).
        """
        try:
            with self._db.connection(AuditUnavailable) as conn:
                # BEGIN is sent with the transaction's first statement (`PgAuditTransaction`):
                # one round trip fewer on the request path.
                tx = PgAuditTransaction(conn, begin=True)
                try:
                    yield tx
                    tx.finish("COMMIT")
                except BaseException:
                    tx.finish("ROLLBACK")
                    raise
        except AuditUnavailable:
            self._write_failed_at = time.monotonic()
            raise

    @contextmanager
    def reading(self) -> Iterator[PgAuditTransaction]:
        """A read transaction, always rolled back.

        Raises:
            AuditUnavailable: The database cannot be read.
        """
        with (
            self._db.connection(AuditUnavailable) as conn,
            conn.transaction(force_rollback=True),
        ):
            yield PgAuditTransaction(conn)

    def get(self, refund_id: str) -> DecisionRecord | None:
        """The stored decision for a refund, if any.

        Raises:
            AuditUnavailable: The log cannot be read.
        """
        with self._db.connection(AuditUnavailable) as conn:
            return PgAuditTransaction(conn).get(refund_id)

    def features(self, refund_id: str) -> dict | None:
        """The feature vector a decision was made with (as `AuditLog.features`).

        Raises:
            AuditUnavailable: The log cannot be read.
        """
        with self._db.connection(AuditUnavailable) as conn:
            row = conn.execute(
                "SELECT d.features, s.as_of, s.feature_set_version, s.feature_columns "
                "FROM decisions AS d LEFT JOIN snapshots AS s ON s.id = d.snapshot "
                "WHERE d.refund_id = %s",
                (refund_id,),
            ).fetchone()
        if row is None:
            return None
        vector, as_of, feature_set_version, columns = row
        values = None
        if vector and columns:
            names = json.loads(columns)
            numbers = np.frombuffer(bytes(vector), dtype="<f8").tolist()
            values = {n: None if math.isnan(v) else v for n, v in zip(names, numbers, strict=True)}
        return {"as_of": as_of, "feature_set_version": feature_set_version, "values": values}

    def record_admin_action(
        self, at: float, actor: str, action: str, target: str, reason: str, detail: str
    ) -> None:
        """Store an admin action.

        Raises:
            AuditUnavailable: The log cannot be written.
        """
        with self._db.connection(AuditUnavailable) as conn:
            _admin_action(conn, at, actor, action, target, reason, detail)

    def record_override(self, override: Override, action: str, detail: str) -> Override | None:
        """Keep an override and record its action in one transaction; every instance's next
        lookup reads it (`PgOnlineStore`). Returns the override it replaced.

        Raises:
            AuditUnavailable: The log cannot be written; nothing was recorded.
        """
        o = override
        with self.transaction() as tx:
            row = tx.conn.execute(
                "SELECT * FROM overrides WHERE kind = %s AND target = %s FOR UPDATE",
                (o.kind, o.target),
            ).fetchone()
            tx.conn.execute(
                "INSERT INTO overrides VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (kind, target) DO UPDATE SET flag = excluded.flag, "
                "reason = excluded.reason, actor = excluded.actor, at = excluded.at",
                tuple(o),
            )
            _admin_action(tx.conn, o.at, o.actor, action, o.target, o.reason, detail)
        return None if row is None else _override(row)

    def revert_override(
        self, override: Override, previous: Override | None, action: str, detail: str
    ) -> None:
        """Put back the override `record_override` replaced, recording `action`.

        Raises:
            AuditUnavailable: The log cannot be written.
        """
        o = override
        with self.transaction() as tx:
            tx.conn.execute(
                "DELETE FROM overrides WHERE kind = %s AND target = %s", (o.kind, o.target)
            )
            if previous is not None:
                tx.conn.execute(
                    "INSERT INTO overrides VALUES (%s, %s, %s, %s, %s, %s)", tuple(previous)
                )
            _admin_action(tx.conn, o.at, o.actor, action, o.target, o.reason, detail)

    def overrides(self) -> list[Override]:
        """Every admin override in force.

        Raises:
            AuditUnavailable: The log cannot be read.
        """
        with self._db.connection(AuditUnavailable) as conn:
            rows = conn.execute("SELECT * FROM overrides ORDER BY at").fetchall()
        return [_override(row) for row in rows]


def _admin_action(
    conn: psycopg.Connection,
    at: float,
    actor: str,
    action: str,
    target: str,
    reason: str,
    detail: str,
) -> None:
    conn.execute(
        "INSERT INTO admin_actions (at, actor, action, target, reason, detail) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (at, actor, action, target, reason, detail),
    )


def _override(row: tuple) -> Override:
    kind, target, flag, reason, actor, at = row
    return Override(kind, target, bool(flag), reason, actor, at)


class PgAuditTransaction:
    """Reads and writes inside one PostgreSQL transaction (`AuditTransaction`'s methods)."""

    def __init__(self, conn: psycopg.Connection, begin: bool = False):
        self._conn = conn
        # Statements sent, in one pipeline, ahead of the next one that needs an answer: the
        # BEGIN and the locks (`hold`). PostgreSQL runs them in order, so the statement after
        # the locks starts (and takes its READ COMMITTED snapshot) once they are held.
        self._pending: list[tuple[str, tuple]] = [("BEGIN", ())] if begin else []
        self._begun = not begin
        self._write = begin  # a write transaction: its inserts carry the COMMIT (`_last_write`)
        self._done = False  # committed already

    @property
    def conn(self) -> psycopg.Connection:
        """The connection, with every pending statement sent (for statements run directly)."""
        self._flush()
        return self._conn

    def _flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            with self._conn.pipeline():
                for sql, params in pending:
                    self._conn.execute(sql, params or None)
            self._begun = True

    def _execute(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> psycopg.Cursor:
        """Run a statement, sending the pending ones with it in one round trip."""
        if not self._pending:
            return self._conn.execute(sql, params)
        pending, self._pending = self._pending, []
        with self._conn.pipeline():
            for text, values in pending:
                self._conn.execute(text, values or None)
            cursor = self._conn.execute(sql, params)
        self._begun = True
        return cursor

    def finish(self, statement: str) -> None:
        """COMMIT or ROLLBACK what was begun (nothing when no statement was sent)."""
        import psycopg

        if not self._begun or self._done:
            self._pending = []
            return
        if statement == "ROLLBACK":
            try:
                self._conn.execute("ROLLBACK")
            except psycopg.Error:
                pass  # the connection is gone, and the transaction with it
            return
        self._conn.execute(statement)

    def hold(
        self, buyers: Iterable[str], refunds: Iterable[str], shops: Iterable[str] = ()
    ) -> None:
        """Wait for, then hold until commit, the locks of these buyers, refund ids and shops
        (see the module's docstring), in ascending key order."""
        keys = {lock_key("buyer", b) for b in buyers}
        keys.update(lock_key("refund", r) for r in refunds)
        keys.update(lock_key("shop", s) for s in shops)
        # unnest yields the array in order and each row's lock is taken as it is read. Sent
        # with the next statement (`_execute`), which runs once every lock is held.
        self._pending.append(
            ("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k", (sorted(keys),))
        )

    def get(self, refund_id: str) -> DecisionRecord | None:
        row = self._execute(
            f"SELECT {_COLUMNS} FROM decisions WHERE refund_id = %s", (refund_id,)
        ).fetchone()
        return None if row is None else _record(row)

    def approvals(self, buyer_id: str, now: float) -> tuple[int, int]:
        """Auto-approvals of a buyer in the last day and the last 30 days before `now`."""
        row = self._execute(
            "SELECT COUNT(*) FILTER (WHERE decided_at > %s), COUNT(*) FROM decisions "
            "WHERE buyer_id = %s AND decision = 'auto_approve' AND decided_at > %s",
            (now - DAY_SECONDS, buyer_id, now - 30 * DAY_SECONDS),
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def expected_loss_approved(
        self, shop_id: str, buyer_id: str, now: float
    ) -> tuple[float, float]:
        """As `AuditTransaction.expected_loss_approved`: the shop's last day, the buyer's
        last 30 days."""
        shop = self._execute(
            f"SELECT {_LOSS} FROM decisions WHERE shop_id = %s AND decision = 'auto_approve' "
            "AND decided_at > %s",
            (shop_id, now - DAY_SECONDS),
        ).fetchone()
        buyer = self._execute(
            f"SELECT {_LOSS} FROM decisions WHERE buyer_id = %s AND decision = 'auto_approve' "
            "AND decided_at > %s",
            (buyer_id, now - 30 * DAY_SECONDS),
        ).fetchone()
        assert shop is not None and buyer is not None
        return float(shop[0]), float(buyer[0])

    def get_many(self, refund_ids: Sequence[str]) -> dict[str, DecisionRecord]:
        rows = self._execute(
            f"SELECT {_COLUMNS} FROM decisions WHERE refund_id = ANY(%s)", (list(refund_ids),)
        ).fetchall()
        return {row[0]: _record(row) for row in rows}

    def approvals_many(self, buyer_ids: Iterable[str], now: float) -> dict[str, tuple[int, int]]:
        rows = self._execute(
            "SELECT buyer_id, COUNT(*) FILTER (WHERE decided_at > %s), COUNT(*) FROM decisions "
            "WHERE buyer_id = ANY(%s) AND decision = 'auto_approve' AND decided_at > %s "
            "GROUP BY buyer_id",
            (now - DAY_SECONDS, sorted(set(buyer_ids)), now - 30 * DAY_SECONDS),
        ).fetchall()
        return {buyer: (int(day), int(month)) for buyer, day, month in rows}

    def record_snapshot(self, snapshot_id: str, meta: StoreMeta) -> None:
        self._execute(
            "INSERT INTO snapshots VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (
                snapshot_id,
                meta.as_of,
                meta.feature_set_version,
                json.dumps(list(meta.feature_columns)),
                meta.materialized_at,
            ),
        )

    def insert(self, record: DecisionRecord) -> bool:
        """Store a decision unless its refund_id is already stored; True when stored (and,
        in a write transaction, committed: see `_last_write`)."""
        if self._write:
            return self._last_write(lambda c: c.execute(_INSERT, tuple(record))) == 1
        return self._execute(_INSERT, tuple(record)).rowcount == 1

    def _last_write(self, run: Callable[[psycopg.Cursor], object]) -> int:
        """Send the pending statements, the transaction's inserts (`run` on a cursor) and
        its COMMIT in one pipeline; returns the rows inserted, committed by then.

        The service writes nothing after its inserts (they are the last statement of its
        transaction), so the COMMIT goes with them: one round trip fewer. What it reads
        afterwards (a replayed record) reads what is committed, the winner's row included.
        """
        pending, self._pending = self._pending, []
        with self._conn.pipeline():
            for text, values in pending:
                self._conn.execute(text, values or None)
            cursor = self._conn.cursor()
            run(cursor)
            self._conn.execute("COMMIT")
        self._done = True
        return cursor.rowcount

    def insert_many(self, records: Sequence[DecisionRecord]) -> int:
        """Store decisions, skipping refund ids already stored; returns how many were stored.
        `executemany` sends them all in one pipeline (its row count is the sum): ~6x faster
        than one INSERT over unnest()ed arrays, whose array adaptation is Python's."""
        if not records:
            return 0
        if self._write:
            return self._last_write(lambda c: c.executemany(_INSERT, records))
        self._flush()
        with self._conn.cursor() as cursor:
            cursor.executemany(_INSERT, records)
            return cursor.rowcount
