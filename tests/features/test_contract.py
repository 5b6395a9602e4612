"""The data contract: a good log loads, every broken rule is named and stops the command."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features import LogFileError, LogValidationError, load_log, write_log
from features.__main__ import app
from tests.conftest import write_csv_log
from tests.factories import small_log


def test_csv_and_parquet_load_to_the_same_log(csv_log_dir: Path, tmp_path: Path) -> None:
    from_csv = load_log(csv_log_dir)
    write_log(from_csv, tmp_path / "pq", {"start": "2024-01-01", "end": "2026-01-01"})
    from_parquet = load_log(tmp_path / "pq")
    for name in ("buyers", "shops", "orders", "refunds"):
        pd.testing.assert_frame_equal(from_csv.table(name), from_parquet.table(name))
    assert str(from_csv.orders["paid_at"].dtype) == "datetime64[ns, UTC]"
    assert from_csv.orders["paid_fen"].dtype == "int64"
    assert from_parquet.end == pd.Timestamp("2026-01-01", tz="UTC")


def _edit(directory: Path, table: str, row: int, column: str, value: object) -> None:
    path = directory / f"{table}.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[row, column] = value
    frame.to_csv(path, index=False)


BROKEN = [
    ("orders", 0, "paid_fen", "0", "paid_fen", "greater_than_or_equal_to(1)"),
    ("orders", 0, "paid_fen", "12.5", "paid_fen", "whole number"),
    ("orders", 0, "paid_fen", "4655.0", "paid_fen", "whole number"),  # never a float
    ("orders", 0, "paid_fen", "9" * 20, "paid_fen", "whole number"),  # beyond int64
    ("orders", 1, "order_id", "O1", "order_id", "field_uniqueness"),
    ("orders", 2, "buyer_id", "B9", "buyer_id", "buyer exists in buyers"),
    ("orders", 0, "shop_id", "S9", "shop_id", "shop exists in shops"),
    ("orders", 0, "shipped_at", "2025-01-01T00:00:00Z", "shipped_at", "shipped_at >= paid_at"),
    ("orders", 0, "paid_at", "2025-01-10 10:00:00", "paid_at", "carry their offset"),
    # Before the buyer registered (2024-06-01), and before the shop opened.
    ("orders", 0, "paid_at", "2024-05-01T00:00:00Z", "paid_at", "the buyer's registered_at"),
    ("orders", 0, "paid_at", "2020-05-01T00:00:00Z", "paid_at", "the shop's opened_at"),
    ("orders", 0, "is_virtual", "maybe", "is_virtual", "true or false"),
    ("refunds", 0, "kind", "refund", "kind", "isin"),
    ("refunds", 0, "outcome", "lost", "outcome", "isin"),
    ("refunds", 0, "buyer_id", "B2", "buyer_id", "the order's buyer"),
    ("refunds", 1, "amount_fen", "35001", "amount_fen", "amount_fen <= the order's paid_fen"),
    ("refunds", 0, "order_id", "O404", "order_id", "order exists in orders"),
    ("refunds", 0, "outcome", "", "outcome", "outcome set exactly when resolved_at is set"),
    ("refunds", 0, "resolved_at", "2025-01-01T00:00:00Z", "resolved_at", "resolved_at >="),
    ("buyers", 1, "buyer_id", "B1", "buyer_id", "field_uniqueness"),
]


@pytest.mark.parametrize(("table", "row", "column", "value", "named", "rule"), BROKEN)
def test_a_broken_rule_is_named_with_file_column_and_rows(
    csv_log_dir: Path, table: str, row: int, column: str, value: str, named: str, rule: str
) -> None:
    _edit(csv_log_dir, table, row, column, value)
    with pytest.raises(LogValidationError) as caught:
        load_log(csv_log_dir)
    message = str(caught.value)
    assert f"{table}.csv" in message
    assert f"column '{named}'" in message
    assert rule in message
    line = row + 2  # the file's line: the header is line 1
    assert f"lines {line}" in message or f", {line}" in message


def test_missing_table_and_missing_column_are_named(csv_log_dir: Path) -> None:
    (csv_log_dir / "shops.csv").unlink()
    with pytest.raises(LogFileError, match="no shops.parquet or shops.csv"):
        load_log(csv_log_dir)
    write_csv_log(small_log(), csv_log_dir)
    frame = pd.read_csv(csv_log_dir / "refunds.csv").drop(columns=["kind"])
    frame.to_csv(csv_log_dir / "refunds.csv", index=False)
    with pytest.raises(LogValidationError, match="refunds.csv: column 'kind'") as caught:
        load_log(csv_log_dir)
    assert "rows" not in str(caught.value) and "()" not in str(caught.value)


def test_cli_exits_2_and_writes_nothing_on_a_bad_log(csv_log_dir: Path, tmp_path: Path) -> None:
    _edit(csv_log_dir, "orders", 0, "paid_fen", "-5")
    out = tmp_path / "features.parquet"
    result = CliRunner().invoke(
        app, ["build", "--data", str(csv_log_dir), "--as-of", "2025-06-01", "--out", str(out)]
    )
    assert result.exit_code == 2
    assert "orders.csv: column 'paid_fen'" in result.output
    assert not out.exists()
    assert not list(tmp_path.glob(".features.parquet.*"))


def test_cli_build_writes_features(csv_log_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "features.parquet"
    result = CliRunner().invoke(
        app,
        [
            "build",
            "--data",
            str(csv_log_dir),
            "--as-of",
            "2025-06-01",
            "--as-of",
            "2025-06-15",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert len(frame) == 4 and set(frame["buyer_id"]) == {"B1", "B2"}


def test_cli_rejects_a_bad_date(csv_log_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["build", "--data", str(csv_log_dir), "--as-of", "June", "--out", str(tmp_path / "f")]
    )
    assert result.exit_code == 2
    assert "--as-of 'June' is not a date" in result.output


@pytest.mark.parametrize(("as_of", "message"), [("2019-06-01", "before"), ("2030-01-01", "after")])
def test_cli_refuses_an_as_of_date_outside_the_log(
    csv_log_dir: Path, tmp_path: Path, as_of: str, message: str
) -> None:
    out = tmp_path / "f.parquet"
    result = CliRunner().invoke(
        app, ["build", "--data", str(csv_log_dir), "--as-of", as_of, "--out", str(out)]
    )
    assert result.exit_code == 2
    assert f"as-of date {as_of} is {message} the log" in result.output
    assert not out.exists()


def test_cli_refuses_a_folder_as_the_output_file(csv_log_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["build", "--data", str(csv_log_dir), "--as-of", "2025-06-01", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "is a folder" in result.output


def test_a_float_money_column_in_parquet_is_refused(csv_log_dir: Path, tmp_path: Path) -> None:
    log = load_log(csv_log_dir)
    write_log(log, tmp_path / "pq", {})
    orders = pd.read_parquet(tmp_path / "pq" / "orders.parquet")
    orders["paid_fen"] = orders["paid_fen"].astype("float64")  # whole values, float storage
    orders.to_parquet(tmp_path / "pq" / "orders.parquet")
    with pytest.raises(
        LogValidationError,
        match="column 'paid_fen': breaks rule 'holds integers of fen, not float64'",
    ):
        load_log(tmp_path / "pq")
    orders.loc[1, "paid_fen"] = None  # a gap in an integer column: Parquet gives floats
    orders.to_parquet(tmp_path / "pq" / "orders.parquet")
    with pytest.raises(
        LogValidationError, match=r"1 row breaks rule 'is present' \(rows, from 0: 1\)"
    ):
        load_log(tmp_path / "pq")


def test_a_csv_timestamp_with_another_offset_is_the_same_instant_in_utc(csv_log_dir: Path) -> None:
    before = load_log(csv_log_dir).orders.loc[0, "paid_at"]
    local = before.tz_convert("Asia/Shanghai").isoformat()  # ...+08:00
    _edit(csv_log_dir, "orders", 0, "paid_at", local)
    after = load_log(csv_log_dir).orders.loc[0, "paid_at"]
    assert "+08:00" in local and after == before and str(after.tz) == "UTC"


def test_every_unreadable_value_is_named_at_once(csv_log_dir: Path) -> None:
    _edit(csv_log_dir, "orders", 0, "paid_fen", "12.5")
    _edit(csv_log_dir, "orders", 1, "paid_at", "2025-01-10 10:00:00")
    _edit(csv_log_dir, "refunds", 0, "amount_fen", "lots")
    _edit(csv_log_dir, "buyers", 0, "registered_at", "yesterday")
    with pytest.raises(LogValidationError) as caught:
        load_log(csv_log_dir)
    found = {(v.file, v.column) for v in caught.value.violations}
    assert found == {
        ("orders.csv", "paid_fen"),
        ("orders.csv", "paid_at"),
        ("refunds.csv", "amount_fen"),
        ("buyers.csv", "registered_at"),
    }


def test_cli_simulate_into_a_place_it_cannot_write_exits_2(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "world"  # under a file: the folder cannot be made
    result = CliRunner().invoke(
        app, ["simulate", "--out", str(out), "--buyers", "40", "--shops", "4", "--days", "60"]
    )
    assert result.exit_code == 2
    assert f"cannot write the simulated log into {out}" in result.output


def test_meta_end_with_an_offset_is_the_same_instant_in_utc(csv_log_dir: Path) -> None:
    (csv_log_dir / "meta.json").write_text('{"end": "2025-12-31T20:00:00+08:00"}')
    assert load_log(csv_log_dir).end == pd.Timestamp("2025-12-31T12:00:00", tz="UTC")
    assert str(load_log(csv_log_dir).end.tz) == "UTC"


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ('{"end": "soon"}', "'end' 'soon' is not an ISO 8601 timestamp"),
        ('{"end": 1767225600}', "'end' 1767225600 is not an ISO 8601 timestamp"),
        ('{"end": "June"}', "'end' 'June' is not an ISO 8601 timestamp"),
        ('{"end": "12/31/2025"}', "'end' '12/31/2025' is not an ISO 8601 timestamp"),
        ('{"end": "NaT"}', "'end' 'NaT' is not an ISO 8601 timestamp"),
        ('{"start": "June"}', "'start': as-of date 'June' is not a date"),
    ],
)
def test_an_unreadable_meta_span_is_named(csv_log_dir: Path, meta: str, message: str) -> None:
    (csv_log_dir / "meta.json").write_text(meta)
    with pytest.raises(LogFileError, match=f"meta.json: {message}"):
        load_log(csv_log_dir)
