"""`python -m serving export-decisions` on the PostgreSQL audit log: the same table as
`serving.export.export_decisions` reads from a SQLite log, column for column (the parity
test compares them), in one read-only transaction."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from serving.audit import AuditUnavailable
from serving.database import connect, describe
from serving.export import EXPORT_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

_EXPORT = """
SELECT refund_id, decided_at, decision,
       (SELECT string_agg(x.r ->> 'code', ',' ORDER BY x.n)
        FROM jsonb_array_elements(response::jsonb -> 'reasons') WITH ORDINALITY AS x (r, n)),
       buyer_id, shop_id,
       request::jsonb ->> 'kind', request::jsonb -> 'order' ->> 'category',
       request::jsonb -> 'order' ->> 'status', request::jsonb -> 'order' ->> 'paid_amount',
       request::jsonb ->> 'requested_at',
       response::jsonb -> 'buyer' ->> 'score', response::jsonb -> 'buyer' ->> 'threshold',
       model_name, model_version, policy_version,
       challenger_version, challenger_score, challenger_decision
FROM decisions
WHERE decided_at >= %s AND decided_at < %s
ORDER BY decided_at, refund_id
"""


def export_decisions(url: str, since: float | None = None, until: float | None = None):
    """The decisions made in [since, until) (epoch seconds), as `serving.export` gives them.

    Raises:
        AuditUnavailable: The database cannot be reached or read (one line, no password).
    """
    import pandas as pd
    import psycopg

    try:
        with connect(url) as conn, conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION READ ONLY")
            rows = conn.execute(
                _EXPORT,
                (-math.inf if since is None else since, math.inf if until is None else until),
            ).fetchall()
    except psycopg.Error as exc:
        raise AuditUnavailable(describe(exc, url)) from None
    except OSError as exc:  # DatabaseError: cannot connect
        raise AuditUnavailable(str(exc)) from None
    return _frame(pd.DataFrame(rows, columns=list(EXPORT_COLUMNS)))


def _frame(frame: pd.DataFrame) -> pd.DataFrame:
    # The same conversions as serving.export's (kept beside the PostgreSQL query they fit).
    import pandas as pd

    frame["decided_at"] = pd.to_datetime(frame["decided_at"], unit="s", utc=True)
    frame["requested_at"] = pd.to_datetime(frame["requested_at"], utc=True, format="ISO8601")
    frame["reasons"] = frame["reasons"].fillna("")
    amount = frame["paid_fen"].astype("string").str.extract(r"^([0-9]+)(?:\.([0-9]{1,2}))?$")
    cents = amount[1].fillna("").str.ljust(2, "0")
    frame["paid_fen"] = amount[0].astype("int64") * 100 + cents.astype("int64")
    for column in ("score", "threshold", "challenger_score"):
        frame[column] = pd.to_numeric(frame[column])
    return frame
