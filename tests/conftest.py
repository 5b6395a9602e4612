"""Shared fixtures: tiny logs written to disk as a user would have them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from features.log import TABLES, TransactionLog
from tests.factories import small_log

pytest_plugins = ["tests.pg"]  # the PostgreSQL fixtures (pg_cluster, pg_url)


def write_csv_log(log: TransactionLog, directory: Path) -> Path:
    """Write the log as CSV files with ISO timestamps, the way a platform export looks."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        frame = log.table(name).copy()
        for col in frame.columns:
            if isinstance(frame[col].dtype, pd.DatetimeTZDtype):
                frame[col] = frame[col].map(lambda t: "" if pd.isna(t) else t.isoformat())
        frame.to_csv(directory / f"{name}.csv", index=False)
    return directory


@pytest.fixture
def csv_log_dir(tmp_path: Path) -> Path:
    """A valid CSV log directory (the small hand-made log)."""
    return write_csv_log(small_log(), tmp_path / "log")


@pytest.fixture(autouse=True)
def _no_inherited_mlflow_registry() -> Iterator[None]:
    """Each test starts without MLFLOW_REGISTRY_URI and leaves the environment as it found it.

    `mlflow.set_registry_uri` (called by `training.registry.connect`) also writes the URI into
    os.environ for child processes; left there, it pointed a later test's notebook kernel at
    an earlier test's deleted registry. (monkeypatch.delenv would not do: with the variable
    absent it records nothing, so what a test sets stays behind.)
    """
    before = os.environ.pop("MLFLOW_REGISTRY_URI", None)
    yield
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
    if before is not None:
        os.environ["MLFLOW_REGISTRY_URI"] = before


@pytest.fixture(autouse=True)
def _development(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run the service in development, explicitly (production is the default: built-in
    tokens only when asked for); a test of production says so in its settings. Child
    processes inherit it."""
    monkeypatch.setenv("FASTREFUND_ENVIRONMENT", "development")


@pytest.fixture(scope="session")
def spark():
    """One local SparkSession (2 cores) for the whole run: Spark's start-up is paid once.

    No skip when Java or pyspark is missing: `make install` installs the spark extra and
    these machines have Java 17, so a missing one is a broken setup and must fail loudly.
    """
    from features.engines.spark_session import spark_session

    session = spark_session("local[2]", app_name="fastrefund-tests")
    yield session
    session.stop()
