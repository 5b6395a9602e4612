"""The Spark engine: Spark reads the log, groups its rows by buyer partition, runs the job there.

The driver reads only file footers, meta.json and the shops table (small: broadcast to every
task). Buyers, orders and refunds are read by the executors, tagged with their table, put in
one frame and grouped by a buyer partition key (a hash of buyer_id): each group holds every
event of its buyers, as `features.build.iter_partitions` makes them. Each group is handed to
the job as the pandas engine hands a partition: normalised by `features.io.normalise_table`,
checked by `features.schema.validate_log` (with the shops), with the whole log's start and
end, so the point-in-time cut (`log.known_at(T)`) happens inside the job exactly as it does in
one process.

The grouped map is `applyInArrow`, the Arrow form of `applyInPandas`: it hands the function
the group's Arrow table, which is turned into pandas here, column by column, the way
`pd.read_parquet` does. `applyInPandas` converts through PySpark's own pandas layer, which
turns a nullable int64 into float64: a nanosecond timestamp (Spark reads Parquet's
TIMESTAMP(NANOS) only as a long) would lose its last digits (1735689600123456789 became
1.7356896001234568e+18). With Arrow every value arrives exact.

What is validated where:
- the driver: every table's file is there and has the contract's columns; order_id and
  refund_id are unique across the whole log (a Spark aggregation);
- each group: the values read as the contract's types (money integer fen, booleans,
  timestamps with an offset) and every pandera schema and cross-table rule of
  `validate_log`, on that group's buyers (a refund whose buyer_id is not its order's buyer
  is reported as "order exists in orders": its order is in another group).
A broken rule stops the job; the error names the file, column and rule, and the offending
rows by id (row numbers mean nothing once rows are spread over a cluster).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from features.engines import (
    METADATA_FILE,
    Columns,
    PartitionJob,
    to_arrow,
)
from features.engines.spark_session import SparkJobError, quiet_pandas3_warning
from features.io import LogFileError, atomic_folder, normalise_table, read_span, table_columns
from features.log import CREATED_AT, ID_COLUMNS, LATER_AT, TABLES, TransactionLog
from features.schema import EXAMPLE_ROWS, LogValidationError, Violation, validate_log

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# Orders per buyer partition (one task each): the pandas engine's 2M would make 3 tasks of
# a 5M-order log; a quarter million keeps a task's memory to a few hundred MB.
ORDERS_PER_TASK = 250_000
_PARTITION = "_fastrefund_partition"
_TABLE = "_fastrefund_table"
_INVALID = "FASTREFUND-INVALID-LOG:"
SPARK_TYPES = {
    "string": "string",
    "timestamp": "timestamp",
    "double": "double",
    "int8": "tinyint",
    "bool": "boolean",
}
_SQL_CONF = {
    "spark.sql.session.timeZone": "UTC",
    # Parquet written by pandas holds TIMESTAMP(NANOS), which Spark reads only as a long;
    # each group turns it back into the exact instant.
    "spark.sql.legacy.parquet.nanosAsLong": "true",
    # What pandas reads back as datetime64[us, UTC] (INT96, Spark's default, comes back naive).
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    # One task per buyer partition, as chosen: merged tasks would hold several partitions.
    "spark.sql.adaptive.coalescePartitions.enabled": "false",
}


class SparkLogValidationError(LogValidationError):
    """The log breaks its contract, as found by the Spark engine (rows named by id)."""

    def __init__(self, lines: list[str]):
        self.violations: list[Violation] = []
        self.lines = lines
        ValueError.__init__(self, "invalid transaction log:\n  " + "\n  ".join(lines))


def spark_schema(columns: Columns) -> str:
    """A job's output columns as a Spark DDL schema."""
    return ", ".join(f"`{name}` {SPARK_TYPES[kind]}" for name, kind in columns.items())


_TEXT_ID = {name: set(cols) for name, cols in ID_COLUMNS.items()}


def _table_path(directory: Path, name: str) -> Path:
    """NAME.parquet (a file, or a folder of part files as Spark writes it) or NAME.csv."""
    found = [directory / f"{name}.parquet", directory / f"{name}.csv"]
    found = [p for p in found if p.is_file() or (p.suffix == ".parquet" and p.is_dir())]
    if not found:
        raise LogFileError(f"{directory}: no {name}.parquet or {name}.csv")
    if len(found) > 1:
        raise LogFileError(f"{directory}: both {name}.parquet and {name}.csv; keep one")
    return found[0]


