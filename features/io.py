"""Reading and writing the log and feature files: the only place features touches disk."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pandas as pd

from features.log import (
    CREATED_AT,
    LATER_AT,
    TABLES,
    TIMESTAMP_DTYPE,
    TransactionLog,
    as_of_time,
)
from features.schema import LogValidationError, Violation, validate_log

_TEXT_COLUMNS = {
    "buyers": ["buyer_id"],
    "shops": ["shop_id"],
    "orders": ["order_id", "buyer_id", "shop_id", "category"],
    "refunds": ["refund_id", "order_id", "buyer_id", "kind", "outcome"],
}
_INT_COLUMNS = {"orders": ["paid_fen"], "refunds": ["amount_fen"]}
_BOOL_COLUMNS = {"orders": ["is_virtual", "is_custom"]}
_TRUE = {"true", "1", "t", "yes", "y"}
_FALSE = {"false", "0", "f", "no", "n"}
# An explicit offset: the instant is unambiguous, and it is converted to UTC (as a Parquet
# column in any time zone is).
_OFFSET = r"(?:Z|[+-][0-9]{2}:?[0-9]{2})$"


class LogFileError(ValueError):
    """A data directory or file cannot be read as the log."""


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`, renamed onto it only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    tmp_path.chmod(0o666 & ~umask)  # mkstemp makes 0600; the result should read like any file
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a staging path beside the folder `target`, moved onto it only if the block succeeds.

    The block creates the staging folder (a Spark job writes it; it must not exist yet). A
    folder already at `target` is replaced whole; if the block fails, the staging folder is
    removed and `target` is as it was: a reader never sees a partial dataset.

    Raises:
        ValueError: `target` exists and is not a folder.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target} is a file; give the path of a folder to write")
    target.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    staging = target.parent / f".{target.name}.staging-{token}"
    try:
        yield staging
        if target.exists():
            old = target.parent / f".{target.name}.old-{token}"
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_parquet(frame: pd.DataFrame, target: str | os.PathLike[str]) -> None:
    """Write a DataFrame to Parquet atomically."""
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)


def write_json(payload: dict, target: str | os.PathLike[str]) -> None:
    """Write a JSON document atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def table_file(directory: Path, name: str) -> Path:
    """The file holding table `name` in a data directory: NAME.parquet or NAME.csv.

    Raises:
        LogFileError: Neither exists, or both do.
    """
    found = [directory / f"{name}.{ext}" for ext in ("parquet", "csv")]
    found = [path for path in found if path.is_file()]
    if not found:
        raise LogFileError(f"{directory}: no {name}.parquet or {name}.csv")
    if len(found) > 1:
        raise LogFileError(f"{directory}: both {name}.parquet and {name}.csv; keep one")
    return found[0]


