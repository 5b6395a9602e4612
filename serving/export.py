"""The audit log's decisions as a table for analysis (`python -m serving export-decisions`).

Read-only: the log is opened with SQLite's `mode=ro`, never created or changed, and a running
API keeps writing meanwhile. A CSV is written for spreadsheets, which run a cell that looks
like a formula: `csv_safe` escapes those cells (ids and categories come from callers).
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from serving.audit import AuditUnavailable

# One row a decision, for analysis: what was asked, what was answered and with what. The
# JSON is taken apart by SQLite (no Python loop over the rows).
_EXPORT = """
SELECT refund_id, decided_at, decision,
       (SELECT group_concat(value ->> '$.code', ',') FROM json_each(response, '$.reasons')),
       buyer_id, shop_id,
       request ->> '$.kind', request ->> '$.order.category', request ->> '$.order.status',
       request ->> '$.order.paid_amount', request ->> '$.requested_at',
       response ->> '$.buyer.score', response ->> '$.buyer.threshold',
       model_name, model_version, policy_version,
       {challenger}
FROM decisions
WHERE decided_at >= ?1 AND decided_at < ?2
ORDER BY decided_at, refund_id
"""
if TYPE_CHECKING:
    import pandas as pd

# OWASP's CSV injection rule: a cell starting with one of these is read as a formula by
# Excel, LibreOffice or Google Sheets (=HYPERLINK(...), @SUM(...), -2+3, a tab or CR first).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\0")
_CHALLENGER = ("challenger_version", "challenger_score", "challenger_decision")
EXPORT_COLUMNS = (
    "refund_id",
    "decided_at",
    "decision",
    "reasons",
    "buyer_id",
    "shop_id",
    "kind",
    "category",
    "status",
    "paid_fen",
    "requested_at",
    "score",
    "threshold",
    "model_name",
    "model_version",
    "policy_version",
    # The challenger in shadow (serving.shadow): empty when none was scored.
    "challenger_version",
    "challenger_score",
    "challenger_decision",
)


def export_decisions(path: str | Path, since: float | None = None, until: float | None = None):
    """The decisions made in [since, until) (epoch seconds), one row each, oldest first.

    Reads the log read-only: it is never created or changed, and a running API keeps writing.
    Columns: EXPORT_COLUMNS; `reasons` is the failed rules' codes, comma-separated ("" for an
    approval); `decided_at` and `requested_at` are UTC timestamps; `paid_fen` is an integer.

    Raises:
        AuditUnavailable: There is no audit log at `path`, or it cannot be read.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise AuditUnavailable(f"no audit log at {path}")
    try:
        conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
        try:
            # A log no service of this version opened yet lacks the challenger's columns
            # (read-only: it is not extended here): they export as empty.
            present = {row[1] for row in conn.execute("PRAGMA table_info(decisions)")}
            challenger = ", ".join(c if c in present else f"NULL AS {c}" for c in _CHALLENGER)
            rows = conn.execute(
                _EXPORT.format(challenger=challenger),
                (-math.inf if since is None else since, math.inf if until is None else until),
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise AuditUnavailable(f"audit log {path}: {exc}") from exc
    frame = pd.DataFrame(rows, columns=list(EXPORT_COLUMNS))
    frame["decided_at"] = pd.to_datetime(frame["decided_at"], unit="s", utc=True)
    frame["requested_at"] = pd.to_datetime(frame["requested_at"], utc=True, format="ISO8601")
    frame["reasons"] = frame["reasons"].fillna("")
    amount = frame["paid_fen"].astype("string").str.extract(r"^([0-9]+)(?:\.([0-9]{1,2}))?$")
    cents = amount[1].fillna("").str.ljust(2, "0")
    frame["paid_fen"] = amount[0].astype("int64") * 100 + cents.astype("int64")
    for column in ("score", "threshold", "challenger_score"):
        frame[column] = pd.to_numeric(frame[column])
    return frame


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame for a CSV a spreadsheet will open: each text cell starting with one of
    FORMULA_STARTS gets a leading `'`, which spreadsheets take as "this is text" and do not
    show (OWASP's rule). Numbers, timestamps and other cells are unchanged; so is the frame
    given (a Parquet export is written from it as it is).
    """
    import pandas as pd

    safe = frame.copy()
    for column in safe.columns:
        cells = safe[column]
        if not (pd.api.types.is_string_dtype(cells) or pd.api.types.is_object_dtype(cells)):
            continue
        risky = cells.str.startswith(FORMULA_STARTS, na=False)
        if risky.any():
            safe[column] = cells.where(~risky, "'" + cells.where(risky, "").astype(str))
    return safe
