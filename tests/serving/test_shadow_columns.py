"""The audit log's columns for the challenger in shadow: logs from before them are extended in
place and still read, and `export-decisions` carries them (empty without a challenger)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from serving.__main__ import app as cli
from serving.audit import AuditLog
from serving.policy import load_policy

# The decisions table of a log written after snapshots but before the challenger's columns.
BEFORE_SHADOW = (
    "CREATE TABLE decisions (refund_id TEXT PRIMARY KEY, request_hash TEXT NOT NULL, "
    "buyer_id TEXT NOT NULL, shop_id TEXT NOT NULL, decision TEXT NOT NULL, "
    "decided_at REAL NOT NULL, request TEXT NOT NULL, features BLOB NOT NULL, "
    "model_name TEXT, model_version TEXT, policy_version TEXT NOT NULL, "
    "response TEXT NOT NULL, snapshot TEXT)"
)
REQUEST = (
    '{"kind": "refund_only", "requested_at": "2025-06-01T00:00:00Z", '
    '"order": {"paid_amount": "12.50"}}'
)


def _old_log(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute(BEFORE_SHADOW)
        db.execute(
            "INSERT INTO decisions VALUES ('RF-OLD', 'h', 'B1', 'S1', 'manual_review', 1.0, ?, "
            "x'', 'buyer-quality', '6', 'p', '{\"reasons\": []}', NULL)",
            (REQUEST,),
        )


def test_a_log_from_before_the_challenger_is_extended_and_its_records_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.db"
    _old_log(path)
    audit = AuditLog.open(path)
    try:
        record = audit.get("RF-OLD")
    finally:
        audit.close()
    assert record is not None and record.model_version == "6"
    assert (record.challenger_version, record.challenger_score) == (None, None)
    with sqlite3.connect(path) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(decisions)")]
    assert columns[-4:] == [
        "snapshot",
        "challenger_version",
        "challenger_score",
        "challenger_decision",
    ]


def test_export_reads_a_log_no_service_extended_yet(tmp_path: Path) -> None:
    path, out = tmp_path / "audit.db", tmp_path / "d.csv"
    _old_log(path)
    result = CliRunner().invoke(cli, ["export-decisions", "--out", str(out), "--audit", str(path)])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    assert frame["refund_id"].tolist() == ["RF-OLD"]
    assert frame[["challenger_version", "challenger_score"]].isna().all().all()
    with sqlite3.connect(path) as db:  # read-only: not extended by the export
        assert "challenger_score" not in {r[1] for r in db.execute("PRAGMA table_info(decisions)")}


def test_the_policy_carries_the_drift_alert_line() -> None:
    assert load_policy().drift_psi_alert == 0.25
