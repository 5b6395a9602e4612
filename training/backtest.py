"""The policy backtest: every historical pre-shipment refund-only request, decided again.

Each request of the log is judged by serving's own pure decision (`serving.decision.decide`,
imported, never copied) with the inputs the service would have had on the request's day:

- the buyer's features as of the request's day (T = that day 00:00 UTC, the online store's
  snapshot convention), computed for all (buyer, day) pairs at once by
  `features.history.buyer_features_at`, equal to `features.build_features` at each day;
- the buyer's order count and registration (the store's buyer record), and the revocation
  as `serving.materialize.revoked_buyers` would have stood at T;
- the shop's eligibility from `features.history.shop_metrics_at` (the metrics of
  `features.shops.shop_metrics` as of T) decided by `serving.materialize.shop_eligibility`;
- the score of the model chosen (`ModelSchedule`), batch-scored once for every pair;
- the velocity counts and the loss budget's running sums from the approvals the replay
  itself made, in the order of the requests.

Nothing here reads the log after a request's T except the outcome columns the figures are
measured against (abuse confirmed later, a tracking number entered later, when the log
resolved it): that is what a backtest is for, and none of it reaches a decision.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

import features
from features.history import buyer_features_at, shop_metrics_at
from features.log import TransactionLog
from serving import rules
from serving.decision import Decision, decide
from serving.materialize import revoked_buyers, shop_eligibility
from serving.policy import Policy
from serving.records import BuyerRecord, ShopRecord
from serving.schemas import DecisionRequest, Order

DAY_S = 86_400.0
APPROVED_IN_LOG = ("approved", "auto_approved", "arbitrated_buyer_wins")
DISPUTES = ("arbitrated_buyer_wins", "arbitrated_merchant_wins")


@dataclass(frozen=True)
class ReplayModel:
    """A registered model version as the replay scores with it."""

    version: str
    booster: Any  # anything with LightGBM's `predict(matrix)`
    threshold: float
    feature_columns: tuple[str, ...]
    feature_set_version: str = ""


@dataclass(frozen=True)
class ModelSchedule:
    """Which model scores a request made at a given instant.

    `changes` lists (from, model) in time order: a request made at t is scored by the last
    model whose `from` is at or before t, and by none (no champion then: SCORE_UNAVAILABLE,
    as serving answers) before the first. One chosen version is one change at the start of
    time.
    """

    changes: tuple[tuple[pd.Timestamp, ReplayModel], ...]
    description: str

    @classmethod
    def single(cls, model: ReplayModel, description: str = "") -> ModelSchedule:
        return cls(
            ((pd.Timestamp.min.tz_localize("UTC"), model),),
            description or f"version {model.version} for every request",
        )

    def pick(self, times: pd.Series) -> np.ndarray:
        """Index into `changes` per instant (-1: no model yet)."""
        starts = pd.DatetimeIndex([start for start, _ in self.changes]).as_unit("ns").asi8
        stamps = pd.DatetimeIndex(times).as_unit("ns").asi8
        return np.searchsorted(starts, stamps, side="right") - 1


@dataclass
class Prepared:
    """What every policy's replay shares: the requests and their point-in-time inputs."""

    requests: pd.DataFrame  # one row per candidate request, in replay order
    buyer_features: pd.DataFrame  # per request row: FEATURE_COLUMNS (NaN rows: unknown)
    buyer_known: np.ndarray  # registered before the request's T
    registered_s: np.ndarray
    order_count: np.ndarray
    scores: np.ndarray  # NaN: no score
    model_version: np.ndarray  # object: version or None
    threshold: np.ndarray  # NaN: no model
    log: TransactionLog
    schedule: ModelSchedule
    _shop_metrics: dict[float, tuple[pd.DataFrame, np.ndarray]]

    def shop_metrics(self, ship_deadline_hours: float) -> tuple[pd.DataFrame, np.ndarray]:
        """Shop metrics per distinct (shop, day) of the requests, and each request's row in
        them (-1: the shop was unknown at T)."""
        if ship_deadline_hours not in self._shop_metrics:
            pairs = self.requests[["shop_id", "as_of"]]
            metrics = shop_metrics_at(self.log, pairs, ship_deadline_hours)
            where = pairs.merge(
                metrics[["shop_id", "as_of"]].assign(row=np.arange(len(metrics))),
                on=["shop_id", "as_of"],
                how="left",
            )["row"]
            self._shop_metrics[ship_deadline_hours] = (
                metrics,
                where.fillna(-1).to_numpy().astype("int64"),
            )
        return self._shop_metrics[ship_deadline_hours]


