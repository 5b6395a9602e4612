"""Engines: where a job that runs buyer partition by buyer partition is carried out.

One interface, two implementations chosen by a name (`--engine pandas|spark`):

- `pandas` (features.engines.pandas): one process loads and validates the whole log, then
  runs the job on each partition of buyers in turn (today's `build_features` path).
- `spark` (features.engines.spark): Spark reads the log itself, groups its rows by a buyer
  partition key and runs the same job on each group in its executors; the driver never holds
  the log.

A job is a pure function of one partition of the log (a `TransactionLog` holding all the
events of some buyers, with the whole log's start and end) that returns a DataFrame with the
given columns: `features.build_features`, `training.snapshots.build_snapshots`, a scorer.
Both engines write its output as a Parquet dataset folder, atomically, and the parity tests
prove the two folders hold the same rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import pandas as pd
import pyarrow as pa

from features.log import TransactionLog

ENGINES = ("pandas", "spark")
DEFAULT_MASTER = "local[*]"
METADATA_FILE = "_fastrefund.json"  # Parquet readers skip files whose name starts with "_"

# Output column kinds and what they are in pandas and in Arrow (and so in Spark and Parquet).
# Timestamps are microseconds, UTC: what pandas makes of an as-of date and what Spark stores.
COLUMN_KINDS: dict[str, tuple[str, pa.DataType]] = {
    "string": ("str", pa.string()),
    "timestamp": ("datetime64[us, UTC]", pa.timestamp("us", tz="UTC")),
    "double": ("float64", pa.float64()),
    "int8": ("int8", pa.int8()),
    "bool": ("bool", pa.bool_()),
}

Columns = Mapping[str, str]  # column name -> a key of COLUMN_KINDS, in output order
PartitionJob = Callable[[TransactionLog], pd.DataFrame]


class EngineUnavailable(RuntimeError):
    """The engine cannot start: its package or Java is missing, or its master cannot be
    reached. The message says what to install or check."""


class PartitionedLog(Protocol):
    """A transaction log that an engine processes partition by partition."""

    @property
    def span(self) -> TransactionLog:
        """The log's start and end (`check_as_of`, `last_as_of` and the training dates use
        them); its tables may be empty: an engine that never loads the log leaves them so."""
        ...

    def map_partitions(
        self, job: PartitionJob, columns: Columns, out: Path, metadata: dict | None = None
    ) -> int:
        """Run `job` on every partition of buyers and write what it returns to `out`.

        Args:
            job: A pure function of one partition (picklable: a module-level function or a
                functools.partial of one), returning `columns`.
            columns: The output's columns and their kinds (COLUMN_KINDS).
            out: The Parquet dataset folder to write, replaced whole and atomically.
            metadata: Written beside the data as METADATA_FILE (what the rows are, for the
                reader to check).

        Returns:
            The number of rows written.

        Raises:
            features.LogValidationError: The log breaks its contract.
        """
        ...


def conform(frame: pd.DataFrame, columns: Columns) -> pd.DataFrame:
    """`frame` with exactly `columns`, in order, in their pandas dtypes.

    Raises:
        ValueError: A column is missing (the job does not return what it promised).
    """
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise ValueError(f"the partition job returned no column {missing}")
    return frame[list(columns)].astype(
        {name: COLUMN_KINDS[kind][0] for name, kind in columns.items()}
    )


def to_arrow(frame: pd.DataFrame, columns: Columns) -> pa.Table:
    """A job's output as an Arrow table of exactly its schema.

    Column by column; timestamps from their UTC values (`pa.Table.from_pandas` reads
    `Series.values`, which pandas 3.1 deprecates for timezone-aware columns).
    """
    frame = conform(frame, columns)
    arrays = []
    for name, kind in columns.items():
        arrow_type = COLUMN_KINDS[kind][1]
        if kind == "timestamp":
            utc = frame[name].dt.tz_convert(None).to_numpy()
            arrays.append(pa.array(utc, type=pa.timestamp("us")).cast(arrow_type))
        else:
            values = frame[name].array if kind == "string" else frame[name].to_numpy()
            arrays.append(pa.array(values, type=arrow_type))
    return pa.Table.from_arrays(arrays, schema=arrow_schema(columns))


def arrow_schema(columns: Columns) -> pa.Schema:
    """The Arrow schema of a job's output."""
    return pa.schema([(name, COLUMN_KINDS[kind][1]) for name, kind in columns.items()])


def feature_columns() -> dict[str, str]:
    """The columns `features.build_features` returns."""
    from features.build import FEATURE_COLUMNS

    return {"buyer_id": "string", "as_of": "timestamp", **dict.fromkeys(FEATURE_COLUMNS, "double")}


def read_metadata(folder: Path) -> dict:
    """The METADATA_FILE of a dataset folder ({} for a single Parquet file or without one)."""
    path = Path(folder) / METADATA_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def open_log(
    data_dir: str | Path,
    engine: str = "pandas",
    master: str = DEFAULT_MASTER,
    partitions: int | None = None,
) -> PartitionedLog:
    """Open a data directory with the engine named.

    Args:
        data_dir: The log (features.load_log's layout).
        engine: "pandas" or "spark".
        master: Spark's master URL (local[*], local[2], spark://host:7077, ...); the pandas
            engine ignores it.
        partitions: Buyer partitions; by default the engine's own rule.

    Raises:
        ValueError: An unknown engine.
        EngineUnavailable: Spark cannot start (missing extra or Java, unreachable master).
        features.LogFileError, features.LogValidationError: The log cannot be read.
    """
    if engine == "pandas":
        from features.engines.pandas import PandasLog

        return PandasLog(Path(data_dir), partitions=partitions)
    if engine == "spark":
        from features.engines.spark import SparkLog
        from features.engines.spark_session import spark_session

        return SparkLog(spark_session(master), Path(data_dir), partitions=partitions)
    raise ValueError(f"unknown engine {engine!r} (expected one of {', '.join(ENGINES)})")


__all__ = [
    "COLUMN_KINDS",
    "DEFAULT_MASTER",
    "ENGINES",
    "METADATA_FILE",
    "Columns",
    "EngineUnavailable",
    "PartitionJob",
    "PartitionedLog",
    "arrow_schema",
    "conform",
    "feature_columns",
    "open_log",
    "read_metadata",
    "to_arrow",
]