@dataclass(frozen=True)
class _TableSource:
    """How one table is read: its file, and how each column arrives in a group."""

    name: str
    file: str  # the name errors use, as the pandas engine's
    columns: tuple[str, ...]
    # column -> "ns_utc" | "ns_naive" (Parquet nanosecond timestamps, read as longs) | "csv"
    kinds: dict[str, str]


def _to_pandas(table: pa.Table, source: _TableSource) -> pd.DataFrame:
    """One table's rows as `pd.read_parquet` / `pd.read_csv(dtype=str)` would give them."""
    arrays = {}
    for col in source.columns:
        values = table.column(col)
        kind = source.kinds.get(col)
        if kind in ("ns_utc", "ns_naive"):
            values = values.cast(pa.timestamp("ns", tz="UTC" if kind == "ns_utc" else None))
        arrays[col] = values
    frame = pa.table(arrays).to_pandas()
    for col in source.columns:
        if source.kinds.get(col) == "csv":  # read_csv(na_values=[""]): an empty field is NA
            frame[col] = frame[col].where(frame[col] != "")
    return frame


@dataclass(frozen=True)
class _GroupContext:
    """What every group needs besides its rows (sent to the executors with the job)."""

    sources: dict[str, _TableSource]
    start: pd.Timestamp | None
    end: pd.Timestamp | None


def _describe(exc: LogValidationError, raw: dict[str, pd.DataFrame], files: dict) -> list[str]:
    """Each violation with its rows named by id (row numbers are per group here)."""
    table_of = {file: name for name, file in files.items()}
    lines = []
    for v in exc.violations:
        frame = raw.get(table_of.get(v.file, ""))
        if not v.rows or frame is None:
            lines.append(str(v))
            continue
        id_col = ID_COLUMNS[table_of[v.file]][0]
        ids = frame[id_col].iloc[v.rows[:EXAMPLE_ROWS]].astype(str).tolist()
        more = ", ..." if len(v.rows) > EXAMPLE_ROWS else ""
        noun = "row breaks" if len(v.rows) == 1 else "rows break"
        lines.append(
            f"{v.file}: column '{v.column}': {len(v.rows)} {noun} rule '{v.rule}' "
            f"({id_col} {', '.join(ids)}{more})"
        )
    return lines


def _invalid(lines: list[str]) -> RuntimeError:
    """The error a group raises: the lines travel to the driver inside Spark's message."""
    return RuntimeError(_INVALID + json.dumps(lines))


def _group_log(table: pa.Table, context: _GroupContext, shops: pd.DataFrame) -> TransactionLog:
    """The partition of the log held by one group, normalised and validated."""
    raw, tables, unreadable = {}, {}, []
    files = {name: source.file for name, source in context.sources.items()}
    for name in ("buyers", "orders", "refunds"):
        mine = table.filter(pc.equal(table.column(_TABLE), name))
        raw[name] = _to_pandas(mine, context.sources[name])
        try:
            tables[name] = normalise_table(raw[name], name, files[name])
        except LogValidationError as exc:
            unreadable += exc.violations
    try:
        if unreadable:
            raise LogValidationError(unreadable)
        log = TransactionLog(**tables, shops=shops, start=context.start, end=context.end)
        return validate_log(log, files)
    except LogValidationError as exc:
        raise _invalid(_describe(exc, raw, files)) from None


def _group_runner(
    job: PartitionJob, columns: Columns, context: _GroupContext, shops: Any
) -> Callable[[pa.Table], pa.Table]:
    """The function each group is handed to (in an executor's Python worker).

    A closure of one argument: PySpark tells a function that takes the grouping key by its
    number of parameters.
    """

    def run(table: pa.Table) -> pa.Table:
        log = _group_log(table, context, shops.value)
        return to_arrow(job(log), columns)

    return run