def candidate_requests(log: TransactionLog) -> pd.DataFrame:
    """The pre-shipment refund-only requests of the log, in replay order, with their order.

    Pre-shipment: no tracking number when the request was made (the order shipped after it,
    or never). Virtual and custom goods are kept: the policy's rules turn them down.
    """
    orders = log.orders[
        ["order_id", "shop_id", "category", "is_virtual", "is_custom", "paid_fen"]
        + ["shipped_at", "cancelled_at"]
    ]
    frame = log.refunds.merge(orders, on="order_id", how="inner")
    pre_ship = frame["shipped_at"].isna() | (frame["shipped_at"] > frame["requested_at"])
    frame = frame.loc[pre_ship & (frame["kind"] == "refund_only")]
    frame = frame.sort_values(["requested_at", "refund_id"], kind="stable", ignore_index=True)
    frame["as_of"] = frame["requested_at"].dt.floor("D")
    frame["month"] = frame["requested_at"].dt.strftime("%Y-%m")
    cancelled = frame["cancelled_at"].notna() & (frame["cancelled_at"] <= frame["requested_at"])
    frame["status"] = np.where(cancelled, "cancelled", "paid_unshipped")
    return frame


def requests_of(frame: pd.DataFrame) -> list[DecisionRequest]:
    """The API requests the after-sales system would have sent for these log rows.

    Built without validation (`model_construct`): the log was validated when it was loaded,
    and validating 30,000 requests again would cost seconds.
    """
    columns = ("refund_id", "kind", "order_id", "buyer_id", "shop_id", "category", "status")
    values = {c: frame[c].astype(object).to_numpy().tolist() for c in columns}
    flags = {c: frame[c].to_numpy(bool).tolist() for c in ("is_virtual", "is_custom")}
    paid = frame["paid_fen"].to_numpy("int64").tolist()
    times = list(frame["requested_at"].dt.to_pydatetime())
    made = []
    for i in range(len(frame)):
        order = Order.model_construct(
            order_id=values["order_id"][i],
            buyer_id=values["buyer_id"][i],
            shop_id=values["shop_id"][i],
            category=values["category"][i],
            is_virtual=flags["is_virtual"][i],
            is_custom=flags["is_custom"][i],
            paid_amount=paid[i],
            currency="CNY",
            status=values["status"][i],
            tracking_number=None,
        )
        made.append(
            DecisionRequest.model_construct(
                refund_id=values["refund_id"][i],
                requested_at=times[i],
                kind=values["kind"][i],
                order=order,
            )
        )
    return made


def prepare(log: TransactionLog, schedule: ModelSchedule) -> Prepared:
    """Compute every request's point-in-time inputs and score them (once for all policies)."""
    requests = candidate_requests(log)
    pairs = requests[["buyer_id", "as_of"]]
    built = buyer_features_at(log, pairs)
    joined = pairs.merge(built, on=["buyer_id", "as_of"], how="left")
    known = joined["account_age_days"].notna().to_numpy()
    registered = log.buyers.set_index("buyer_id")["registered_at"]
    registered_s = (
        registered.reindex(requests["buyer_id"]).to_numpy("datetime64[ns]").astype("int64") / 1e9
    )
    # The store's order count is the orders paid before T: the orders_total feature.
    order_count = joined["orders_total"].fillna(0).to_numpy().astype("int64")
    scores = np.full(len(requests), np.nan)
    versions = np.full(len(requests), None, dtype=object)
    thresholds = np.full(len(requests), np.nan)
    which = schedule.pick(requests["requested_at"])
    for k, (_, model) in enumerate(schedule.changes):
        rows = np.flatnonzero((which == k) & known)
        versions[which == k] = model.version
        thresholds[which == k] = model.threshold
        if model.feature_set_version and model.feature_set_version != features.FEATURE_SET_VERSION:
            continue  # serving refuses a model trained on other features: no score
        if len(rows):
            matrix = joined.loc[rows, list(model.feature_columns)].to_numpy(np.float64)
            predicted = np.asarray(model.booster.predict(matrix), dtype=np.float64)
            valid = np.isfinite(predicted) & (predicted >= 0) & (predicted <= 1)
            scores[rows] = np.where(valid, predicted, np.nan)
    return Prepared(
        requests=requests,
        buyer_features=joined[features.FEATURE_COLUMNS],
        buyer_known=known,
        registered_s=registered_s,
        order_count=order_count,
        scores=scores,
        model_version=versions,
        threshold=thresholds,
        log=log,
        schedule=schedule,
        _shop_metrics={},
    )


