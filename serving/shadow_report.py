"""`python -m serving shadow-report`: how the challenger in shadow would have decided, against
what the champion did decide, from the audit log (read-only: SQLite `mode=ro`, never created
or changed; a running API keeps writing).

Pure summaries of a table (`shadow_summary`, `disagreements`) and the adapters around them:
the log (`shadowed_decisions`) and an HTML page with plots (`write_html`).
"""

from __future__ import annotations

import base64
import html
import io
import math
import sqlite3
from pathlib import Path

import pandas as pd

from serving.audit import AuditUnavailable

AUTO_APPROVE = "auto_approve"

_SHADOWED = """
SELECT refund_id, decided_at, buyer_id, shop_id, decision, model_version,
       response ->> '$.buyer.score', response ->> '$.buyer.threshold',
       challenger_version, challenger_score, challenger_decision
FROM decisions
WHERE decided_at >= ?1 AND decided_at < ?2 AND challenger_version IS NOT NULL
ORDER BY decided_at, refund_id
"""
COLUMNS = (
    "refund_id",
    "decided_at",
    "buyer_id",
    "shop_id",
    "decision",
    "model_version",
    "score",
    "threshold",
    "challenger_version",
    "challenger_score",
    "challenger_decision",
)


def shadowed_decisions(
    path: str | Path, since: float | None = None, until: float | None = None
) -> tuple[pd.DataFrame, int]:
    """The decisions made in [since, until) that the challenger scored, and how many
    decisions were made in the range in all.

    Raises:
        AuditUnavailable: There is no audit log at `path`, or it cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise AuditUnavailable(f"no audit log at {path}")
    bounds = (-math.inf if since is None else since, math.inf if until is None else until)
    try:
        conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
        try:
            total = conn.execute(
                "SELECT COUNT(*) FROM decisions WHERE decided_at >= ?1 AND decided_at < ?2", bounds
            ).fetchone()[0]
            present = {row[1] for row in conn.execute("PRAGMA table_info(decisions)")}
            # A log no service with shadows has opened yet has no challenger: nothing to show.
            rows = (
                conn.execute(_SHADOWED, bounds).fetchall()
                if "challenger_version" in present
                else []
            )
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise AuditUnavailable(f"audit log {path}: {exc}") from exc
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["decided_at"] = pd.to_datetime(frame["decided_at"], unit="s", utc=True)
    for column in ("score", "threshold", "challenger_score"):
        frame[column] = pd.to_numeric(frame[column])
    return frame, int(total)


def shadow_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (champion version, challenger version): how often they agree.

    Columns: decisions, agreement (share deciding alike), champion_only (the champion
    approved, the challenger would have sent to review), challenger_only (the reverse),
    champion_approval_rate, challenger_approval_rate, score_correlation.
    """
    rows = []
    for (champion, challenger), group in frame.groupby(
        ["model_version", "challenger_version"], sort=True, dropna=False
    ):
        ours = group["decision"] == AUTO_APPROVE
        theirs = group["challenger_decision"] == AUTO_APPROVE
        both = group[["score", "challenger_score"]].dropna()
        correlation = (
            float(both["score"].corr(both["challenger_score"])) if len(both) > 2 else math.nan
        )
        rows.append(
            {
                "champion_version": champion,
                "challenger_version": challenger,
                "decisions": len(group),
                "agreement": float((ours == theirs).mean()),
                "champion_only": int((ours & ~theirs).sum()),
                "challenger_only": int((~ours & theirs).sum()),
                "champion_approval_rate": float(ours.mean()),
                "challenger_approval_rate": float(theirs.mean()),
                "score_correlation": correlation,
            }
        )
    return pd.DataFrame(rows)


def disagreements(frame: pd.DataFrame) -> pd.DataFrame:
    """The decisions the two would have made differently, the widest score gap first, with
    `who_approves` ("champion" or "challenger")."""
    differ = frame[frame["decision"] != frame["challenger_decision"]].copy()
    differ["who_approves"] = differ["decision"].map(
        lambda d: "champion" if d == AUTO_APPROVE else "challenger"
    )
    differ["gap"] = (differ["challenger_score"] - differ["score"]).abs()
    order = ["gap", "decided_at", "refund_id"]
    return differ.sort_values(order, ascending=[False, True, True]).drop(columns="gap")


MATURITY_DAYS = 30  # DESIGN.md's M: how long a confirmation of abuse may take to arrive


def with_labels(
    frame: pd.DataFrame,
    refunds: pd.DataFrame,
    end: pd.Timestamp,
    maturity_days: int = MATURITY_DAYS,
) -> pd.DataFrame:
    """`frame` with `abuse`: whether the decided refund was confirmed as abuse within
    `maturity_days` of the decision, by the log's refunds (`refund_id`, `abuse_confirmed_at`);
    NA where the window has not matured by the log's `end` or the log lacks the refund.

    A fixed window after each decision, so that early and late decisions are judged alike
    (a later confirmation would favour the oldest decisions)."""
    labelled = frame.copy()
    window = pd.Timedelta(days=maturity_days)
    confirmed = refunds.set_index("refund_id")["abuse_confirmed_at"]
    known = labelled["refund_id"].isin(confirmed.index)
    at = labelled["refund_id"].map(confirmed)
    abuse = (at.notna() & (at <= labelled["decided_at"] + window)).astype("boolean")
    matured = known & (labelled["decided_at"] + window <= end)
    labelled["abuse"] = abuse.where(matured, pd.NA)
    return labelled


