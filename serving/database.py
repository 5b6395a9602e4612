"""PostgreSQL's edge: the URL (checked, shown only redacted), the pool and the migrations.

`FASTREFUND_DATABASE_URL=postgresql://user:password@host:port/db` puts the audit log and
the online store in PostgreSQL (`serving.postgres`); unset, they are SQLite files.

The schema is versioned by plain numbered SQL files in `serving/migrations/` (`0001_*.sql`,
`0002_*.sql`, ...), applied in order, each in its own transaction with its number recorded
in `schema_migrations`. `python -m serving migrate` applies what is missing; `run` and
`materialize` do too when the database is behind, and refuse a database whose schema is
ahead of this code (a newer release migrated it: running older code on it could write rows
the newer one misreads).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

URL_VARIABLE = "FASTREFUND_DATABASE_URL"
# One key for every migrator: two instances starting on a new database migrate it once.
_MIGRATION_LOCK = 0x46524D47  # "FRMG"


class DatabaseError(OSError):
    """PostgreSQL cannot be used; the message never holds the password. An OSError, as a
    store file that cannot be written is to the jobs that write it (retrain)."""


class SchemaError(DatabaseError):
    """The database's schema is not this code's (ahead of it, or unreadable)."""


def redact(url: str) -> str:
    """The URL as it may be shown anywhere: no user info, no query (where passwords go):
    "postgresql://u:secret@h:5432/db?sslpassword=x" as "postgresql://***@h:5432/db?***"."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "postgresql://***"
    netloc = "***@" + host if "@" in parts.netloc else host
    query = "?***" if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}"


def check_url(url: str) -> str:
    """Check a database URL is one PostgreSQL URL psycopg can use; return it unchanged.

    Raises:
        ValueError: Naming what is wrong (scheme, host, port, database), never the value.
    """
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number in 0..65535
    except ValueError as exc:
        raise ValueError(f"not a URL ({_what(exc)})") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("must start with postgresql:// (PostgreSQL is the only database)")
    if not parts.hostname:
        raise ValueError("names no host (postgresql://user:password@host:5432/database)")
    if port == 0:
        raise ValueError("port 0 is not a port")
    if not unquote(parts.path.lstrip("/")):
        raise ValueError("names no database (postgresql://user:password@host:5432/database)")
    from psycopg import conninfo

    try:
        conninfo.conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - libpq's message may quote the URL: say it ourselves
        raise ValueError("libpq cannot parse it (check the query parameters)") from None
    return url


def _what(exc: Exception) -> str:
    # urllib's messages name the problem ("Port out of range 0-65535"), not the value, but
    # keep only the words before any quoted part to be sure.
    return re.split(r"['\"]", str(exc), maxsplit=1)[0].strip() or "unreadable"


def describe(exc: BaseException, url: str) -> str:
    """One line for a connection failure: libpq's first line, password removed."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    password = urlsplit(url).password
    if password:
        text = text.replace(password, "***")
    return f"database {redact(url)}: {text}"


def open_pool(url: str, *, min_size: int = 1, max_size: int = 4) -> ConnectionPool:
    """A pool of autocommit connections (transactions are explicit), opened without waiting:
    a database that is down now is connected to in the background when it returns, so an
    instance recovers without a restart. Connection attempts time out after 2 s."""
    from psycopg_pool import ConnectionPool

    pool: ConnectionPool = ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"autocommit": True, "connect_timeout": 2, "application_name": "fastrefund"},
        open=False,
        timeout=1.0,
        # A connection that cannot be made is retried with backoff (1, 2, 4 s...) for 10 s,
        # then left to be made again when a request waits for one: short, so a database
        # back after a long outage is used at once rather than after a minute's backoff.
        reconnect_timeout=10.0,
        name="fastrefund",
    )
    pool.open(wait=False)
    return pool


def connect(url: str) -> psycopg.Connection:
    """One autocommit connection (jobs: migrate, materialize).

    Raises:
        DatabaseError: It cannot be made (one line, no password).
    """
    import psycopg

    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        raise DatabaseError(describe(exc, url)) from None


def migrations() -> list[tuple[int, str, str]]:
    """Every migration this code knows: (number, name, SQL), in order."""
    found = []
    for entry in resources.files("serving.migrations").iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append((int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found)


def latest_version() -> int:
    """The schema version this code writes."""
    return migrations()[-1][0]


def schema_version(conn: psycopg.Connection) -> int:
    """The database's schema version (0: never migrated)."""
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