def _revocations(prepared: Prepared, policy: Policy) -> list[str | None]:
    """Per request: why the buyer was revoked as of T (None: not revoked), as
    `serving.materialize.revoked_buyers` says it: the latest confirmation before T."""
    requests = prepared.requests
    if not policy.revoke_on_confirmed_abuse:
        return [None] * len(requests)
    refunds = prepared.log.refunds
    confirmed = refunds.loc[
        refunds["abuse_confirmed_at"].notna(), ["refund_id", "buyer_id", "abuse_confirmed_at"]
    ].sort_values("abuse_confirmed_at", kind="stable")
    if confirmed.empty:
        return [None] * len(requests)
    left = pd.DataFrame(
        {"row": np.arange(len(requests)), "buyer_id": requests["buyer_id"], "at": requests["as_of"]}
    ).sort_values("at", kind="stable")
    right = confirmed.rename(columns={"abuse_confirmed_at": "at"})
    right["at"] = right["at"].astype(left["at"].dtype)
    matched = pd.merge_asof(
        left, right, on="at", by="buyer_id", direction="backward", allow_exact_matches=False
    ).dropna(subset=["refund_id"])
    # The reason text of each confirmation, worded by serving's own function (each refund
    # taken as a buyer of its own, known at the end of time).
    own = confirmed.assign(buyer_id=confirmed["refund_id"])
    worded = revoked_buyers(replace(prepared.log, refunds=own), pd.Timestamp.max.tz_localize("UTC"))
    out: list[str | None] = [None] * len(requests)
    for row, refund_id in zip(matched["row"], matched["refund_id"], strict=True):
        out[int(row)] = worded[refund_id]
    return out


def _shops(prepared: Prepared, policy: Policy) -> list[ShopRecord | None]:
    """Per request: the shop's eligibility as of T, as materialize decides it (None: the shop
    was not open yet, unknown to the store)."""
    thresholds = policy.shop_eligibility
    metrics, where = prepared.shop_metrics(thresholds.ship_deadline_hours)
    decided = shop_eligibility(metrics, thresholds)
    records = [
        ShopRecord(shop_id, bool(eligible), reasons, None)
        for shop_id, eligible, reasons in zip(
            decided["shop_id"], decided["eligible"], decided["reasons"], strict=True
        )
    ]
    return [records[k] if k >= 0 else None for k in where.tolist()]


class _Window:
    """Approvals of one key (a buyer, a shop) with their expected loss, over time."""

    __slots__ = ("losses", "times")

    def __init__(self) -> None:
        self.times: deque[float] = deque()
        self.losses: deque[float] = deque()

    def prune(self, since: float) -> None:
        while self.times and self.times[0] <= since:
            self.times.popleft()
            self.losses.popleft()

    def count_after(self, since: float) -> int:
        return len(self.times) - bisect.bisect_right(self.times, since)


class ReplayInput(NamedTuple):
    """One decision's inputs as a replay gathers them (what serving reads from its store,
    its champion and its clock); the approval counts are the replay's own."""

    request: DecisionRequest
    buyer: BuyerRecord | None
    shop: ShopRecord | None
    score: float | None
    threshold: float | None
    now: float  # epoch seconds
    feature_count: int
    unavailable: str | None = None


def decide_in_order(inputs: Iterable[ReplayInput], policy: Policy) -> list[Decision]:
    """`serving.decision.decide` for each input, in order, counting the velocity limits and
    the loss budget's running sums from the approvals made on the way: the rolling windows
    serving counts from its audit log (approvals in the last day and 30 days before `now`,
    each with its score x paid amount), so decisions sharing one `now` (a batch) count the
    approvals made before them."""
    budget = policy.loss_budget.active
    buyers: dict[str, _Window] = defaultdict(_Window)
    shops: dict[str, _Window] = defaultdict(_Window)
    made: list[Decision] = []
    for item in inputs:
        request, now, score = item.request, item.now, item.score
        buyer_id, shop_id = request.order.buyer_id, request.order.shop_id
        mine = buyers[buyer_id]
        mine.prune(now - 30 * DAY_S)
        approvals = (mine.count_after(now - DAY_S), len(mine.times))
        exposure = (0.0, 0.0)
        if budget:
            shop = shops[shop_id]
            shop.prune(now - DAY_S)
            exposure = (sum(shop.losses), sum(mine.losses))
        decision = decide(
            request,
            item.buyer,
            item.shop,
            score,
            item.threshold,
            approvals,
            policy,
            now,
            feature_count=item.feature_count,
            unavailable=item.unavailable,
            exposure=exposure,
        )
        made.append(decision)
        if decision.decision == rules.AUTO_APPROVE:
            loss = 0.0 if score is None else score * request.order.paid_amount
            mine.times.append(now)
            mine.losses.append(loss)
            if budget:
                shops[shop_id].times.append(now)
                shops[shop_id].losses.append(loss)
    return made