def bad_rates(labelled: pd.DataFrame) -> pd.DataFrame:
    """Per (champion, challenger): on the matured requests only one of them would approve,
    how many there are and the share confirmed as abuse (the bad rate each would have let
    through that the other would not)."""
    rows = []
    for (champion, challenger), group in labelled.groupby(
        ["model_version", "challenger_version"], sort=True, dropna=False
    ):
        ours = group["decision"] == AUTO_APPROVE
        theirs = group["challenger_decision"] == AUTO_APPROVE
        row: dict = {"champion_version": champion, "challenger_version": challenger}
        for who, only in (("champion_only", ours & ~theirs), ("challenger_only", ~ours & theirs)):
            matured = group.loc[only, "abuse"].dropna()
            row[f"{who}_matured"] = len(matured)
            row[f"{who}_bad_rate"] = float(matured.astype(bool).mean()) if len(matured) else None
        rows.append(row)
    return pd.DataFrame(rows)


def bad_rate_lines(labelled: pd.DataFrame) -> list[str]:
    """`bad_rates` in words."""

    def rate(n: int, value: float | None) -> str:
        return (
            f"{n:,} matured, none to judge"
            if value is None
            else f"{n:,} matured, {value:.1%} abuse"
        )

    return [
        f"champion {row.champion_version} vs challenger {row.challenger_version}: approved by "
        f"the champion only: {rate(row.champion_only_matured, row.champion_only_bad_rate)}; "
        f"by the challenger only: {rate(row.challenger_only_matured, row.challenger_only_bad_rate)}"
        for row in bad_rates(labelled).itertuples()
    ]


def report_lines(frame: pd.DataFrame, total: int, top: int = 20) -> list[str]:
    """The summary and the first `top` disagreements, as a terminal table."""
    if frame.empty:
        return [f"no decision of the {total:,} in the range was scored by a challenger"]
    lines = [f"{len(frame):,} of {total:,} decisions scored by a challenger in shadow"]
    for row in shadow_summary(frame).itertuples():
        lines.append(
            f"champion {row.champion_version} vs challenger {row.challenger_version}: "
            f"{row.decisions:,} decisions, agreement {row.agreement:.1%}; "
            f"approved by the champion only {row.champion_only:,}, by the challenger only "
            f"{row.challenger_only:,}; approval rate {row.champion_approval_rate:.1%} vs "
            f"{row.challenger_approval_rate:.1%}; score correlation {row.score_correlation:.3f}"
        )
    differ = disagreements(frame)
    if differ.empty:
        lines.append("no disagreement")
        return lines
    lines.append(f"disagreements ({len(differ):,}; widest score gap first):")
    lines.append(
        f"{'refund_id':<24}{'decided_at':<21}{'buyer_id':<16}{'champion':>10}{'challenger':>12}"
        "  approved by"
    )
    for row in differ.head(top).itertuples():
        lines.append(
            f"{row.refund_id:<24}{row.decided_at:%Y-%m-%d %H:%M:%S}  {row.buyer_id:<16}"
            f"{row.score:>10.4f}{row.challenger_score:>12.4f}  {row.who_approves}"
        )
    return lines


def _figure_png(frame: pd.DataFrame) -> str:
    """The two models' scores against each other and their distributions, as base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (scatter, hist) = plt.subplots(1, 2, figsize=(11, 4.5))
    agree = frame["decision"] == frame["challenger_decision"]
    for mask, colour, label in ((agree, "#2e86c1", "agree"), (~agree, "#c0392b", "disagree")):
        scatter.scatter(
            frame.loc[mask, "score"],
            frame.loc[mask, "challenger_score"],
            s=6,
            color=colour,
            label=label,
        )
    scatter.set_xlabel("champion score (P(bad))")
    scatter.set_ylabel("challenger score (P(bad))")
    scatter.legend()
    scatter.set_title("scores on the same feature rows")
    bins = [k / 40 for k in range(41)]  # the same bins for both: P(bad) in [0, 1]
    hist.hist(frame["score"].dropna(), bins=bins, alpha=0.6, label="champion")
    hist.hist(frame["challenger_score"].dropna(), bins=bins, alpha=0.6, label="challenger")
    hist.set_xlabel("score")
    hist.set_title("score distributions")
    hist.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def write_html(out: Path, frame: pd.DataFrame, total: int, top: int = 200) -> None:
    """A self-contained page (plots inline): the summary, the plots, the disagreements."""
    from features.io import atomic_path

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Shadow report</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}</style></head><body>",
        "<h1>Challenger in shadow</h1>",
        f"<p>{html.escape(report_lines(frame, total, top=0)[0])}</p>",
    ]
    if not frame.empty:
        parts.append(shadow_summary(frame).to_html(index=False, float_format="{:.4f}".format))
        parts.append(f"<img alt='scores' src='data:image/png;base64,{_figure_png(frame)}'>")
        differ = disagreements(frame)
        parts.append(f"<h2>Disagreements ({len(differ):,}; the first {min(top, len(differ))})</h2>")
        parts.append(differ.head(top).to_html(index=False, float_format="{:.4f}".format))
    parts.append("</body></html>")
    with atomic_path(out) as tmp:
        Path(tmp).write_text("\n".join(parts), encoding="utf-8")
