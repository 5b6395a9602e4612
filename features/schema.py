"""The log's data contract: pandera schemas per table plus the rules that span tables.

Every violation is reported as a `LogValidationError` naming the file, the column, the
rule, how many rows break it and a few of them.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.log import OUTCOMES, REFUND_KINDS, TIMESTAMP_DTYPE, TransactionLog, positions

with warnings.catch_warnings():
    # With pyspark installed (the spark extra), pandera tries `import pyspark.pandas`, here
    # and again lazily while validating. With pandas 3 that import fails (pyspark.pandas needs
    # pandas < 3), after printing a FutureWarning that pandas 3 is not fully supported: every
    # command would print it, for an API this project does not use (the Spark engine uses
    # pyspark.sql and Arrow, and its parity tests check what it uses). So: that warning only,
    # during this import only; and a failed import is recorded as failed, so pandera's later
    # attempts fail at once, silently, instead of re-running pyspark.pandas' import each time.
    warnings.filterwarnings(
        "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
    )
    import pandera.pandas as pa

    if "pyspark" in sys.modules and "pyspark.pandas" not in sys.modules:
        sys.modules["pyspark.pandas"] = None  # type: ignore[assignment]

EXAMPLE_ROWS = 5

_ID = pa.Column(str, nullable=False)
_TS = pa.Column(TIMESTAMP_DTYPE, nullable=False)
_OPTIONAL_TS = pa.Column(TIMESTAMP_DTYPE, nullable=True)

SCHEMAS: dict[str, pa.DataFrameSchema] = {
    "buyers": pa.DataFrameSchema(
        {"buyer_id": pa.Column(str, nullable=False, unique=True), "registered_at": _TS},
        name="buyers",
    ),
    "shops": pa.DataFrameSchema(
        {"shop_id": pa.Column(str, nullable=False, unique=True), "opened_at": _TS},
        name="shops",
    ),
    "orders": pa.DataFrameSchema(
        {
            "order_id": pa.Column(str, nullable=False, unique=True),
            "buyer_id": _ID,
            "shop_id": _ID,
            "category": pa.Column(str, pa.Check.str_length(min_value=1), nullable=False),
            "is_virtual": pa.Column(bool, nullable=False),
            "is_custom": pa.Column(bool, nullable=False),
            "paid_fen": pa.Column("int64", pa.Check.ge(1), nullable=False),
            "paid_at": _TS,
            "shipped_at": _OPTIONAL_TS,
            "delivered_at": _OPTIONAL_TS,
            "completed_at": _OPTIONAL_TS,
            "cancelled_at": _OPTIONAL_TS,
        },
        name="orders",
    ),
    "refunds": pa.DataFrameSchema(
        {
            "refund_id": pa.Column(str, nullable=False, unique=True),
            "order_id": _ID,
            "buyer_id": _ID,
            "requested_at": _TS,
            "kind": pa.Column(str, pa.Check.isin(REFUND_KINDS), nullable=False),
            "amount_fen": pa.Column("int64", pa.Check.ge(1), nullable=False),
            "resolved_at": _OPTIONAL_TS,
            "outcome": pa.Column(str, pa.Check.isin(OUTCOMES), nullable=True),
            "abuse_confirmed_at": _OPTIONAL_TS,
        },
        name="refunds",
    ),
}


@dataclass
class Violation:
    """One broken rule: where, which rule, and which rows."""

    file: str
    column: str
    rule: str
    rows: list[int]

    def __str__(self) -> str:
        where = f"{self.file}: column '{self.column}'"
        if not self.rows:  # a rule about the table itself: a missing column, a wrong type
            return f"{where}: breaks rule '{self.rule}'"
        # `rows` count data rows from 0; a CSV's reader counts lines, the header being line 1.
        csv = self.file.endswith(".csv")
        shown = ", ".join(str(r + 2 if csv else r) for r in self.rows[:EXAMPLE_ROWS])
        more = "" if len(self.rows) <= EXAMPLE_ROWS else ", ..."
        noun = "row breaks" if len(self.rows) == 1 else "rows break"
        place = "lines" if csv else "rows, from 0:"
        return f"{where}: {len(self.rows)} {noun} rule '{self.rule}' ({place} {shown}{more})"


class LogValidationError(ValueError):
    """The log breaks its contract; `violations` lists every broken rule."""

    def __init__(self, violations: list[Violation]):
        self.violations = violations
        super().__init__("invalid transaction log:\n  " + "\n  ".join(map(str, violations)))


def _schema_violations(frame: pd.DataFrame, name: str, file: str) -> list[Violation]:
    try:
        SCHEMAS[name].validate(frame, lazy=True)
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases
        found: dict[tuple[str, str], list[int]] = {}
        for case in cases.itertuples(index=False):
            column = case.column if isinstance(case.column, str) else str(case.failure_case)
            rows = found.setdefault((column, str(case.check)), [])
            if pd.notna(case.index):
                rows.append(int(case.index))
        return [
            Violation(file, col, rule, sorted(set(rows))) for (col, rule), rows in found.items()
        ]
    return []


def _rule(
    frame: pd.DataFrame, file: str, column: str, rule: str, broken: pd.Series
) -> list[Violation]:
    broken = broken.fillna(False).astype(bool)
    if not broken.any():
        return []
    return [Violation(file, column, rule, frame.index[broken.to_numpy()].tolist())]


def _absent(values: pd.Series, reference: pd.Series) -> pd.Series:
    """Which values do not occur in reference."""
    return pd.Series(positions(values, reference) < 0, index=values.index)


def _in_order(frame: pd.DataFrame, file: str, earlier: str, later: str) -> list[Violation]:
    broken = frame[later].notna() & (frame[later] < frame[earlier])
    return _rule(frame, file, later, f"{later} >= {earlier}", broken)


def validate_log(log: TransactionLog, files: dict[str, str] | None = None) -> TransactionLog:
    """Check every table and every cross-table rule of the contract.

    Args:
        log: The tables to check.
        files: The file each table came from, for messages (defaults to the table name).

    Returns:
        The same log, when it is valid.

    Raises:
        LogValidationError: Listing every violation found.
    """
    files = files or {}

    def file_of(name: str) -> str:
        return files.get(name, name)

    violations: list[Violation] = []
    for name in SCHEMAS:
        violations += _schema_violations(log.table(name), name, file_of(name))
    if violations:  # cross-table rules assume the columns and types are right
        raise LogValidationError(violations)

    orders, refunds = log.orders, log.refunds
    orders_file, refunds_file = file_of("orders"), file_of("refunds")
    # Each order's buyer and shop exist, and existed when it was paid: an order before them
    # would be known at a T at which they are not.
    paid_at = orders["paid_at"].dt.tz_convert(None).to_numpy()  # datetime64, not objects
    for column, table, since in [
        ("buyer_id", log.buyers, "registered_at"),
        ("shop_id", log.shops, "opened_at"),
    ]:
        owner = column.removesuffix("_id")
        found = positions(orders[column], table[column])
        known = found >= 0
        violations += _rule(
            orders,
            orders_file,
            column,
            f"{owner} exists in {owner}s",
            pd.Series(~known, index=orders.index),
        )
        early = np.zeros(len(orders), dtype=bool)
        early[known] = paid_at[known] < table[since].dt.tz_convert(None).to_numpy()[found[known]]
        violations += _rule(
            orders,
            orders_file,
            "paid_at",
            f"paid_at >= the {owner}'s {since}",
            pd.Series(early, index=orders.index),
        )
    for earlier, later in [
        ("paid_at", "shipped_at"),
        ("shipped_at", "delivered_at"),
        ("delivered_at", "completed_at"),
        ("paid_at", "cancelled_at"),
    ]:
        violations += _in_order(orders, orders_file, earlier, later)
    violations += _rule(
        orders,
        orders_file,
        "delivered_at",
        "delivered only after shipped",
        orders["delivered_at"].notna() & orders["shipped_at"].isna(),
    )

    order_of = orders.set_index("order_id")
    known_order = ~_absent(refunds["order_id"], orders["order_id"])
    violations += _rule(refunds, refunds_file, "order_id", "order exists in orders", ~known_order)
    matched = order_of.reindex(refunds["order_id"])
    owner = pd.Series(matched["buyer_id"].to_numpy(), index=refunds.index)
    paid = pd.Series(matched["paid_fen"].to_numpy(), index=refunds.index)
    paid_at = pd.Series(matched["paid_at"].to_numpy(), index=refunds.index)
    violations += _rule(
        refunds,
        refunds_file,
        "buyer_id",
        "buyer_id is the order's buyer",
        known_order & (owner != refunds["buyer_id"]),
    )
    violations += _rule(
        refunds,
        refunds_file,
        "amount_fen",
        "amount_fen <= the order's paid_fen",
        known_order & (refunds["amount_fen"] > paid),
    )
    violations += _rule(
        refunds,
        refunds_file,
        "requested_at",
        "requested_at >= the order's paid_at",
        known_order & (refunds["requested_at"] < paid_at),
    )
    violations += _in_order(refunds, refunds_file, "requested_at", "resolved_at")
    violations += _in_order(refunds, refunds_file, "requested_at", "abuse_confirmed_at")
    violations += _rule(
        refunds,
        refunds_file,
        "outcome",
        "outcome set exactly when resolved_at is set",
        refunds["outcome"].isna() != refunds["resolved_at"].isna(),
    )
    if violations:
        raise LogValidationError(violations)
    return log