def replay(
    prepared: Prepared,
    policy: Policy,
    threshold: float | None = None,
    requests: Sequence[DecisionRequest] | None = None,
) -> pd.DataFrame:
    """Decide every prepared request under `policy`, in order, as serving would have
    (`decide_in_order`).

    Args:
        prepared: From `prepare`.
        policy: The policy to judge by.
        threshold: A premium threshold for every request instead of the model's (a sweep).
        requests: The API requests (from `requests_of`), when already built.

    Returns:
        One row per request: `decision`, `reasons` (codes, "; "-joined), `score`,
        `model_version`, `premium`, `expected_loss_fen` (score x paid amount).
    """
    frame = prepared.requests
    if requests is None:
        requests = requests_of(frame)
    revoked = _revocations(prepared, policy)
    shops = _shops(prepared, policy)
    vectors = prepared.buyer_features.to_numpy(np.float64)
    buyer_ids = frame["buyer_id"].to_numpy()
    now_s = frame["requested_at"].to_numpy("datetime64[ns]").astype("int64") / 1e9

    def inputs() -> Iterator[ReplayInput]:
        for i, request in enumerate(requests):
            buyer = None
            why = revoked[i]
            if prepared.buyer_known[i]:
                buyer = BuyerRecord(
                    buyer_ids[i],
                    float(prepared.registered_s[i]),
                    int(prepared.order_count[i]),
                    vectors[i],
                    why is not None,
                    why or "",
                )
            score = prepared.scores[i]
            cut = threshold if threshold is not None else prepared.threshold[i]
            yield ReplayInput(
                request,
                buyer,
                shops[i],
                None if math.isnan(score) else float(score),
                None if cut is None or math.isnan(cut) else float(cut),
                float(now_s[i]),
                vectors.shape[1],
            )

    made = decide_in_order(inputs(), policy)
    scores = prepared.scores
    return pd.DataFrame(
        {
            "refund_id": frame["refund_id"].to_numpy(),
            "decision": [decision.decision for decision in made],
            "reasons": ["; ".join(f.code.value for f in decision.reasons) for decision in made],
            "score": scores,
            "model_version": prepared.model_version,
            "premium": np.fromiter((d.premium for d in made), dtype=bool, count=len(made)),
            "expected_loss_fen": scores * frame["paid_fen"].to_numpy(),
        }
    )


def outcomes(requests: pd.DataFrame) -> pd.DataFrame:
    """What happened to each request in the log (the figures' yardstick, after T)."""
    refunded = requests["outcome"].isin(APPROVED_IN_LOG)
    hours = (requests["resolved_at"] - requests["requested_at"]) / pd.Timedelta(hours=1)
    return pd.DataFrame(
        {
            "refund_id": requests["refund_id"],
            "order_id": requests["order_id"],
            "buyer_id": requests["buyer_id"],
            "shop_id": requests["shop_id"],
            "category": requests["category"],
            "month": requests["month"],
            "requested_at": requests["requested_at"],
            "paid_fen": requests["paid_fen"],
            "amount_fen": requests["amount_fen"],
            "log_outcome": requests["outcome"],
            "log_refunded": refunded,
            "log_hours_to_refund": hours.where(refunded),
            "log_reviewed": requests["outcome"].notna() & (requests["outcome"] != "auto_approved"),
            "log_disputed": requests["outcome"].isin(DISPUTES),
            "abusive": requests["abuse_confirmed_at"].notna(),
            "tracking_after": requests["shipped_at"].notna(),
        }
    )


def decisions_table(prepared: Prepared, decided: pd.DataFrame) -> pd.DataFrame:
    """The replayed decisions joined to what happened in the log, one row per request."""
    return outcomes(prepared.requests).merge(decided, on="refund_id", validate="one_to_one")


