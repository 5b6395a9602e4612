"""A throwaway PostgreSQL cluster for the tests (Debian's `postgresql` 15 package).

`initdb` and `pg_ctl` in a temporary folder, listening on 127.0.0.1 on a free port, with
password (scram) authentication over TCP, so the tests see a password in the URL the way
an operator's would be (and can check it is shown nowhere). Run as the `postgres` user when
the tests run as root (the server refuses to start as root).

The `pg_cluster` fixture is one cluster for the whole session; `pg_url` is a fresh, empty
database on it for each test. When the binaries are absent the tests skip, except in CI
(`CI` set), where a missing PostgreSQL is a broken machine: `.ci/run` installs it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN_DIRS = (
    "/usr/lib/postgresql/15/bin",
    *sorted(str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")),
    "/usr/local/bin",
)
PASSWORD = "pw-" + uuid.uuid4().hex  # unguessable: a test greps every output for it
USER = "fastrefund"


def _binary(name: str) -> str | None:
    for folder in BIN_DIRS:
        path = Path(folder) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return shutil.which(name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgCluster:
    """One PostgreSQL server in a temporary folder; `stop` and `start` for fault tests."""

    def __init__(self, root: Path, port: int, fsync: bool = False):
        self.fsync = fsync
        self.root = root
        self.data = root / "data"
        self.port = port
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @classmethod
    def create(cls, fsync: bool = False) -> PgCluster:
        """A new cluster, started. `fsync` off (the tests: correctness, not durability) or on
        (the benchmarks: a commit costs what it costs in production)."""
        initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
        if initdb is None or pg_ctl is None:
            if os.environ.get("CI"):
                pytest.fail(
                    "PostgreSQL's initdb/pg_ctl not found in CI (apt-get install postgresql)"
                )
            pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not installed")
        root = Path(tempfile.mkdtemp(prefix="fastrefund-pg-"))
        cluster = cls(root, free_port(), fsync)
        cluster._pg_ctl = pg_ctl
        pwfile = root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
            shutil.chown(pwfile, "postgres")
        cluster._run(
            initdb,
            "-D",
            str(cluster.data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
        )
        pwfile.unlink()
        cluster.start()
        return cluster

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_postgres, *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=200"
        )
        self._run(self._pg_ctl, "-D", str(self.data), "-o", options, "-w", "-l",
                  str(self.root / "log"), "start")  # fmt: skip

    def stop(self) -> None:
        self._run(self._pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = "t" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One PostgreSQL 15 server for the session."""
    cluster = PgCluster.create()
    yield cluster
    cluster.destroy()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """A fresh, empty database for one test (its URL, password included)."""
    return pg_cluster.create_database()
