"""The mapping file: how an export's files, columns and units become the log's tables.

Read from YAML (a key named twice is an error, where YAML itself keeps the last) and
checked with pydantic (a misspelled key is named). docs/import.md describes the vocabulary.
"""

from __future__ import annotations

import os
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator

from features.log import TABLES
from features.schema import SCHEMAS

TableName = Literal["buyers", "shops", "orders", "refunds"]
Kind = Literal["text", "fen", "bool", "timestamp"]


class MappingError(ValueError):
    """The mapping file cannot be read or breaks the vocabulary; the message says where."""


def column_kind(table: str, column: str) -> Kind:
    """How a contract column is parsed: from its dtype in the contract's schema."""
    dtype = str(SCHEMAS[table].columns[column].dtype)
    if dtype.startswith("datetime64"):
        return "timestamp"
    if dtype == "int64":
        return "fen"
    return "bool" if dtype == "bool" else "text"


def _zone(name: str | None) -> str | None:
    if name is not None:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r} (an IANA name: Asia/Shanghai)") from None
    return name


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _as_spec(value: Any) -> Any:
    return {"column": value} if isinstance(value, str) else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RowFilter(_Strict):
    """Which source rows count: exactly one of `equals`, `one_of`, `sign`."""

    column: str
    equals: str | None = None
    one_of: list[str] | None = None
    sign: Literal["positive", "negative"] | None = None

    @model_validator(mode="after")
    def _one_condition(self) -> RowFilter:
        given = [self.equals is not None, self.one_of is not None, self.sign is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one of equals, one_of, sign")
        return self


class ColumnSpec(_Strict):
    """Where one contract column comes from: a source `column`, or a stated `value`.

    A plain string in the mapping is a source column's name.
    """

    column: str | None = None
    value: str | int | bool | None = None
    unit: Literal["yuan", "fen"] | None = None
    timezone: Annotated[str | None, BeforeValidator(_zone)] = None
    format: str | None = None
    values: dict[str, str | bool | None] | None = None
    aggregate: Literal["same", "sum", "min", "max", "any", "all"] = "same"

    @model_validator(mode="after")
    def _column_or_value(self) -> ColumnSpec:
        stated = "value" in self.model_fields_set
        if (self.column is None) == (not stated):
            raise ValueError("give either column (a source column) or value (a stated default)")
        return self

    @property
    def stated(self) -> bool:
        """Whether the column is a stated value rather than read from the source."""
        return self.column is None


Spec = Annotated[ColumnSpec, BeforeValidator(_as_spec)]


class Update(_Strict):
    """Rows that change rows of the table already made: `key` holds the id of the row
    they change, `set` the columns they set (a cancellation invoice sets `cancelled_at`)."""

    source: Annotated[list[str] | None, BeforeValidator(_as_list)] = None
    where: RowFilter | None = None
    key: str
    set: dict[str, Spec]


class TableSpec(_Strict):
    """One contract table: from source files (`source`) or from a table made before
    (`from_table`, whose column names are the contract's), row by row or one row per
    `group_by` value."""

    source: Annotated[list[str] | None, BeforeValidator(_as_list)] = None
    from_table: TableName | None = None
    where: RowFilter | None = None
    group_by: str | None = None
    columns: dict[str, Spec]
    updates: list[Update] = []

    @model_validator(mode="after")
    def _one_origin(self) -> TableSpec:
        if (self.source is None) == (self.from_table is None):
            raise ValueError(
                "give either source (export files) or from_table (a table made before)"
            )
        if self.group_by is None:
            for name, spec in self.columns.items():
                if spec.aggregate != "same":
                    raise ValueError(f"columns.{name}: aggregate needs group_by")
        return self


class Mapping(_Strict):
    """The whole mapping file."""

    timezone: Annotated[str | None, BeforeValidator(_zone)] = None
    encoding: str = "utf-8-sig"
    start: date | None = None
    end: datetime | None = None
    tables: dict[str, TableSpec]

    @model_validator(mode="after")
    def _contract_columns(self) -> Mapping:
        problems = [f"tables.{name}: missing" for name in TABLES if name not in self.tables]
        problems += [
            f"tables.{name}: not a table of the log ({', '.join(TABLES)})"
            for name in self.tables
            if name not in TABLES
        ]
        if problems:
            raise ValueError("; ".join(problems))
        for name, table in self.tables.items():
            contract = list(SCHEMAS[name].columns)
            for column in contract:
                if column not in table.columns:
                    problems.append(
                        f"tables.{name}.columns.{column}: not mapped (give a source column, "
                        "or a value; value: null states that the export lacks it)"
                    )
            for where, columns in [("columns", table.columns)] + [
                (f"updates[{i}].set", update.set) for i, update in enumerate(table.updates)
            ]:
                for column, spec in columns.items():
                    problems += _column_problems(name, column, spec, f"tables.{name}.{where}")
            if table.from_table is not None and table.from_table == name:
                problems.append(f"tables.{name}.from_table: a table cannot come from itself")
        if self.end is not None and self.end.tzinfo is None and self.timezone is None:
            problems.append("end: give its offset, or a timezone for the mapping")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _column_problems(table: str, column: str, spec: ColumnSpec, where: str) -> list[str]:
    if column not in SCHEMAS[table].columns:
        return [f"{where}.{column}: {table} has no such column in the contract"]
    kind, problems = column_kind(table, column), []
    if kind == "fen" and spec.column is not None and spec.unit is None:
        problems.append(f"{where}.{column}: money: give its unit (yuan or fen)")
    if kind != "fen" and spec.unit is not None:
        problems.append(f"{where}.{column}: unit is for money columns only")
    if kind != "timestamp" and (spec.timezone or spec.format):
        problems.append(f"{where}.{column}: timezone and format are for timestamps only")
    allowed = {"fen": {"same", "sum", "min", "max"}, "timestamp": {"same", "min", "max"}}
    allowed |= {"bool": {"same", "any", "all"}, "text": {"same"}}
    if spec.aggregate not in allowed[kind]:
        problems.append(f"{where}.{column}: aggregate {spec.aggregate} does not apply to {kind}")
    return problems


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key named twice in one mapping."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise MappingError(
                f"line {key_node.start_mark.line + 1}: {key!r} is named twice "
                f"(first on line {seen[key] + 1})"
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_mapping(path: str | os.PathLike[str]) -> Mapping:
    """Read and check a mapping file.

    Raises:
        MappingError: It cannot be read, is not YAML, names a key twice, misses or
            misspells a key, or maps a column wrongly; the message names the file, the
            line or the key path, and what is wrong.
    """
    path = Path(path)
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except MappingError as exc:
        raise MappingError(f"{path}: {exc}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise MappingError(f"{path}: cannot be read as YAML: {exc}") from None
    try:
        return Mapping.model_validate(document)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "not a key of the mapping vocabulary (misspelled?)"
            where = ".".join(str(part) for part in error["loc"])
            problems.append(f"{where}: {message}" if where else message)
        raise MappingError(f"{path}: " + "; ".join(problems)) from None
