"""Reading an export's values into the contract's types, exactly or not at all.

Every function takes a column as text (empty: NA) and returns it typed (nullable), or
raises `SourceError` naming the file, the column and the rows it cannot read. Money in yuan
becomes integer fen through `decimal.Decimal`, never a float: "19.99" is 1999, "12.345" an
error.
"""

from __future__ import annotations

from decimal import Decimal

import pandas as pd

from features.imports.mapping import ColumnSpec, Kind
from features.log import TIMESTAMP_DTYPE
from features.schema import Violation

_YUAN = r"-?[0-9]{1,16}(?:\.[0-9]{1,2})?"
_FEN = r"-?[0-9]{1,18}"
_NUMBER = r"[+-]?[0-9]+(?:\.[0-9]*)?"
_TRUE = {"true", "1", "t", "yes", "y"}
_FALSE = {"false", "0", "f", "no", "n"}
# An explicit offset after the time of day: the instant is known whatever zone is stated.
_OFFSET = r".*[T ][0-9:.]+(?:Z|[+-][0-9]{2}:?[0-9]{2})"
_NULLABLE = {"fen": "Int64", "bool": "boolean", "text": "string", "timestamp": TIMESTAMP_DTYPE}


class SourceError(ValueError):
    """Values of an export that cannot be read; `violations` names file, column and rows."""

    def __init__(self, violations: list[Violation]):
        self.violations = violations
        super().__init__("cannot import:\n  " + "\n  ".join(map(str, violations)))


def _check(file: str, column: str, rule: str, bad: pd.Series) -> None:
    bad = bad.fillna(False).astype(bool)
    if bad.any():
        raise SourceError([Violation(file, column, rule, bad.index[bad.to_numpy()].tolist())])


def _matches(text: pd.Series, pattern: str) -> pd.Series:
    return text.str.fullmatch(pattern).fillna(False).astype(bool)


def yuan_to_fen(text: pd.Series, file: str, column: str) -> pd.Series:
    """Decimal yuan ("19.99", "-5", "0.5") to integer fen, exactly."""
    clean = text.astype("string").str.strip()
    _check(file, column, "yuan with at most two decimals", clean.notna() & ~_matches(clean, _YUAN))
    fen = [pd.NA if pd.isna(value) else int(Decimal(value) * 100) for value in clean]
    return pd.Series(pd.array(fen, dtype="Int64"), index=text.index)


def whole_fen(text: pd.Series, file: str, column: str) -> pd.Series:
    """Whole fen ("1999") to integers."""
    clean = text.astype("string").str.strip()
    _check(file, column, "a whole number of fen", clean.notna() & ~_matches(clean, _FEN))
    return clean.astype("Int64")


def booleans(values: pd.Series, file: str, column: str) -> pd.Series:
    """true/false (1/0, yes/no, y/n, t/f, in any case), or the bools a value map gave."""
    text = values.map(lambda v: str(v) if isinstance(v, bool) else v)
    text = text.astype("string").str.strip().str.lower()
    _check(file, column, "true or false", text.notna() & ~(text.isin(_TRUE) | text.isin(_FALSE)))
    return text.isin(_TRUE).astype("boolean").mask(text.isna())


def timestamps(
    text: pd.Series, file: str, column: str, zone: str | None, fmt: str | None
) -> pd.Series:
    """Timestamps to UTC: those with an offset as they are, naive ones in `zone`."""
    clean = text.astype("string").str.strip()
    present = clean.notna()
    with_offset = present & _matches(clean, _OFFSET)
    naive = present & ~with_offset
    if zone is None:
        rule = "timestamps carry their offset, or the mapping states a timezone"
        _check(file, column, rule, naive)
    parsed = pd.Series(pd.NaT, index=text.index, dtype=TIMESTAMP_DTYPE)
    if with_offset.any():
        parsed[with_offset] = pd.to_datetime(
            clean[with_offset], utc=True, errors="coerce", format=fmt or "ISO8601"
        )
    if naive.any():
        local = pd.to_datetime(clean[naive], errors="coerce", format=fmt or "ISO8601")
        # A wall-clock time that a daylight-saving change skips or repeats is no one instant.
        parsed[naive] = local.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
    where = f", in {zone}" if naive.any() else ""
    _check(file, column, f"a timestamp ({fmt or 'ISO 8601'}{where})", present & parsed.isna())
    return parsed


def mapped(values: pd.Series, value_map: dict, file: str, column: str) -> pd.Series:
    """Values through a value map; a value the map does not list is an error."""
    clean = values.astype("string").str.strip()
    unknown = clean.notna() & ~clean.isin(list(value_map))
    if unknown.any():
        shown = ", ".join(repr(str(v)) for v in clean[unknown].drop_duplicates().head(3))
        _check(file, column, f"a value listed in the mapping's values (not {shown})", unknown)
    return clean.astype(object).map(lambda v: None if pd.isna(v) else value_map[v])


def parse(
    values: pd.Series, kind: Kind, spec: ColumnSpec, zone: str | None, file: str
) -> pd.Series:
    """A source column read as a contract column of `kind`, as `spec` says."""
    column = spec.column or "value"
    if spec.values is not None:
        values = mapped(values, spec.values, file, column)
    if kind == "fen":
        reader = yuan_to_fen if spec.unit == "yuan" else whole_fen
        return reader(values, file, column)
    if kind == "bool":
        return booleans(values, file, column)
    if kind == "timestamp":
        return timestamps(values, file, column, spec.timezone or zone, spec.format)
    return values.astype("string").str.strip()


def stated(spec: ColumnSpec, kind: Kind, index: pd.Index, zone: str | None) -> pd.Series:
    """The mapping's stated value on every row (`value: null`: an empty column)."""
    if spec.value is None:
        return pd.Series(
            pd.NA if kind != "timestamp" else pd.NaT, index=index, dtype=_NULLABLE[kind]
        )
    text = pd.Series(str(spec.value), index=index, dtype="string")
    return parse(text, kind, spec, zone, "the mapping")


def signs(text: pd.Series, file: str, column: str) -> pd.Series:
    """The sign of decimal numbers (-1, 0, 1; 0 where empty), for `where: {sign: ...}`."""
    clean = text.astype("string").str.strip()
    _check(file, column, "a number", clean.notna() & ~_matches(clean, _NUMBER))
    return (
        clean.astype(object)
        .map(lambda v: 0 if pd.isna(v) else (Decimal(v) > 0) - (Decimal(v) < 0))
        .astype(int)
    )
