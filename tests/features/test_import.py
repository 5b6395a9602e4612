"""`python -m features import`: a marketplace export brought into the log contract by the
example mapping, exactly, and every bad input refused with exit 2, naming the file, the
column and the rows, and writing nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from features import load_log
from features.__main__ import app
from features.imports.values import SourceError, yuan_to_fen

ROOT = Path(__file__).resolve().parents[2]
EXPORT = ROOT / "tests" / "data" / "marketplace"
MAPPING = ROOT / "docs" / "examples" / "marketplace-mapping.yaml"


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def run_import(
    tmp_path: Path,
    out: Path | None = None,
    mapping: str | None = None,
    invoices: str | None = None,
    after_sales: str | None = None,
    extra: list[Path] | None = None,
) -> tuple[int, str, Path]:
    """Import the sample export, with any of its three files replaced by the given text."""
    files = {
        "mapping.yaml": mapping or MAPPING.read_text(encoding="utf-8"),
        "invoices.csv": invoices or (EXPORT / "invoices.csv").read_text(encoding="utf-8"),
        "after_sales.csv": after_sales or (EXPORT / "after_sales.csv").read_text(encoding="utf-8"),
    }
    source = tmp_path / "export"
    source.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (source / name).write_text(text, encoding="utf-8")
    out = out or tmp_path / "log"
    sources = [str(source / "invoices.csv"), str(source / "after_sales.csv")]
    result = CliRunner().invoke(
        app,
        ["import", "--mapping", str(source / "mapping.yaml"), "--out", str(out)]
        + sources
        + [str(p) for p in extra or []],
    )
    return result.exit_code, result.output, out


def edited(name: str, old: str, new: str) -> str:
    text = (
        (EXPORT / name).read_text(encoding="utf-8")
        if name != "mapping"
        else MAPPING.read_text(encoding="utf-8")
    )
    assert old in text, old
    return text.replace(old, new, 1)


def refused(tmp_path: Path, code: int, output: str, out: Path, *named: str) -> None:
    """Exit 2, a message naming each of `named`, and nothing written."""
    assert code == 2, output
    for part in named:
        assert part in output, (part, output)
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.import-*"))


def test_the_example_mapping_brings_the_sample_export_in_exactly(tmp_path: Path) -> None:
    code, output, out = run_import(tmp_path)
    assert code == 0, output
    assert "3 buyers, 2 shops, 4 orders, 3 refunds" in output
    log = load_log(out)
    orders = log.orders.set_index("order_id")
    # Two invoice lines, 19.99 + 100.01 yuan: 12,000 fen, no float rounding.
    assert orders.loc["ORD1", "paid_fen"] == 12_000
    assert orders.loc["ORD4", "paid_fen"] == 50  # "0.5"
    # Beijing wall-clock times, in UTC.
    assert orders.loc["ORD1", "paid_at"] == utc("2025-03-01 00:00")
    assert orders.loc["ORD2", "paid_at"] == utc("2025-03-05 15:30")
    assert orders.loc["ORD1", "completed_at"] == utc("2025-03-06 01:00")
    # The negative invoice cancels its order; no other order is cancelled.
    assert orders.loc["ORD2", "cancelled_at"] == utc("2025-03-06 01:15")
    assert orders["cancelled_at"].notna().sum() == 1
    assert pd.isna(orders.loc["ORD2", "shipped_at"])
    assert orders.loc["ORD3", "is_virtual"] and not orders.loc["ORD1", "is_virtual"]
    assert orders.loc["ORD4", "is_custom"] and pd.isna(orders.loc["ORD4", "delivered_at"])
    refunds = log.refunds.set_index("refund_id")
    assert refunds["kind"].to_dict() == {
        "RF1": "return_and_refund",
        "RF2": "refund_only",
        "RF3": "refund_only",
    }
    assert refunds.loc["RF1", "outcome"] == "approved"
    assert refunds.loc["RF2", "outcome"] == "arbitrated_merchant_wins"
    assert pd.isna(refunds.loc["RF3", "outcome"]) and pd.isna(refunds.loc["RF3", "resolved_at"])
    assert refunds["amount_fen"].to_dict() == {"RF1": 1999, "RF2": 5000, "RF3": 50}
    assert refunds.loc["RF2", "abuse_confirmed_at"] == utc("2025-05-01 04:00")
    # Buyers and shops from the orders: the first order stands for the sign-up.
    buyers = log.buyers.set_index("buyer_id")["registered_at"]
    assert buyers.to_dict() == {
        "buyer_a": utc("2025-03-01 00:00"),
        "buyer_b": utc("2025-03-05 15:30"),
        "buyer_c": utc("2025-05-19 16:10"),
    }
    assert log.shops.set_index("shop_id")["opened_at"]["SHOP2"] == utc("2025-03-05 15:30")
    assert log.start == utc("2025-03-01") and log.end == utc("2025-06-30 16:00")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["imported"]["mapping"] == "mapping.yaml"
    assert sorted(p.name for p in out.iterdir()) == [
        "buyers.parquet",
        "meta.json",
        "orders.parquet",
        "refunds.parquet",
        "shops.parquet",
    ]


@pytest.mark.parametrize(
    ("yuan", "fen"),
    [
        ("19.99", 1999),
        ("0.29", 29),  # float: 28.999999999999996
        ("1.13", 113),  # float: 112.99999999999999
        ("0.5", 50),
        ("100", 10_000),
        ("-299.99", -29_999),
        ("12345678901234.56", 1_234_567_890_123_456),  # beyond a float's 15-16 digits
        (" 7.10 ", 710),
    ],
)
def test_yuan_become_fen_exactly(yuan: str, fen: int) -> None:
    assert yuan_to_fen(pd.Series([yuan], dtype="string"), "f.csv", "amount").iloc[0] == fen


@pytest.mark.parametrize("bad", ["12.345", "abc", "1,299.00", "19.", "¥5"])
def test_a_yuan_amount_that_is_not_one_is_named(bad: str) -> None:
    values = pd.Series(["1.00", bad], dtype="string")
    with pytest.raises(SourceError, match=r"f\.csv: column 'amount': 1 row breaks rule 'yuan"):
        yuan_to_fen(values, "f.csv", "amount")


BAD_INPUTS = {
    case["case"]: case
    for case in yaml.safe_load((EXPORT / "bad_inputs.yaml").read_text(encoding="utf-8"))
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_exit_2_naming_file_column_and_rows_and_writes_nothing(
    tmp_path: Path, case: str
) -> None:
    bad = BAD_INPUTS[case]
    name, old, new, named = bad["file"], bad["replace"], bad["with"], bad["names"]
    key = {"mapping": "mapping", "invoices.csv": "invoices", "after_sales.csv": "after_sales"}
    code, output, out = run_import(tmp_path, **{key[name]: edited(name, old, new)})
    where = named[0] if name == "mapping" else name  # the file the message names
    refused(tmp_path, code, output, out, where, *named)


def test_sources_must_be_those_the_mapping_names(tmp_path: Path) -> None:
    stray = tmp_path / "returns.csv"
    stray.write_text("a\n1\n")
    code, output, out = run_import(tmp_path, extra=[stray])
    refused(tmp_path, code, output, out, "returns.csv", "is a source the mapping names")


def test_an_earlier_import_is_replaced_and_a_failed_one_leaves_it(tmp_path: Path) -> None:
    code, output, out = run_import(tmp_path)
    assert code == 0, output
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    invoices = edited("invoices.csv", ",2,100.01,", ",2,12.345,")
    code, output, out = run_import(tmp_path, invoices=invoices)
    assert code == 2 and "amount_cny" in output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    invoices = edited("invoices.csv", ",2,100.01,", ",2,200.01,")
    code, output, out = run_import(tmp_path, invoices=invoices)
    assert code == 0, output
    assert load_log(out).orders.set_index("order_id").loc["ORD1", "paid_fen"] == 22_000


def test_a_folder_holding_other_files_is_never_written_over(tmp_path: Path) -> None:
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "orders.csv").write_text("order_id\n")
    code, output, _ = run_import(tmp_path, out=out)
    assert code == 2 and "did not write" in output
    assert [p.name for p in out.iterdir()] == ["orders.csv"]


def test_a_time_with_its_offset_is_kept_and_a_time_a_clock_change_skips_is_named(
    tmp_path: Path,
) -> None:
    after_sales = edited("after_sales.csv", "2025-03-07 10:00:00", "2025-03-07T10:00:00Z")
    code, output, out = run_import(tmp_path / "a", after_sales=after_sales)
    assert code == 0, output
    assert load_log(out).refunds.set_index("refund_id").loc["RF1", "requested_at"] == utc(
        "2025-03-07 10:00"
    )
    # 02:30 on 30 March 2025 does not exist in Berlin (clocks go from 02:00 to 03:00).
    mapping = edited("mapping", "timezone: Asia/Shanghai", "timezone: Europe/Berlin")
    after_sales = edited("after_sales.csv", "2025-04-11 08:00:00", "2025-03-30 02:30:00")
    code, output, out = run_import(tmp_path / "b", mapping=mapping, after_sales=after_sales)
    refused(tmp_path, code, output, out, "after_sales.csv", "'apply_time'", "in Europe/Berlin")


def test_a_table_from_several_files_names_each_file_at_its_own_lines(tmp_path: Path) -> None:
    lines = (EXPORT / "invoices.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    header = lines[0]
    source = tmp_path / "export"
    source.mkdir()
    (source / "march.csv").write_text(header + "".join(lines[1:5]), encoding="utf-8")
    april = header + "".join(lines[5:]).replace("0.5,否,是", "0.555,否,是")
    (source / "april.csv").write_text(april, encoding="utf-8")
    (source / "after_sales.csv").write_text(
        (EXPORT / "after_sales.csv").read_text("utf-8"), "utf-8"
    )
    mapping = edited("mapping", "source: invoices.csv", "source: [march.csv, april.csv]")
    (source / "mapping.yaml").write_text(mapping, encoding="utf-8")
    out = tmp_path / "log"
    files = [str(source / n) for n in ("march.csv", "april.csv", "after_sales.csv")]
    result = CliRunner().invoke(
        app, ["import", "--mapping", str(source / "mapping.yaml"), "--out", str(out), *files]
    )
    refused(tmp_path, result.exit_code, result.output, out, "april.csv", "(lines 3)")
    (source / "april.csv").write_text(april.replace("0.555", "0.55"), encoding="utf-8")
    result = CliRunner().invoke(
        app, ["import", "--mapping", str(source / "mapping.yaml"), "--out", str(out), *files]
    )
    assert result.exit_code == 0, result.output
    assert len(load_log(out).orders) == 4


def test_docs_show_the_example_mapping_as_it_is_in_the_repository() -> None:
    page = (ROOT / "docs" / "import.md").read_text(encoding="utf-8")
    assert "```yaml\n" + MAPPING.read_text(encoding="utf-8") + "```" in page
