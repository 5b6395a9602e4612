"""Building the contract's tables from an export's files, as a mapping says.

A table comes from source files (each row, or one row per `group_by` value), or from a
table built before; `updates` then let other rows set columns of rows already made (a
cancellation invoice sets its order's `cancelled_at`). Every output row remembers the file
and row it came from (the first of its group), so that a breach of the contract found in
the output is reported at the lines of the export that made it.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.imports.mapping import ColumnSpec, Mapping, RowFilter, TableSpec, column_kind
from features.imports.values import SourceError, parse, signs, stated
from features.log import TABLES
from features.schema import SCHEMAS, Violation


@dataclass(frozen=True)
class Rows:
    """Rows of one table (source text, or typed), with the export row each came from.

    Attributes:
        frame: The columns.
        files: Per row, the export file it came from.
        lines: Per row, its row in that file (from 0, as `Violation` counts them).
        typed: Whether the columns are contract-typed (a table built before) or text.
    """

    frame: pd.DataFrame
    files: np.ndarray
    lines: np.ndarray
    typed: bool = False

    def take(self, positions: np.ndarray) -> Rows:
        """The rows at `positions`, renumbered from 0."""
        return Rows(
            self.frame.iloc[positions].reset_index(drop=True),
            self.files[positions],
            self.lines[positions],
            self.typed,
        )

    def where(self, rows: np.ndarray) -> dict[str, list[int]]:
        """The export rows behind some of these rows, per file."""
        found: dict[str, list[int]] = {}
        for file, line in zip(self.files[rows], self.lines[rows], strict=True):
            found.setdefault(str(file), []).append(int(line))
        return found


def read_sources(paths: list[Path], mapping: Mapping) -> dict[str, Rows]:
    """The export's CSV files by name, every value as text (empty: NA).

    Raises:
        SourceError: A file cannot be read, repeats a header, is named twice, or is not one
            the mapping names (and the other way round).
    """
    named = {name for table in mapping.tables.values() for name in _sources_of(table)}
    problems, sources = [], {}
    for path in paths:
        if path.name in sources:
            problems.append(Violation(path.name, "(file)", "is given once", []))
            continue
        if path.name not in named:
            rule = "is a source the mapping names (" + ", ".join(sorted(named)) + ")"
            problems.append(Violation(str(path), "(file)", rule, []))
            continue
        try:
            sources[path.name] = _read_csv(path, mapping.encoding)
        except SourceError as exc:
            problems += exc.violations
    for name in sorted(named - set(sources) - {p.name for p in paths}):
        problems.append(Violation(name, "(file)", "is given on the command line", []))
    if problems:
        raise SourceError(problems)
    return sources


def _sources_of(table: TableSpec) -> list[str]:
    return [*(table.source or []), *(n for u in table.updates for n in u.source or [])]


def _read_csv(path: Path, encoding: str) -> Rows:
    try:
        with path.open(newline="", encoding=encoding) as handle:
            header = next(csv.reader(handle), [])
        frame = pd.read_csv(
            path, dtype="string", keep_default_na=False, na_values=[""], encoding=encoding
        )
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        raise SourceError(
            [Violation(path.name, "(file)", f"is readable CSV ({exc})", [])]
        ) from None
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise SourceError([Violation(path.name, name, "is a header once", []) for name in twice])
    size = len(frame)
    return Rows(frame, np.full(size, path.name, dtype=object), np.arange(size))


def _files(rows: Rows) -> list[str]:
    return list(dict.fromkeys(str(f) for f in rows.files))


def _per_file(
    rows: Rows, values: pd.Series, read: Callable[[pd.Series, str], pd.Series]
) -> pd.Series:
    """`read(one file's values, indexed by their rows in the file, file)` for each file,
    back in the rows' order: an error then names the file's own rows."""
    if not len(values):
        return read(values, "(no rows)")
    parts = []
    for file in _files(rows):
        mine = np.flatnonzero(rows.files == file)
        parts.append(read(values.iloc[mine].set_axis(rows.lines[mine]), file).set_axis(mine))
    return pd.concat(parts).sort_index().set_axis(values.index)


def _keep(rows: Rows, where: RowFilter | None) -> Rows:
    """The rows a `where` keeps."""
    if where is None:
        return rows
    values = _column(rows, where.column)
    if where.sign is not None:
        if rows.typed:
            sign = np.sign(values.astype("Float64").fillna(0).to_numpy(dtype=float))
        else:
            sign = _per_file(rows, values, lambda v, f: signs(v, f, where.column)).to_numpy()
        keep = sign > 0 if where.sign == "positive" else sign < 0
    else:
        wanted = [where.equals] if where.equals is not None else list(where.one_of or [])
        text = values.astype("string").str.strip()
        keep = text.isin(wanted).fillna(False).to_numpy(dtype=bool)
    return rows.take(np.flatnonzero(keep))


def _column(rows: Rows, name: str) -> pd.Series:
    if name not in rows.frame.columns:
        files = _files(rows) or ["(no rows)"]
        raise SourceError([Violation(f, name, "is a column of the file", []) for f in files])
    return rows.frame[name]


def _values(rows: Rows, table: str, column: str, spec: ColumnSpec, zone: str | None) -> pd.Series:
    """One contract column for every row: a stated value, or read file by file."""
    kind = column_kind(table, column)
    if spec.stated:
        return stated(spec, kind, rows.frame.index, zone)
    source = _column(rows, spec.column or "")
    if rows.typed:
        return source
    return _per_file(rows, source, lambda v, f: parse(v, kind, spec, zone, f))


def _aggregate(groups: np.ndarray, values: pd.Series, how: str) -> tuple[pd.Series, np.ndarray]:
    """One value per group; `same` requires every row of a group to agree.

    Returns the values and the positions of the rows of groups that disagree.
    """
    grouped = pd.Series(values.array, index=groups).groupby(level=0, sort=False)
    if how == "same":
        counts = grouped.nunique(dropna=False)
        disagree = counts.index[counts.to_numpy() > 1]
        return grouped.first().astype(values.dtype), np.flatnonzero(np.isin(groups, disagree))
    if how in ("any", "all"):
        result = grouped.any() if how == "any" else grouped.all()
        return result.astype("boolean"), np.zeros(0, dtype=int)
    result = {"sum": grouped.sum, "min": grouped.min, "max": grouped.max}[how]()
    return result.astype(values.dtype), np.zeros(0, dtype=int)


def _columns(
    rows: Rows, table: str, columns: dict[str, ColumnSpec], group_by: str | None, zone: str | None
) -> tuple[pd.DataFrame, Rows]:
    """The mapped columns, one row per source row or per group, and the rows' origins."""
    values = {name: _values(rows, table, name, spec, zone) for name, spec in columns.items()}
    if group_by is None:
        return pd.DataFrame(values, index=rows.frame.index), rows
    key = _column(rows, group_by).astype("string").str.strip()
    missing = np.flatnonzero(key.isna().to_numpy())
    if len(missing):
        raise SourceError(
            [
                Violation(f, group_by, "is present (it groups the rows)", lines)
                for f, lines in rows.where(missing).items()
            ]
        )
    groups = key.to_numpy(dtype=object)
    first = pd.Series(np.arange(len(groups)), index=groups).groupby(level=0, sort=False).first()
    out, problems = {}, []
    for name, spec in columns.items():
        out[name], disagree = _aggregate(groups, values[name], spec.aggregate)
        for file, lines in rows.where(disagree).items():
            rule = f"the rows of one {group_by} agree on {table}.{name}"
            problems.append(Violation(file, spec.column or name, rule, lines))
    if problems:
        raise SourceError(problems)
    frame = pd.DataFrame({name: series.reindex(first.index).array for name, series in out.items()})
    return frame, rows.take(first.to_numpy())