FIGURES = (
    "requests",
    "auto_approved",
    "coverage",
    "reviews_saved",
    "hours_to_refund_saved",
    "abuse_approved",
    "abuse_approved_cny",
    "cny_at_risk",
    "tracking_after_approval",
    "tracking_after_approval_cny",
)


def _figures_of(group: pd.DataFrame) -> dict[str, float]:
    approved = group["decision"] == rules.AUTO_APPROVE
    hit = group.loc[approved]
    abuse = hit.loc[hit["abusive"]]
    tracked = hit.loc[hit["tracking_after"]]
    return {
        "requests": len(group),
        "auto_approved": int(approved.sum()),
        "coverage": float(approved.mean()) if len(group) else math.nan,
        "reviews_saved": int(hit["log_reviewed"].sum()),
        "hours_to_refund_saved": float(hit["log_hours_to_refund"].sum()),
        "abuse_approved": len(abuse),
        "abuse_approved_cny": abuse["amount_fen"].sum() / 100,
        "cny_at_risk": float(np.nansum(hit["expected_loss_fen"])) / 100,
        "tracking_after_approval": len(tracked),
        "tracking_after_approval_cny": tracked["amount_fen"].sum() / 100,
    }


def figures(table: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """The backtest's figures overall (`by` None) or per shop_id, category or month.

    - requests: pre-shipment refund-only requests in the log;
    - auto_approved, coverage: those the policy approves, and their share;
    - reviews_saved: approvals the log shows a merchant (or arbitration) deciding;
    - hours_to_refund_saved: over approvals the log refunded, its hours from request to
      refund (an automatic approval refunds at once);
    - abuse_approved (count, CNY of the refund): approvals of requests confirmed as abuse;
    - cny_at_risk: sum of P(bad) x paid amount over approvals;
    - tracking_after_approval (count, CNY): approvals whose order got a tracking number
      afterwards (POLICY.md's risk: the goods may have shipped).
    """
    if by is None:
        return pd.DataFrame([_figures_of(table)])
    rows = [{by: key, **_figures_of(group)} for key, group in table.groupby(by, sort=True)]
    return pd.DataFrame(rows, columns=[by, *FIGURES])


def tracking_after_approval(table: pd.DataFrame) -> pd.DataFrame:
    """The approvals whose order got a tracking number afterwards, for the merchants."""
    hit = table.loc[(table["decision"] == rules.AUTO_APPROVE) & table["tracking_after"]]
    columns = ["shop_id", "order_id", "refund_id", "requested_at", "amount_fen", "score"]
    return hit[columns].sort_values(["shop_id", "requested_at"], ignore_index=True)


def side_by_side(base: pd.DataFrame, other: pd.DataFrame, by: str | None) -> pd.DataFrame:
    """Two policies' figures with the difference (other - base), column by column."""
    keys = [by] if by else []
    left = figures(base, by).set_index(keys) if by else figures(base)
    right = figures(other, by).set_index(keys) if by else figures(other)
    right = right.reindex(left.index.union(right.index))
    left = left.reindex(right.index)
    out = pd.concat({"base": left, "against": right, "difference": right - left}, axis=1).swaplevel(
        axis=1
    )
    out = out[[(figure, side) for figure in FIGURES for side in ("base", "against", "difference")]]
    out.columns = [f"{figure}_{side}" for figure, side in out.columns]
    return out.reset_index() if by else out


def changed_decisions(base: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """The requests the two policies decide differently."""
    merged = base[["refund_id", "shop_id", "decision", "reasons"]].merge(
        other[["refund_id", "decision", "reasons"]], on="refund_id", suffixes=("_base", "_against")
    )
    return merged.loc[merged["decision_base"] != merged["decision_against"]].reset_index(drop=True)


def threshold_sweep(
    prepared: Prepared, policy: Policy, points: int, progress: Callable[[int], None] | None = None
) -> pd.DataFrame:
    """Coverage against abuse approved as the premium threshold moves (the whole replay,
    velocity and budget included, once per threshold; `points` quantiles of the scores)."""
    scores = prepared.scores[np.isfinite(prepared.scores)]
    if not len(scores) or points < 1:
        return pd.DataFrame(columns=["threshold", *FIGURES])
    cuts = np.unique(np.quantile(scores, np.linspace(0.05, 0.95, points)))
    requests = requests_of(prepared.requests)
    rows = []
    for k, cut in enumerate(cuts):
        table = decisions_table(prepared, replay(prepared, policy, float(cut), requests))
        rows.append({"threshold": float(cut), **_figures_of(table)})
        if progress:
            progress(k)
    return pd.DataFrame(rows)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
