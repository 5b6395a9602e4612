"""Buyer features as of a date: a pure function of one partition of buyers.

Every feature is computed from `log.known_at(T)`, the log cut to what was known at
T = D 00:00 UTC, so no feature can see the future: point-in-time by construction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd

from features.log import TransactionLog, as_of_time, positions

# Bump when a feature's name, meaning or value changes: models record the version they were
# trained on, serving refuses a champion whose version differs from the online store's, and
# retrain treats a new version as a new job. v3: excluded_category_share_365d became
# virtual_or_custom_share_365d (it counts virtual or custom goods, not the policy's list).
FEATURE_SET_VERSION = "buyer-features-v3"

ORDER_WINDOWS = (7, 30, 90, 365)
DAY = pd.Timedelta(days=1)
ORDERS_PER_PARTITION = 2_000_000

# Feature definitions, fixed on purpose. Features never read the serving policy file: a
# policy change (a new amount limit, another excluded category) would otherwise change every
# feature value and need a model retrained for it. So these are what the features mean, not
# the policy of the day.
# "High value": 300 CNY and more, where POLICY.md's amount limit stood when the feature was
# defined; the policy's `amount_limit_fen` may move, this does not.
HIGH_VALUE_FEN = 30_000
# Category codes that name virtual or custom-made goods by their nature (POLICY.md rule 3),
# compared trimmed and case-folded, for logs whose flags miss them. The policy file may
# exclude more categories; those are its business, not this feature's.
VIRTUAL_OR_CUSTOM_CATEGORIES = frozenset(
    {"virtual", "virtual_goods", "gift_cards", "game_top_up", "custom", "custom_made"}
)

FEATURE_COLUMNS: list[str] = [
    "account_age_days",
    "orders_total",
    "gmv_total_cny",
    *[f"orders_{w}d" for w in ORDER_WINDOWS],
    *[f"gmv_{w}d_cny" for w in ORDER_WINDOWS],
    *[f"avg_paid_{w}d_cny" for w in ORDER_WINDOWS],
    "days_since_last_order",
    "days_since_first_order",
    "distinct_shops_365d",
    "top_shop_share_90d",
    "new_shop_share_30d",
    "new_category_share_30d",
    "spend_shift_30d_vs_365d",
    "avg_days_delivery_to_completion_365d",
    "virtual_or_custom_share_365d",
    "high_value_share_365d",
    "cancelled_orders_365d",
    "cancel_rate_365d",
    "order_velocity_7d_vs_90d",
    "refunds_total",
    "refunds_7d",
    "refunds_30d",
    "refunds_90d",
    "refunds_365d",
    "pre_ship_refunds_90d",
    "pre_ship_refunds_365d",
    "pre_ship_refund_cny_365d",
    "pre_ship_refund_rate_365d",
    "post_ship_refunds_90d",
    "post_ship_refunds_365d",
    "post_ship_refund_cny_365d",
    "post_ship_refund_rate_365d",
    "refund_only_after_delivery_90d",
    "refund_only_after_delivery_365d",
    "refund_only_after_delivery_rate_365d",
    "return_and_refund_365d",
    "refund_amount_share_365d",
    "disputes_365d",
    "disputes_won_365d",
    "disputes_lost_365d",
    "rejected_refunds_365d",
    "withdrawn_refunds_365d",
    "open_refunds",
    "confirmed_abuse_total",
    "confirmed_abuse_365d",
    "days_since_last_confirmed_abuse",
]


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is zero (no evidence, not 0%)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1e-12), np.nan)


def _days(later: pd.Timestamp, times: pd.Series) -> np.ndarray:
    return ((later - times) / DAY).to_numpy(dtype="float64", na_value=np.nan)


def _days_between(earlier: pd.Series, later: pd.Series) -> np.ndarray:
    return ((later - earlier) / DAY).to_numpy(dtype="float64", na_value=np.nan)


def _group_extreme(codes: np.ndarray, values: np.ndarray, size: int, how: str) -> np.ndarray:
    out = np.full(size, np.nan)
    if len(codes):
        grouped = pd.Series(values).groupby(codes)
        extreme = grouped.min() if how == "min" else grouped.max()
        out[extreme.index.to_numpy()] = extreme.to_numpy()
    return out


def buyer_features(log: TransactionLog, as_of: object) -> pd.DataFrame:
    """Compute the features of every buyer in `log` registered before T.

    A pure function of one partition of buyers (all events of those buyers): it is what
    `build_features` runs per partition, and what a distributed engine would run per group.

    Args:
        log: The log, or one partition of it. Events after T may be present: they are cut.
        as_of: The as-of date D; T = D 00:00 UTC.

    Returns:
        One row per buyer: `buyer_id`, `as_of` (T), then FEATURE_COLUMNS as float64.
    """
    known_at = as_of_time(as_of)
    known = log.known_at(known_at)
    buyers = known.buyers["buyer_id"]
    size = len(buyers)
    features: dict[str, np.ndarray] = {}

    def count(codes: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(codes, weights=weights, minlength=size).astype("float64")

    features["account_age_days"] = _days(known_at, known.buyers["registered_at"])

    orders = known.orders
    o_code = positions(orders["buyer_id"], buyers)
    o_age = _days(known_at, orders["paid_at"])
    paid_cny = orders["paid_fen"].to_numpy(dtype="float64") / 100
    features["orders_total"] = count(o_code)
    features["gmv_total_cny"] = count(o_code, paid_cny)
    for w in ORDER_WINDOWS:
        inside = o_age < w
        features[f"orders_{w}d"] = count(o_code[inside])
        features[f"gmv_{w}d_cny"] = count(o_code[inside], paid_cny[inside])
    for w in ORDER_WINDOWS:
        features[f"avg_paid_{w}d_cny"] = _ratio(features[f"gmv_{w}d_cny"], features[f"orders_{w}d"])
    features["days_since_last_order"] = _group_extreme(o_code, o_age, size, "min")
    features["days_since_first_order"] = _group_extreme(o_code, o_age, size, "max")

    year = o_age < 365
    orders_365 = features["orders_365d"]
    shop_code, shops = pd.factorize(orders["shop_id"])
    buyer_shop = o_code * len(shops) + shop_code
    # pandas' hash tables: numpy 2's np.unique is several times slower on millions of ints
    features["distinct_shops_365d"] = count(pd.unique(buyer_shop[year]) // max(len(shops), 1))
    in_90 = o_age < 90
    per_pair = pd.Series(buyer_shop[in_90]).value_counts()
    top_shop = np.zeros(size)
    np.maximum.at(top_shop, per_pair.index.to_numpy() // max(len(shops), 1), per_pair.to_numpy())
    features["top_shop_share_90d"] = _ratio(top_shop, features["orders_90d"])
    # A shop or category first used in the last 30 days: a takeover buys where the owner never did.
    in_30 = o_age < 30
    category_code, categories = pd.factorize(orders["category"])
    buyer_category = o_code * len(categories) + category_code
    for name, pair in (("shop", buyer_shop), ("category", buyer_category)):
        used_before = pd.Series(pair[in_30]).isin(pair[~in_30]).to_numpy()
        features[f"new_{name}_share_30d"] = _ratio(
            count(o_code[in_30][~used_before]), features["orders_30d"]
        )
    features["spend_shift_30d_vs_365d"] = _ratio(
        features["avg_paid_30d_cny"], features["avg_paid_365d_cny"]
    )
    completion_days = _days_between(orders["delivered_at"], orders["completed_at"])
    completed = year & ~np.isnan(completion_days)
    features["avg_days_delivery_to_completion_365d"] = _ratio(
        count(o_code[completed], completion_days[completed]), count(o_code[completed])
    )
    # By flag or by a category that names such goods (normalized once per distinct category).
    category_names = pd.Series(categories, dtype="string").str.normalize("NFKC").str.strip()
    named = np.flatnonzero(category_names.str.casefold().isin(VIRTUAL_OR_CUSTOM_CATEGORIES))
    virtual_or_custom = (orders["is_virtual"] | orders["is_custom"]).to_numpy() | np.isin(
        category_code, named
    )
    features["virtual_or_custom_share_365d"] = _ratio(
        count(o_code[year & virtual_or_custom]), orders_365
    )
    high_value = orders["paid_fen"].to_numpy() >= HIGH_VALUE_FEN
    features["high_value_share_365d"] = _ratio(count(o_code[year & high_value]), orders_365)
    cancelled = orders["cancelled_at"].notna().to_numpy()
    features["cancelled_orders_365d"] = count(o_code[year & cancelled])
    features["cancel_rate_365d"] = _ratio(features["cancelled_orders_365d"], orders_365)
    features["order_velocity_7d_vs_90d"] = _ratio(
        features["orders_7d"] * 90 / 7, features["orders_90d"]
    )

    refunds = known.refunds
    r_code = positions(refunds["buyer_id"], buyers)
    r_age = _days(known_at, refunds["requested_at"])
    # The order's lifecycle as known at T; every refund's order exists (the contract).
    order_row = positions(refunds["order_id"], orders["order_id"])
    shipped_at = orders["shipped_at"].to_numpy("datetime64[ns]")[order_row]
    delivered_at = orders["delivered_at"].to_numpy("datetime64[ns]")[order_row]
    requested_at = refunds["requested_at"].to_numpy("datetime64[ns]")
    pre_ship = np.isnat(shipped_at) | (shipped_at > requested_at)
    after_delivery = ~np.isnat(delivered_at) & (delivered_at <= requested_at)
    refund_only = (refunds["kind"] == "refund_only").to_numpy()
    amount_cny = refunds["amount_fen"].to_numpy(dtype="float64") / 100
    outcome = refunds["outcome"]
    r90, r365 = r_age < 90, r_age < 365

    features["refunds_total"] = count(r_code)
    for w in (7, 30, 90, 365):
        features[f"refunds_{w}d"] = count(r_code[r_age < w])
    for label, mask in (("pre_ship", pre_ship), ("post_ship", ~pre_ship)):
        features[f"{label}_refunds_90d"] = count(r_code[r90 & mask])
        features[f"{label}_refunds_365d"] = count(r_code[r365 & mask])
        features[f"{label}_refund_cny_365d"] = count(r_code[r365 & mask], amount_cny[r365 & mask])
        features[f"{label}_refund_rate_365d"] = _ratio(
            features[f"{label}_refunds_365d"], orders_365
        )
    after_delivery_only = refund_only & after_delivery
    features["refund_only_after_delivery_90d"] = count(r_code[r90 & after_delivery_only])
    features["refund_only_after_delivery_365d"] = count(r_code[r365 & after_delivery_only])
    features["refund_only_after_delivery_rate_365d"] = _ratio(
        features["refund_only_after_delivery_365d"], orders_365
    )
    features["return_and_refund_365d"] = count(r_code[r365 & ~refund_only])
    features["refund_amount_share_365d"] = _ratio(
        count(r_code[r365], amount_cny[r365]), features["gmv_365d_cny"]
    )
    won = (outcome == "arbitrated_buyer_wins").to_numpy()
    lost = (outcome == "arbitrated_merchant_wins").to_numpy()
    features["disputes_365d"] = count(r_code[r365 & (won | lost)])
    features["disputes_won_365d"] = count(r_code[r365 & won])
    features["disputes_lost_365d"] = count(r_code[r365 & lost])
    features["rejected_refunds_365d"] = count(r_code[r365 & (outcome == "rejected").to_numpy()])
    features["withdrawn_refunds_365d"] = count(r_code[r365 & (outcome == "withdrawn").to_numpy()])
    features["open_refunds"] = count(r_code[refunds["resolved_at"].isna().to_numpy()])

    confirmed_age = _days(known_at, refunds["abuse_confirmed_at"])
    confirmed = ~np.isnan(confirmed_age)
    features["confirmed_abuse_total"] = count(r_code[confirmed])
    features["confirmed_abuse_365d"] = count(r_code[confirmed & (confirmed_age < 365)])
    features["days_since_last_confirmed_abuse"] = _group_extreme(
        r_code[confirmed], confirmed_age[confirmed], size, "min"
    )

    frame = pd.DataFrame({name: features[name] for name in FEATURE_COLUMNS})
    frame.insert(0, "as_of", known_at)
    frame.insert(0, "buyer_id", buyers.reset_index(drop=True).astype(str))
    return frame


def partition_of(buyer_ids: pd.Series, partitions: int) -> np.ndarray:
    """Assign each buyer id to one of `partitions` stable, hash-based partitions."""
    hashed = pd.util.hash_pandas_object(buyer_ids, index=False).to_numpy()
    return (hashed % np.uint64(partitions)).astype("int64")


def iter_partitions(log: TransactionLog, partitions: int) -> Iterator[TransactionLog]:
    """Split the log into partitions of buyers, each holding all events of its buyers."""
    if partitions <= 1:
        yield log
        return
    part = {
        name: partition_of(log.table(name)["buyer_id"], partitions)
        for name in ("buyers", "orders", "refunds")
    }
    for number in range(partitions):
        tables = {name: log.table(name).loc[part[name] == number] for name in part}
        yield TransactionLog(
            buyers=tables["buyers"].reset_index(drop=True),
            shops=log.shops,
            orders=tables["orders"].reset_index(drop=True),
            refunds=tables["refunds"].reset_index(drop=True),
            start=log.start,
            end=log.end,
        )


def build_features(
    log: TransactionLog,
    as_of_dates: object | Iterable[object],
    partitions: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Compute buyer features at one or more as-of dates, partition by partition.

    Args:
        log: The whole log.
        as_of_dates: One date or several; each gives a snapshot at D 00:00 UTC.
        partitions: Number of buyer partitions; by default one per ~2M orders, which
            bounds peak memory whatever the size of the log.
        progress: Show a progress bar over (partition, date) pairs.

    Returns:
        `buyer_id`, `as_of`, then FEATURE_COLUMNS; one row per buyer and date, sorted.
    """
    if isinstance(as_of_dates, str | pd.Timestamp) or not isinstance(as_of_dates, Iterable):
        as_of_dates = [as_of_dates]
    dates = sorted({as_of_time(d) for d in as_of_dates})
    if not dates:
        raise ValueError("no as-of date given")
    if partitions is None:
        partitions = max(1, -(-len(log.orders) // ORDERS_PER_PARTITION))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=partitions * len(dates), desc="features", unit="snapshot")
    pieces = []
    for part in iter_partitions(log, partitions):
        for as_of in dates:
            pieces.append(buyer_features(part, as_of))
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    frame = pd.concat(pieces, ignore_index=True)
    return frame.sort_values(["as_of", "buyer_id"], ignore_index=True)