def _apply_updates(
    table: str, spec: TableSpec, frame: pd.DataFrame, sources: dict[str, Rows], zone: str | None
) -> pd.DataFrame:
    """Set columns of rows already made from the rows of each update."""
    id_column = next(iter(SCHEMAS[table].columns))
    for update in spec.updates:
        rows = _keep(
            _concat([sources[n] for n in update.source or spec.source or []]), update.where
        )
        if not len(rows.frame):
            continue
        changes, origin = _columns(rows, table, update.set, update.key, zone)
        keys = _column(origin, update.key).astype("string").str.strip().to_numpy(dtype=object)
        target = pd.Index(frame[id_column].astype("string").to_numpy(dtype=object)).get_indexer(
            keys
        )
        unknown = np.flatnonzero(target < 0)
        if len(unknown):
            rule = f"names a {table} row the export has ({id_column})"
            raise SourceError(
                [
                    Violation(f, update.key, rule, lines)
                    for f, lines in origin.where(unknown).items()
                ]
            )
        for name in update.set:
            column = frame[name].copy()
            new = changes[name]
            given = new.notna().to_numpy()
            column.iloc[target[given]] = new.array[given]
            frame[name] = column
    return frame


def _concat(parts: list[Rows]) -> Rows:
    if len(parts) == 1:
        return parts[0]
    frame = pd.concat([p.frame for p in parts], ignore_index=True)
    return Rows(
        frame,
        np.concatenate([p.files for p in parts]),
        np.concatenate([p.lines for p in parts]),
    )


def build_tables(
    mapping: Mapping, sources: dict[str, Rows]
) -> dict[str, tuple[pd.DataFrame, Rows]]:
    """Every contract table (nullable dtypes, contract column order) and its rows' origins.

    Raises:
        SourceError: A value cannot be read, a column is missing from a file, the rows of a
            group disagree, or an update names a row that is not there.
    """
    built: dict[str, tuple[pd.DataFrame, Rows]] = {}
    waiting = list(TABLES)
    while waiting:
        ready = [n for n in waiting if mapping.tables[n].from_table in (None, *built)]
        if not ready:
            cycle = ", ".join(f"{n} from {mapping.tables[n].from_table}" for n in waiting)
            raise SourceError([Violation("the mapping", "from_table", f"no cycle ({cycle})", [])])
        for name in ready:
            spec = mapping.tables[name]
            if spec.from_table is None:
                rows = _concat([sources[n] for n in spec.source or []])
            else:
                made, origin = built[spec.from_table]
                rows = Rows(made, origin.files, origin.lines, typed=True)
            rows = _keep(rows, spec.where)
            frame, origin = _columns(rows, name, spec.columns, spec.group_by, mapping.timezone)
            frame = _apply_updates(name, spec, frame, sources, mapping.timezone)
            built[name] = (frame[list(SCHEMAS[name].columns)], origin)
            waiting.remove(name)
    return built
