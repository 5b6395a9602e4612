"""The backtest's pages: one self-contained HTML file each, plots embedded as base64 PNG.

`backtest_page` is the analyst's (figures overall, the threshold sweep, per-shop bars,
monthly lines, the side-by-side of two policies, what the loss budget cost and saved);
`merchant_page` is what one shop would be shown.
"""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from serving import rules  # noqa: E402
from training import backtest as bt  # noqa: E402

if TYPE_CHECKING:
    from training.backtest_run import BacktestResult

_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th{background:#f3f3f3}img{max-width:100%}.note{color:#555;font-size:13px}"
)


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="plot" src="data:image/png;base64,{encoded}">'


def _table(frame: pd.DataFrame, digits: int = 2) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:,.{digits}f}", border=0)


def _page(title: str, body: list[str]) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        + "\n".join(body)
        + "</body></html>"
    )


def _sweep_plot(result: BacktestResult) -> str:
    sweep = result.sweep
    fig, ax = plt.subplots(figsize=(7, 4))
    if len(sweep):
        ax.plot(sweep["coverage"], sweep["abuse_approved_cny"], marker="o", label="threshold moved")
        for row in sweep.itertuples():
            ax.annotate(f"{row.threshold:.3f}", (row.coverage, row.abuse_approved_cny), fontsize=7)
    overall = bt.figures(result.base).iloc[0]
    ax.scatter(
        [overall["coverage"]],
        [overall["abuse_approved_cny"]],
        color="red",
        zorder=3,
        label=f"policy {result.policy.version}",
    )
    ax.set_xlabel("coverage (share of requests auto-approved)")
    ax.set_ylabel("abuse approved (CNY)")
    ax.legend()
    ax.set_title("Coverage against abuse approved as the premium threshold moves")
    return _png(fig)


def _shop_plot(result: BacktestResult, top: int = 20) -> str:
    by_shop = bt.figures(result.base, "shop_id").nlargest(top, "requests")
    fig, ax = plt.subplots(figsize=(10, 4))
    x = np.arange(len(by_shop))
    ax.bar(x - 0.2, by_shop["auto_approved"], 0.4, label="auto-approved")
    ax.bar(x + 0.2, by_shop["requests"] - by_shop["auto_approved"], 0.4, label="left to review")
    ax.set_xticks(x, by_shop["shop_id"], rotation=70, fontsize=7)
    ax2 = ax.twinx()
    ax2.plot(x, by_shop["abuse_approved_cny"], color="red", marker=".", label="abuse approved CNY")
    ax2.set_ylabel("abuse approved (CNY)")
    ax.set_ylabel("requests")
    ax.legend(loc="upper left")
    ax2.legend(loc="upper right")
    ax.set_title(f"The {top} shops with the most requests")
    return _png(fig)


def _monthly_plot(result: BacktestResult) -> str:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    runs = [(f"policy {result.policy.version}", result.base)]
    if result.other is not None and result.against is not None:
        runs.append((f"policy {result.against.version}", result.other))
    for label, table in runs:
        monthly = bt.figures(table, "month")
        top.plot(
            monthly["month"], monthly["auto_approved"], marker=".", label=f"auto-approved, {label}"
        )
        bottom.plot(monthly["month"], monthly["abuse_approved_cny"], marker=".", label=label)
        bottom.plot(
            monthly["month"], monthly["cny_at_risk"], linestyle="--", label=f"CNY at risk, {label}"
        )
    monthly = bt.figures(result.base, "month")
    top.plot(monthly["month"], monthly["requests"], color="grey", label="requests")
    top.legend(fontsize=7)
    bottom.legend(fontsize=7)
    bottom.set_ylabel("CNY")
    top.set_ylabel("requests")
    bottom.set_title("Abuse approved (solid) and CNY at risk (dashed)")
    bottom.tick_params(axis="x", rotation=70, labelsize=7)
    return _png(fig)


