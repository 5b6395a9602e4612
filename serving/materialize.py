"""Materialize the online store: buyer features, revocations and shop eligibility as of a date.

Uses the same feature code as training (`features.build_features`), so there is no
training/serving skew. Everything is computed first and written in one transaction: a failed
run leaves the previous snapshot serving.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

import features
from features.shops import SHOP_METRIC_COLUMNS, shop_metrics
from serving.policy import Policy, ShopEligibility, load_policy
from serving.store import StoreMeta, write_snapshot


@dataclass(frozen=True)
class MaterializeReport:
    """What a run wrote, and the risk POLICY.md asks to make visible."""

    store_path: Path
    as_of: str
    feature_set_version: str
    buyers: int
    revoked_buyers: int
    shops: int
    eligible_shops: int
    approved_pre_ship_refunds: int
    tracking_after_refund: int
    worst_shops: list[dict] = field(default_factory=list)
    where: str = ""  # the store as it may be shown: the file, or the database's redacted URL


def default_as_of(log: features.TransactionLog) -> pd.Timestamp:
    """The end of the log as an as-of date: the day after its last instant (all of it known)."""
    last = log.last_as_of()
    if last is None:
        raise ValueError("the log has no end (no meta.json and no timestamps); give --as-of")
    return last


def shop_eligibility(metrics: pd.DataFrame, thresholds: ShopEligibility) -> pd.DataFrame:
    """Decide each shop's eligibility from its metrics (pure).

    A rate counts against a shop only when it rests on at least `min_events_for_rate`
    events, so a new shop's first bad order does not decide it.

    Returns:
        `shop_id`, `eligible` (bool), `reasons` ("; "-joined, empty when eligible).
    """
    enough = thresholds.min_events_for_rate
    checks = [
        (
            metrics["shop_age_days"] < thresholds.min_shop_age_days,
            f"open fewer than {thresholds.min_shop_age_days} days",
        ),
        (
            (metrics["orders_due"] >= enough)
            & (metrics["late_shipment_rate"] > thresholds.max_late_shipment_rate),
            f"late shipment rate above {thresholds.max_late_shipment_rate:.0%}",
        ),
        (
            (metrics["approved_pre_ship_refunds"] >= enough)
            & (metrics["tracking_after_refund_rate"] > thresholds.max_tracking_after_refund_rate),
            "tracking numbers entered after approved pre-shipment refunds above "
            f"{thresholds.max_tracking_after_refund_rate:.0%}",
        ),
        (
            (metrics["orders"] >= enough) & (metrics["dispute_rate"] > thresholds.max_dispute_rate),
            f"dispute rate above {thresholds.max_dispute_rate:.0%}",
        ),
    ]
    reasons = pd.Series([[] for _ in range(len(metrics))], index=metrics.index, dtype=object)
    for failed, text in checks:
        for i in metrics.index[failed.fillna(False).to_numpy()]:
            reasons[i].append(text)
    return pd.DataFrame(
        {
            "shop_id": metrics["shop_id"],
            "eligible": reasons.map(len) == 0,
            "reasons": reasons.map("; ".join),
        }
    )


def revoked_buyers(log: features.TransactionLog, known_at: pd.Timestamp) -> pd.Series:
    """Buyers with a refund confirmed as abuse before T: reason text, indexed by buyer_id."""
    refunds = log.refunds
    confirmed = refunds.loc[refunds["abuse_confirmed_at"] < known_at]
    confirmed = confirmed.sort_values("abuse_confirmed_at").groupby("buyer_id").last()
    return pd.Series(
        [
            f"abuse confirmed on refund {rid} at {at.isoformat()}"
            for rid, at in zip(confirmed["refund_id"], confirmed["abuse_confirmed_at"], strict=True)
        ],
        index=confirmed.index,
        dtype=object,
    )


def prebuilt_features(
    path: str | Path, known_at: pd.Timestamp, known: features.TransactionLog
) -> pd.DataFrame:
    """The features as of T from a file or folder `features build` wrote (either engine).

    They must be this feature code's, for exactly the buyers registered before T.

    Raises:
        ValueError: Naming what does not fit (no such path, another feature set, missing
            columns, no rows as of T, repeated or unknown buyers).
    """
    from features.engines import read_metadata

    path = Path(path)
    where = f"--features {path}"
    if not path.exists():
        raise ValueError(f"{where}: no such file or folder")
    version = read_metadata(path).get("feature_set_version") if path.is_dir() else None
    if version is not None and version != features.FEATURE_SET_VERSION:
        raise ValueError(
            f"{where}: built by feature set {version!r}; this code computes "
            f"{features.FEATURE_SET_VERSION!r}: build them again"
        )
    columns = ["buyer_id", "as_of", *features.FEATURE_COLUMNS]
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input
        raise ValueError(f"{where}: cannot be read as Parquet: {exc}") from exc
    missing = [col for col in columns if col not in frame.columns]
    if missing:
        raise ValueError(f"{where}: no column {', '.join(missing[:5])}")
    as_of = pd.to_datetime(frame["as_of"], utc=True)
    frame = frame.loc[as_of == known_at, columns]
    if frame.empty:
        held = sorted({t.date().isoformat() for t in as_of.drop_duplicates()})
        raise ValueError(f"{where}: no rows as of {known_at.date()} (it holds {held})")
    if frame["buyer_id"].duplicated().any():
        raise ValueError(f"{where}: a buyer appears twice as of {known_at.date()}")
    expected = set(known.buyers["buyer_id"])
    got = set(frame["buyer_id"])
    if got != expected:
        raise ValueError(
            f"{where}: not the features of this log as of {known_at.date()}: "
            f"{len(expected - got)} of its buyers missing, {len(got - expected)} unknown"
        )
    not_float = [c for c in features.FEATURE_COLUMNS if frame[c].dtype != np.float64]
    if not_float:
        raise ValueError(
            f"{where}: features are float64; {not_float[0]} is {frame[not_float[0]].dtype}"
        )
    return frame.sort_values("buyer_id", ignore_index=True)


def _plain(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 6)


def materialize(
    data_dir: str | Path,
    as_of: object = None,
    store_path: str | Path | None = None,
    policy: Policy | None = None,
    features_path: str | Path | None = None,
    database_url: str | None = None,
) -> MaterializeReport:
    """Compute the snapshot as of a date and replace the online store with it, atomically.

    Args:
        data_dir: The transaction log (a directory `features.load_log` reads).
        as_of: The as-of date D (features known at D 00:00 UTC); default: the end of the log.
        store_path: The SQLite store; default: the service setting (FASTREFUND_STORE_PATH).
        database_url: The PostgreSQL database to write instead; default, when no
            `store_path` is given: the service setting (FASTREFUND_DATABASE_URL), if set.
            Its schema is migrated first when behind (refused when ahead).
        policy: The policy (shop thresholds); default: the service's policy file.
        features_path: Buyer features `features build` wrote (e.g. on Spark), used instead
            of computing them; revocations and shop eligibility still come from the log.

    Raises:
        features.LogFileError, features.LogValidationError: The log cannot be used.
        ValueError: The as-of date is not a date or is outside the log, or the snapshot
            holds no buyer (the store is then left as it is).
        serving.database.DatabaseError: PostgreSQL cannot be reached, migrated or written
            (the snapshot serving stays).
    """
    if store_path is None or policy is None:
        from serving.config import Settings

        settings = Settings.load()
        if store_path is None and database_url is None and settings.database_url is not None:
            database_url = settings.database_url.get_secret_value()
        store_path = store_path if store_path is not None else settings.store_path
        policy = policy if policy is not None else load_policy(settings.policy_path)
    log = features.load_log(data_dir)
    known_at = default_as_of(log) if as_of is None else log.check_as_of(as_of)
    as_of_text = known_at.date().isoformat()

    known = log.known_at(known_at)
    if features_path is not None:
        feats = prebuilt_features(features_path, known_at, known)
    else:
        feats = features.build_features(log, [known_at])
    if feats.empty:  # never swap the serving store for one that knows nobody
        raise ValueError(f"no buyer was registered before {as_of_text}: the store is left as it is")
    columns = list(features.FEATURE_COLUMNS)
    order_count = known.orders.groupby("buyer_id").size()
    registered = known.buyers.set_index("buyer_id")["registered_at"]
    buyer_ids = feats["buyer_id"]
    vectors = feats[columns].to_numpy(dtype=np.float64)
    counts = order_count.reindex(buyer_ids, fill_value=0).to_numpy()
    registered_s = registered.reindex(buyer_ids).astype("int64").to_numpy() / 1e9  # epoch seconds
    revoked = revoked_buyers(known, known_at) if policy.revoke_on_confirmed_abuse else pd.Series()
    revoked_reason = revoked.reindex(buyer_ids).to_numpy()
    buyer_rows = [
        (
            buyer_id,
            float(registered_s[i]),
            int(counts[i]),
            vectors[i].tobytes(),
            int(isinstance(revoked_reason[i], str)),
            revoked_reason[i] if isinstance(revoked_reason[i], str) else None,
        )
        for i, buyer_id in enumerate(buyer_ids.tolist())
    ]

    thresholds = policy.shop_eligibility
    metrics = shop_metrics(log, known_at, thresholds.ship_deadline_hours)
    eligibility = shop_eligibility(metrics, thresholds)
    metric_rows = metrics[SHOP_METRIC_COLUMNS].to_dict("records")
    shop_rows = [
        (
            shop_id,
            int(eligible),
            reasons,
            json.dumps({k: _plain(v) for k, v in row.items()}),
        )
        for shop_id, eligible, reasons, row in zip(
            eligibility["shop_id"],
            eligibility["eligible"],
            eligibility["reasons"],
            metric_rows,
            strict=True,
        )
    ]

    meta = StoreMeta(
        as_of=as_of_text,
        feature_set_version=features.FEATURE_SET_VERSION,
        feature_columns=tuple(columns),
        materialized_at=datetime.now(UTC).isoformat(timespec="seconds"),
        policy_version=policy.version,
    )
    if database_url is not None:
        from serving.database import redact
        from serving.postgres_store import write_snapshot as write_to_postgres

        write_to_postgres(database_url, meta, buyer_rows, shop_rows)
        where = f"{redact(database_url)} (PostgreSQL)"
    else:
        write_snapshot(store_path, meta, buyer_rows, shop_rows)
        where = str(store_path)

    worst = metrics.loc[metrics["tracking_after_refund"] > 0].sort_values(
        ["tracking_after_refund", "tracking_after_refund_rate"], ascending=False
    )
    return MaterializeReport(
        store_path=Path(store_path or ""),  # "" (.) when the store is in PostgreSQL
        where=where,
        as_of=as_of_text,
        feature_set_version=features.FEATURE_SET_VERSION,
        buyers=len(buyer_rows),
        revoked_buyers=int(pd.notna(revoked_reason).sum()),
        shops=len(shop_rows),
        eligible_shops=int(eligibility["eligible"].sum()),
        approved_pre_ship_refunds=int(metrics["approved_pre_ship_refunds"].sum()),
        tracking_after_refund=int(metrics["tracking_after_refund"].sum()),
        worst_shops=[
            {
                "shop_id": row.shop_id,
                "tracking_after_refund": int(row.tracking_after_refund),
                "approved_pre_ship_refunds": int(row.approved_pre_ship_refunds),
                "rate": _plain(row.tracking_after_refund_rate),
            }
            for row in worst.head(10).itertuples()
        ],
    )