def _span_runner(
    source: _TableSource,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """Earliest creation and latest timestamp of each batch of a table, in ns: an executor's
    part of the span when meta.json does not give it."""
    created, times = CREATED_AT[source.name], [CREATED_AT[source.name], *LATER_AT[source.name]]
    return partial(_batch_spans, source=source, created=created, times=times)


def _batch_spans(
    batches: Iterator[pa.RecordBatch], source: _TableSource, created: str, times: list[str]
) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        raw = _to_pandas(pa.Table.from_batches([batch]), source)
        try:
            frame = normalise_table(raw, source.name, source.file)
        except LogValidationError as exc:
            raise _invalid(_describe(exc, {source.name: raw}, {source.name: source.file})) from None
        first = frame[created].min()
        last = max((frame[col].max() for col in times if frame[col].notna().any()), default=pd.NaT)
        yield pa.RecordBatch.from_pydict(
            {
                "first": [None if pd.isna(first) else first.value],
                "last": [None if pd.isna(last) else last.value],
            },
            schema=pa.schema([("first", pa.int64()), ("last", pa.int64())]),
        )


def _job_error(exc: Exception) -> Exception:
    """The contract violation a group reported, or the job's failure in one line."""
    text = str(exc)
    found = re.search(re.escape(_INVALID) + r"(\[.*?\])\s*$", text, re.MULTILINE)
    if found:
        return SparkLogValidationError(json.loads(found.group(1)))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    cause = next((line for line in reversed(lines) if "Error" in line.split(":")[0]), None)
    return SparkJobError(
        f"the Spark job failed: {cause or (lines[0] if lines else type(exc).__name__)}"
    )


class SparkLog:
    """A log read by Spark and processed by buyer partition in its executors."""

    def __init__(self, spark: SparkSession, data_dir: Path, partitions: int | None = None):
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise LogFileError(f"{data_dir}: not a directory")
        self.spark = spark
        self._partitions = partitions
        for key, value in _SQL_CONF.items():
            spark.conf.set(key, value)
        paths = {name: _table_path(data_dir, name) for name in TABLES}
        self._frames: dict[str, DataFrame] = {}
        self._sources: dict[str, _TableSource] = {}
        missing = []
        for name, path in paths.items():
            frame, source, absent = self._read(name, path)
            self._frames[name], self._sources[name] = frame, source
            missing += absent
        if missing:
            raise LogValidationError(missing)
        shops_source = self._sources["shops"]
        with quiet_pandas3_warning():
            shops_arrow = self._frames["shops"].toArrow()
        try:
            self.shops = normalise_table(
                _to_pandas(shops_arrow, shops_source), "shops", shops_source.file
            )
        except LogValidationError as exc:
            raw = {"shops": _to_pandas(shops_arrow, shops_source)}
            raise SparkLogValidationError(
                _describe(exc, raw, {"shops": shops_source.file})
            ) from None
        start, end = read_span(data_dir)
        self._meta_start = start  # what load_log gives every partition
        if start is None or end is None:
            first, last = self._scan_span()
            start = start if start is not None else first
            end = end if end is not None else last
        empty = {name: pd.DataFrame(columns=table_columns(name)) for name in TABLES}
        self._span = TransactionLog(**empty, start=start, end=end)

    def _read(self, name: str, path: Path) -> tuple[DataFrame, _TableSource, list[Violation]]:
        from pyspark.sql import functions as F
        from pyspark.sql.types import LongType, StringType, StructField, StructType

        expected = table_columns(name)
        kinds: dict[str, str] = {}
        if path.suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as handle:
                header = next(csv.reader(handle), [])
            schema = StructType([StructField(col, StringType()) for col in header])
            frame = self.spark.read.csv(
                str(path), schema=schema, header=True, escape='"', mode="FAILFAST"
            )
            kinds = dict.fromkeys(expected, "csv")
        else:
            file_schema = pads.dataset(str(path), format="parquet").schema
            frame = self.spark.read.parquet(str(path))
            for field in file_schema:
                if pa.types.is_timestamp(field.type) and field.type.unit == "ns":
                    kinds[field.name] = "ns_utc" if field.type.tz else "ns_naive"
            kinds = {col: kind for col, kind in kinds.items() if col in expected}
            for col in list(kinds):
                if not isinstance(frame.schema[col].dataType, LongType):
                    del kinds[col]  # a Spark that reads nanoseconds itself
        absent = [
            Violation(path.name, col, "column is present", [])
            for col in expected
            if col not in frame.columns
        ]
        if absent:
            return frame, _TableSource(name, path.name, tuple(expected), kinds), absent
        selected = [
            F.col(col).cast("string").alias(col)
            if col in _TEXT_ID.get(name, ())
            and not isinstance(frame.schema[col].dataType, StringType)
            else F.col(col)
            for col in expected
        ]
        return frame.select(*selected), _TableSource(name, path.name, tuple(expected), kinds), []

    def _scan_span(self) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
        """meta.json's start and end when it has none: the first registration (its day, as
        `check_as_of` takes it) and the latest timestamp of any table (as `load_log`)."""
        firsts, lasts = {}, []
        for name in TABLES:
            source = self._sources[name]
            with quiet_pandas3_warning():
                job = self._frames[name].mapInArrow(_span_runner(source), "first long, last long")
            rows = self._collect(job)
            firsts[name] = min((r["first"] for r in rows if r["first"] is not None), default=None)
            lasts += [r["last"] for r in rows if r["last"] is not None]
        first = firsts["buyers"]
        start = None if first is None else pd.Timestamp(first, tz="UTC").normalize()
        end = None if not lasts else pd.Timestamp(max(lasts), tz="UTC")
        return start, end

    def _collect(self, frame: DataFrame) -> list:
        try:
            with quiet_pandas3_warning():
                return frame.collect()
        except Exception as exc:
            raise _job_error(exc) from exc

    @property
    def span(self) -> TransactionLog:
        """The log's start and end, its tables empty (the driver does not hold them)."""
        return self._span

    def partitions(self) -> int:
        """Buyer partitions: as given, else one per ORDERS_PER_TASK orders (at least one per
        core Spark has)."""
        if not self._partitions:
            orders = self._frames["orders"].count()
            cores = self.spark.sparkContext.defaultParallelism
            self._partitions = max(cores, -(-orders // ORDERS_PER_TASK))
        return self._partitions

    def check_unique_ids(self) -> None:
        """order_id and refund_id unique across the whole log (a group sees only its own).

        Raises:
            SparkLogValidationError: Naming the ids that occur more than once.
        """
        from pyspark.sql import functions as F

        # As many shuffle tasks as buyer partitions (Spark's default of 200 is slow on a few
        # cores and, with coalescing off, would stay 200).
        self.spark.conf.set("spark.sql.shuffle.partitions", str(self.partitions()))
        ids = None
        for name in ("orders", "refunds"):
            column = ID_COLUMNS[name][0]
            tagged = self._frames[name].select(
                F.lit(name).alias("table"), F.col(column).alias("id")
            )
            ids = tagged if ids is None else ids.unionByName(tagged)
        assert ids is not None
        repeated = ids.groupBy("table", "id").count().where("count > 1")
        rows = self._collect(repeated.limit(EXAMPLE_ROWS * 2))
        if not rows:
            return
        lines = []
        for name in ("orders", "refunds"):
            found = [str(r["id"]) for r in rows if r["table"] == name]
            if found:
                column = ID_COLUMNS[name][0]
                lines.append(
                    f"{self._sources[name].file}: column '{column}': breaks rule "
                    f"'field_uniqueness' ({column} repeated: {', '.join(found[:EXAMPLE_ROWS])})"
                )
        raise SparkLogValidationError(lines)

    def frame(self, job: PartitionJob, columns: Columns) -> DataFrame:
        """The job's output as a (lazy) Spark DataFrame: one group per buyer partition."""
        from pyspark.sql import functions as F

        partitions = self.partitions()
        self.spark.conf.set("spark.sql.shuffle.partitions", str(partitions))
        rows = None
        for name in ("buyers", "orders", "refunds"):
            tagged = self._frames[name].withColumn(_TABLE, F.lit(name))
            rows = tagged if rows is None else rows.unionByName(tagged, allowMissingColumns=True)
        assert rows is not None
        rows = rows.withColumn(_PARTITION, F.pmod(F.xxhash64("buyer_id"), F.lit(partitions)))
        context = _GroupContext(self._sources, self._meta_start, self._span.end)
        shops = self.spark.sparkContext.broadcast(self.shops)
        schema = spark_schema(columns)
        run = _group_runner(job, columns, context, shops)
        with quiet_pandas3_warning():
            return rows.groupBy(_PARTITION).applyInArrow(run, schema)

    def write(self, frame: DataFrame, out: Path, metadata: dict | None = None) -> int:
        """Write a DataFrame as a Parquet dataset folder, atomically; the rows written.

        Raises:
            SparkLogValidationError: A group found the log breaking its contract.
            SparkJobError: The job failed otherwise. Either way `out` is as it was.
        """
        with atomic_folder(out) as staging:
            try:
                with quiet_pandas3_warning():
                    frame.write.parquet(str(staging))
            except Exception as exc:
                raise _job_error(exc) from exc
            if metadata is not None:
                (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str))
            rows = pads.dataset(str(staging), format="parquet").count_rows()
        return rows

    def map_partitions(
        self, job: PartitionJob, columns: Columns, out: Path, metadata: dict | None = None
    ) -> int:
        """Run `job` on every buyer partition in Spark's executors; see PartitionedLog."""
        self.check_unique_ids()
        return self.write(self.frame(job, columns), out, metadata)