def _read(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise LogFileError(f"{path}: cannot be read: {exc}") from exc


def _timestamps(values: pd.Series, file: str, column: str) -> pd.Series:
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").astype(TIMESTAMP_DTYPE)
    if pd.api.types.is_datetime64_dtype(values.dtype):
        raise LogValidationError(
            [Violation(file, column, "timestamps are timezone-aware", list(range(len(values))))]
        )
    text = values.astype("string")
    present = text.notna()
    naive = present & ~text.str.contains(_OFFSET, regex=True, na=False)
    if naive.any():
        rows = values.index[naive.to_numpy()].tolist()
        raise LogValidationError(
            [Violation(file, column, "timestamps carry their offset (Z, +00:00, +08:00)", rows)]
        )
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    bad = present & parsed.isna()
    if bad.any():
        rows = values.index[bad.to_numpy()].tolist()
        raise LogValidationError([Violation(file, column, "is an ISO 8601 timestamp", rows)])
    return parsed.astype(TIMESTAMP_DTYPE)


def _integers(values: pd.Series, file: str, column: str) -> pd.Series:
    """Money: integers of fen. Never a float, not even a whole one (DESIGN.md): a float column
    or a CSV value such as "4655.0" says the export went through floating point somewhere."""
    if pd.api.types.is_integer_dtype(values.dtype) and not values.isna().any():
        return values.astype("int64")
    if pd.api.types.is_float_dtype(values.dtype):
        missing = values.isna()
        if missing.any() and (values[~missing] % 1 == 0).all():
            # An integer column with a gap comes out of Parquet as floats: name the gaps.
            rows = values.index[missing.to_numpy()].tolist()
            raise LogValidationError([Violation(file, column, "is present", rows)])
        rule = f"holds integers of fen, not {values.dtype}"
        raise LogValidationError([Violation(file, column, rule, [])])
    text = values.astype("string").str.strip()
    # At most 18 digits: any such number fits in int64 (a CNY amount is far smaller).
    bad = ~text.str.fullmatch(r"-?[0-9]{1,18}").fillna(False).astype(bool)
    if bad.any():
        rows = values.index[bad.to_numpy()].tolist()
        raise LogValidationError([Violation(file, column, "is a whole number of fen", rows)])
    return text.astype("int64")


def _booleans(values: pd.Series, file: str, column: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(values.dtype) and not values.isna().any():
        return values.astype(bool)
    text = values.astype("string").str.strip().str.lower()
    bad = ~(text.isin(_TRUE) | text.isin(_FALSE)).fillna(False)
    if bad.any():
        rows = values.index[bad.to_numpy()].tolist()
        raise LogValidationError([Violation(file, column, "is true or false", rows)])
    return text.isin(_TRUE).astype(bool)


def table_columns(name: str) -> list[str]:
    """The contract's columns of table `name`, in the order a loaded log has them."""
    return (
        _TEXT_COLUMNS[name]
        + _INT_COLUMNS.get(name, [])
        + _BOOL_COLUMNS.get(name, [])
        + [CREATED_AT[name], *LATER_AT[name]]
    )


def normalise_table(frame: pd.DataFrame, name: str, file: str) -> pd.DataFrame:
    """One table as read from its file, in the contract's dtypes and column order.

    Row-wise, so it gives the same answer on any subset of the rows (the Spark engine runs it
    on each partition of buyers).

    Raises:
        LogValidationError: A column is missing, or values cannot be read as the contract's
            types (every column's, not only the first one's).
    """
    frame = frame.reset_index(drop=True)
    expected = table_columns(name)
    missing = [col for col in expected if col not in frame.columns]
    if missing:
        raise LogValidationError([Violation(file, col, "column is present", []) for col in missing])
    out = pd.DataFrame(index=frame.index)
    unreadable: list[Violation] = []  # every column's, not only the first one's
    for col in frame.columns:
        if col not in expected:
            continue
        try:
            if col in _TEXT_COLUMNS[name]:
                out[col] = frame[col].astype("str")
            elif col in _INT_COLUMNS.get(name, []):
                out[col] = _integers(frame[col], file, col)
            elif col in _BOOL_COLUMNS.get(name, []):
                out[col] = _booleans(frame[col], file, col)
            else:
                out[col] = _timestamps(frame[col], file, col)
        except LogValidationError as exc:
            unreadable += exc.violations
    if unreadable:
        raise LogValidationError(unreadable)
    return out[expected]


def read_meta(directory: str | os.PathLike[str]) -> dict:
    """Return the data directory's meta.json ({} when there is none)."""
    path = Path(directory) / "meta.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LogFileError(f"{path}: not valid JSON: {exc}") from exc


def read_span(directory: Path) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """meta.json's start (a date: T of that day) and end (an instant; naive means UTC).

    Raises:
        LogFileError: Either is there but is not a date or a timestamp.
    """
    meta, path = read_meta(directory), directory / "meta.json"
    try:
        start = as_of_time(meta["start"]) if meta.get("start") else None
    except ValueError as exc:
        raise LogFileError(f"{path}: 'start': {exc}") from exc
    raw_end = meta.get("end")
    if not raw_end:
        return start, None
    try:
        # ISO 8601 text only: pandas reads a number as nanoseconds and "June" as year 1.
        end = pd.Timestamp(datetime.fromisoformat(raw_end))
    except (TypeError, ValueError) as exc:
        raise LogFileError(f"{path}: 'end' {raw_end!r} is not an ISO 8601 timestamp") from exc
    # Any offset is converted: every timestamp of the log is UTC.
    return start, end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")


def load_log(directory: str | os.PathLike[str], validate: bool = True) -> TransactionLog:
    """Read a data directory (one Parquet or CSV file per table) into a validated log.

    Args:
        directory: Holds buyers, shops, orders and refunds as NAME.parquet or NAME.csv,
            and optionally meta.json with "start" and "end".
        validate: Check the full contract (schemas and cross-table rules).

    Raises:
        LogFileError: The directory or a file is missing or unreadable.
        LogValidationError: A table breaks the contract; the message names file, column,
            rule and rows.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise LogFileError(f"{directory}: not a directory")
    files = {name: table_file(directory, name) for name in TABLES}
    tables, unreadable = {}, []
    for name, path in files.items():  # every table's unreadable values, then the rules
        try:
            tables[name] = normalise_table(_read(path), name, path.name)
        except LogValidationError as exc:
            unreadable += exc.violations
    if unreadable:
        raise LogValidationError(unreadable)
    start, end = read_span(directory)
    log = TransactionLog(**tables, start=start, end=end)
    if log.end is None:
        latest = [log.table(n)[c].max() for n in TABLES for c in [CREATED_AT[n], *LATER_AT[n]]]
        latest = [t for t in latest if pd.notna(t)]
        log = TransactionLog(**tables, start=start, end=max(latest) if latest else None)
    if validate:
        validate_log(log, {name: path.name for name, path in files.items()})
    return log


def write_log(log: TransactionLog, directory: str | os.PathLike[str], meta: dict) -> None:
    """Write the four tables as Parquet and meta.json, each file atomically."""
    directory = Path(directory)
    for name in TABLES:
        write_parquet(log.table(name), directory / f"{name}.parquet")
    write_json(meta, directory / "meta.json")


def fingerprint(directory: str | os.PathLike[str]) -> str:
    """A sha256 over the log's table files (names and bytes): same data, same fingerprint."""
    import hashlib

    directory = Path(directory)
    digest = hashlib.sha256()
    for name in TABLES:
        path = table_file(directory, name)
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