def backtest_page(result: BacktestResult) -> str:
    """The analyst's page."""
    body = [
        f"<p>Policy <b>{html.escape(result.policy.version)}</b>"
        + (
            f" against <b>{html.escape(result.against.version)}</b>"
            if result.against is not None
            else ""
        )
        + f"; model: {html.escape(result.schedule.description)}. {result.requests:,} "
        f"pre-shipment refund-only requests replayed in {result.seconds:.1f} s "
        f"({result.requests_per_second:,.0f} requests/s).</p>",
        "<h2>Overall</h2>",
        _table(result.tables["overall"]),
    ]
    if "overall_side_by_side" in result.tables:
        side = result.tables["overall_side_by_side"].T.reset_index()
        side.columns = ["figure", "value"]
        body += ["<h2>Side by side</h2>", _table(side)]
        changed = result.tables["changed_decisions"]
        body.append(
            f"<p>{len(changed):,} requests decided differently (changed_decisions.csv).</p>"
        )
    if "loss_budget_effect" in result.tables:
        effect = result.tables["loss_budget_effect"].T.reset_index()
        effect.columns = ["figure (base: no budget; against: the budget)", "value"]
        body += [
            "<h2>The expected-loss budget: what it cost and saved</h2>",
            "<p class='note'>The same replay without the loss budget (base) and with it "
            "(against): the coverage it cost and the loss it saved.</p>",
            _table(effect),
        ]
    reasons = result.base["reasons"].str.split("; ").explode()
    reasons = reasons[reasons != ""].value_counts().rename_axis("reason").reset_index()
    body += [
        "<h2>Why requests were left to review</h2>",
        _table(reasons),
        "<h2>Threshold sweep</h2>",
        _sweep_plot(result),
        "<h2>Per shop</h2>",
        _shop_plot(result),
        "<h2>Per month</h2>",
        _monthly_plot(result),
        "<h2>Per category</h2>",
        _table(result.tables["by_category"]),
        "<p class='note'>Tables: overall, by_shop, by_category, by_month (csv and parquet), "
        "tracking_after_approval.csv (the order ids), decisions.parquet. docs/backtest.md "
        "says what each figure means.</p>",
    ]
    return _page("Policy backtest", body)


def merchant_figures(mine: pd.DataFrame) -> dict[str, float]:
    """A shop's figures: reviews saved, time to refund, disputes before and after."""
    approved = mine["decision"] == rules.AUTO_APPROVE
    refunded = mine["log_refunded"]
    hours = mine["log_hours_to_refund"]
    after_hours = hours.where(~approved, 0.0)  # an automatic approval refunds at once
    return {
        "requests": len(mine),
        "reviews_saved": int((approved & mine["log_reviewed"]).sum()),
        "mean_hours_to_refund_before": float(hours[refunded].mean()),
        "mean_hours_to_refund_after": float(after_hours[refunded | approved].mean()),
        "dispute_rate_before": float(mine["log_disputed"].mean()),
        # An auto-approved request is refunded at once: it does not go to arbitration.
        "dispute_rate_after": float((mine["log_disputed"] & ~approved).mean()),
        "tracking_after_approval": int((approved & mine["tracking_after"]).sum()),
    }


def merchant_page(shop_id: str, result: BacktestResult, mine: pd.DataFrame) -> str:
    """The page one merchant is shown."""
    figures = merchant_figures(mine)
    table = pd.DataFrame([figures]).T.reset_index()
    table.columns = ["figure", "value"]
    tracked = bt.tracking_after_approval(mine)
    tracked = tracked.assign(amount_cny=tracked["amount_fen"] / 100)[
        ["order_id", "refund_id", "requested_at", "amount_cny"]
    ]
    monthly = bt.figures(mine, "month")
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(monthly["month"], monthly["requests"], marker=".", label="requests")
    ax.plot(monthly["month"], monthly["reviews_saved"], marker=".", label="reviews saved")
    ax.tick_params(axis="x", rotation=70, labelsize=7)
    ax.legend()
    body = [
        f"<p>What the unshipped fast refund (policy {html.escape(result.policy.version)}; "
        f"model: {html.escape(result.schedule.description)}) would have done for your "
        f"shop's {figures['requests']:,} refund-only requests made before shipment.</p>",
        _table(table),
        "<p class='note'>Before: as the log shows them (merchant review, arbitration). After: "
        "with the service, an approved request is refunded at once and does not go to "
        "arbitration; the others as before.</p>",
        _png(fig),
        "<h2>Orders where a tracking number came after an approved refund</h2>",
        "<p class='note'>The goods may have shipped after the platform refunded the buyer: "
        "check these orders.</p>",
        _table(tracked) if len(tracked) else "<p>None.</p>",
    ]
    return _page(f"Fast refund report for shop {shop_id}", body)