def migrate(url: str) -> tuple[int, int]:
    """Apply the migrations the database lacks, each in one transaction, under one advisory
    lock (instances starting together migrate once); returns (version before, after).

    Raises:
        SchemaError: The database is ahead of this code.
        DatabaseError: It cannot be reached or a migration failed (nothing of that one stays).
    """
    import psycopg

    with connect(url) as conn:
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            before = schema_version(conn)
            _refuse_ahead(before, url)
            for version, name, sql in migrations():
                if version <= before:
                    continue
                with conn.transaction():
                    conn.execute(sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (version, name),
                    )
            return before, schema_version(conn)
        except psycopg.Error as exc:
            raise DatabaseError(describe(exc, url)) from None
        finally:
            if not conn.closed:
                try:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
                except psycopg.Error:
                    pass  # the session ends with the connection: so does its lock


def ensure_schema(url: str) -> int:
    """Migrate when the database is behind (what `run` and `materialize` do); returns the
    version.

    Raises:
        SchemaError: The database is ahead of this code.
        DatabaseError: It cannot be reached or migrated.
    """
    import psycopg

    with connect(url) as conn:
        try:
            version = schema_version(conn)
        except psycopg.Error as exc:
            raise DatabaseError(describe(exc, url)) from None
    _refuse_ahead(version, url)
    if version < latest_version():
        version = migrate(url)[1]
    return version


def _refuse_ahead(version: int, url: str) -> None:
    if version > latest_version():
        raise SchemaError(
            f"database {redact(url)} is at schema version {version}, ahead of this code's "
            f"{latest_version()}: a newer release migrated it; run that release (this one "
            "would write rows it may misread)"
        )


class Database:
    """One instance's pool on the shared database, and when it last failed.

    The request path (decisions in the coalescer's threads, the rest on the event loop) must
    never wait long for a database that is down: after a connection failure every use fails
    at once for `retry_seconds` (the caller answers 503), then one request tries again,
    waiting at most 50 ms for a connection, while the pool reconnects in its own threads.
    When the database is back, the next try succeeds: no restart.
    """

    def __init__(self, url: str, *, retry_seconds: float = 0.5, max_size: int = 4):
        self.url = url
        self.name = redact(url)
        self.pool = open_pool(url, max_size=max_size)
        self.retry_seconds = retry_seconds
        self.error = ""  # why the last use failed; "" while it works
        self._retry_at = 0.0

    @contextmanager
    def connection(self, unavailable: type[Exception]) -> Iterator[psycopg.Connection]:
        """A pooled connection; any database error leaves as `unavailable` (one line, no
        password), and a lost connection opens the pause described above.

        Raises:
            unavailable: The database cannot be used now.
        """
        import psycopg
        from psycopg_pool import PoolTimeout

        now = time.monotonic()
        if now < self._retry_at:
            raise unavailable(self.error)
        try:
            conn = self.pool.getconn(timeout=0.05 if self.error else 1.0)
        except PoolTimeout:
            self._failed(f"database {self.name}: no connection (is it down?)")
            raise unavailable(self.error) from None
        try:
            yield conn
        except psycopg.OperationalError as exc:  # the connection or the server went away
            self._failed(describe(exc, self.url))
            raise unavailable(self.error) from None
        except psycopg.Error as exc:
            raise unavailable(describe(exc, self.url)) from None
        finally:
            self.pool.putconn(conn)  # a broken one is discarded and replaced by the pool
        self.error = ""

    def _failed(self, error: str) -> None:
        self.error = error
        self._retry_at = time.monotonic() + self.retry_seconds
        # The idle connections are likely dead too (a restarted server): have the pool test
        # them in its own time rather than fail the next requests one by one.
        threading.Thread(target=self._check, daemon=True, name="pg-pool-check").start()

    def _check(self) -> None:
        try:
            self.pool.check()
        except Exception:  # noqa: BLE001, S110 - best effort; requests report real failures
            pass

    def close(self) -> None:
        self.pool.close()
