"""`import_export`: an export and its mapping in, a validated log out, or nothing at all.

Everything is read, converted and checked against the contract in memory first; the log
is then written into a staging folder, read back with `features.load_log`, and only then
moved to `out`. Any error leaves `out` as it was (absent, or the earlier import).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from features.imports.mapping import Mapping, column_kind, load_mapping
from features.imports.tables import Rows, build_tables, read_sources
from features.imports.values import SourceError
from features.io import LogFileError, load_log, write_log
from features.log import TABLES, TransactionLog, as_of_time
from features.schema import LogValidationError, Violation, validate_log

# meta.json's key that marks a folder as made by an import (which a later one may replace).
IMPORTED = "imported"


def check_import_dir(out: str | os.PathLike[str]) -> Path:
    """`out` if an import may be written there: new, empty, or an earlier import.

    Raises:
        LogFileError: `out` is a file, or a folder holding anything else.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LogFileError(f"{out} is a file, not a folder for the imported log")
    if out.is_dir() and any(out.iterdir()):
        meta = out / "meta.json"
        try:
            earlier = IMPORTED in json.loads(meta.read_text())
        except (OSError, ValueError, TypeError):
            earlier = False
        if not earlier:
            raise LogFileError(
                f"{out} holds files that an import did not write; choose another folder"
            )
    return out


def _contract_types(
    table: str, frame: pd.DataFrame, origin: Rows
) -> tuple[pd.DataFrame, list[Violation]]:
    """The contract's dtypes; a required money or flag column left empty is a violation."""
    out, problems = pd.DataFrame(index=frame.index), []
    for column in frame.columns:
        kind, values = column_kind(table, column), frame[column]
        if kind in ("fen", "bool"):
            empty = np.flatnonzero(values.isna().to_numpy())
            for file, lines in origin.where(empty).items():
                problems.append(Violation(file, f"{table}.{column}", "is present", lines))
            out[column] = values.fillna(0 if kind == "fen" else False).astype(
                "int64" if kind == "fen" else bool
            )
        elif kind == "text":
            out[column] = values.astype("str")
        else:
            out[column] = values
    return out, problems


def _at_origin(error: LogValidationError, origins: dict[str, Rows]) -> list[Violation]:
    """The contract's violations, at the export rows that made the offending rows."""
    found = []
    for violation in error.violations:
        table = violation.file
        if not violation.rows:
            found.append(Violation(table, violation.column, violation.rule, []))
            continue
        rows = np.asarray(violation.rows)
        for file, lines in origins[table].where(rows).items():
            found.append(Violation(file, f"{table}.{violation.column}", violation.rule, lines))
    return found


def _span(mapping: Mapping) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    start = as_of_time(mapping.start) if mapping.start else None
    end = None
    if mapping.end is not None:
        end = pd.Timestamp(mapping.end)
        end = end.tz_localize(mapping.timezone) if end.tzinfo is None else end
        end = end.tz_convert("UTC")
    return start, end


def convert(mapping: Mapping, paths: list[Path]) -> TransactionLog:
    """The log an export makes under a mapping, checked against the contract.

    Raises:
        SourceError: A file, column or value cannot be read, or the converted log breaks
            the contract (named at the export's files and lines).
    """
    built = build_tables(mapping, read_sources(paths, mapping))
    tables, origins, problems = {}, {}, []
    for name in TABLES:
        frame, origin = built[name]
        tables[name], missing = _contract_types(name, frame, origin)
        origins[name] = origin
        problems += missing
    if problems:
        raise SourceError(problems)
    start, end = _span(mapping)
    log = TransactionLog(**tables, start=start, end=end)
    try:
        return validate_log(log, {name: name for name in TABLES})
    except LogValidationError as exc:
        raise SourceError(_at_origin(exc, origins)) from None


def import_export(
    mapping_path: str | os.PathLike[str],
    sources: list[Path],
    out: str | os.PathLike[str],
) -> TransactionLog:
    """Convert an export into the log contract and write it to `out`, atomically.

    Args:
        mapping_path: The mapping file (YAML, docs/import.md).
        sources: The export's files, named as the mapping names them.
        out: The folder for the log: new, empty, or an earlier import (replaced).

    Returns:
        The log, as `features.load_log(out)` reads it.

    Raises:
        MappingError: The mapping file is wrong.
        SourceError: The export cannot be converted, or breaks the contract.
        LogFileError: `out` cannot take the log.
    """
    mapping = load_mapping(mapping_path)
    out = check_import_dir(out)
    log = convert(mapping, [Path(p) for p in sources])
    meta: dict = {}
    if log.start is not None:
        meta["start"] = log.start.date().isoformat()
    if log.end is not None:
        meta["end"] = log.end.isoformat()
    meta[IMPORTED] = {
        "mapping": Path(mapping_path).name,
        "sources": sorted(Path(p).name for p in sources),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    for left in out.parent.glob(f".{out.name}.import-*"):  # from a run that was killed
        shutil.rmtree(left, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.import-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes 0700; the log should read like any folder
    try:
        write_log(log, staging, meta)
        written = load_log(staging)  # what a reader will see, before anyone can see it
        if not out.exists():
            os.rename(staging, out)
        else:  # an earlier import: one rename a file, meta.json last
            for path in sorted(staging.iterdir(), key=lambda path: path.name == "meta.json"):
                os.replace(path, out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written
