"""The transaction-log simulator: a synthetic platform whose buyers have hidden types.

The world is one a risk analyst would recognise. Buyers are ordinary, honest heavy
refunders (many pre-shipment cancels, never abuse), abusers (a good record first, then
refund-only claims after the goods arrived and "not received" claims), accounts taken over
at a random time (a good history, then a burst of abuse) and new-account rings (a burst of
orders and refunds soon after sign-up, on a few shops). Shops are good, slow shippers, or
ship before entering the tracking number (the POLICY.md risk). Every order goes through
payment, tracking, delivery, completion or cancellation; after-sales requests come before
and after shipment, with outcomes and resolution times; abuse is confirmed late, and not
always.

Abusive requests form, per buyer, a Poisson process with a piecewise-constant rate (one
window of known start, end and rate) and each is confirmed independently with a known
probability after a delay of known distribution; nothing else is ever confirmed. So the
chance that a buyer is *bad* as of T (DESIGN.md) has an exact closed form, which
`oracle_scores` computes from the hidden truth alone: the best score any model can reach.

Timestamps are generated as float days since `start` and written as whole seconds. The
log is an export of [start, end): buyers may have registered before `start` (their
activity before it is not in the export), and every later timestamp at or after `end` is
empty, as the platform would show it at `end`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from features.io import write_log, write_parquet
from features.log import OUTCOMES, REFUND_KINDS, TransactionLog, as_of_time

# Hidden buyer types and their shares of all buyers.
BUYER_TYPES = ("ordinary", "heavy_refunder", "abuser", "takeover", "ring")
BUYER_TYPE_SHARES = (0.835, 0.10, 0.03, 0.015, 0.02)
ORDINARY, HEAVY, ABUSER, TAKEOVER, RING = range(len(BUYER_TYPES))

SHOP_TYPES = ("good", "slow_shipper", "ships_before_tracking")
SHOP_TYPE_SHARES = (0.75, 0.15, 0.10)
GOOD_SHOP, SLOW_SHOP, SHIPS_BEFORE_TRACKING = range(len(SHOP_TYPES))
# Mean days from payment to dispatch, per shop type.
SHIP_MEAN_DAYS = np.array([1.2, 4.5, 1.0])
# Ships-before-tracking shops enter the tracking number this long after dispatch (mean days).
TRACKING_LAG_MEAN_DAYS = 1.6
TRANSIT_MEAN_DAYS = 2.6
LOST_PARCEL_SHARE = 0.012


class Category(NamedTuple):
    """A product category: how common, how priced, how often custom-made, how tempting."""

    name: str
    shop_share: float
    median_cny: float
    price_sigma: float
    custom_share: float
    abuse_appeal: float


CATEGORIES = (
    Category("apparel", 0.23, 139.0, 0.85, 0.02, 1.5),
    Category("electronics", 0.10, 459.0, 1.00, 0.0, 2.0),
    Category("home", 0.15, 169.0, 0.95, 0.03, 1.0),
    Category("beauty", 0.12, 159.0, 0.80, 0.0, 1.5),
    Category("food", 0.13, 69.0, 0.60, 0.0, 0.7),
    Category("books", 0.06, 49.0, 0.50, 0.0, 0.3),
    Category("toys", 0.08, 129.0, 0.85, 0.0, 0.8),
    Category("virtual", 0.08, 50.0, 1.00, 0.0, 0.0),
    Category("custom", 0.05, 199.0, 0.80, 1.0, 0.2),
)
CATEGORY_NAMES = tuple(c.name for c in CATEGORIES)
VIRTUAL = CATEGORY_NAMES.index("virtual")
CUSTOM = CATEGORY_NAMES.index("custom")
# Categories a general shop also sells from, besides its own.
CROSS_SELL_SHARE = 0.15

# After-sales request classes (rows of the outcome table) and the kind each is filed as.
PRE_SHIPMENT, RETURN, DEFECT, LOST, ABUSE_DELIVERED, ABUSE_NOT_RECEIVED, ABUSE_RETURN = range(7)
PRE_SHIPMENT_CUSTOM = 7
REQUEST_CLASSES = (
    "pre_shipment",
    "return",
    "defect",
    "lost_parcel",
    "abuse_after_delivery",
    "abuse_not_received",
    "abuse_return",
    "pre_shipment_custom",
)
_REFUND_ONLY, _RETURN_AND_REFUND = (
    REFUND_KINDS.index("refund_only"),
    REFUND_KINDS.index("return_and_refund"),
)
CLASS_KIND = np.array(
    [
        _REFUND_ONLY,
        _RETURN_AND_REFUND,
        _REFUND_ONLY,
        _REFUND_ONLY,
        _REFUND_ONLY,
        _REFUND_ONLY,
        _RETURN_AND_REFUND,
        _REFUND_ONLY,
    ]
)
ABUSE_CLASSES = (ABUSE_DELIVERED, ABUSE_NOT_RECEIVED, ABUSE_RETURN)
# P(outcome | class), columns in the order of features.log.OUTCOMES: approved, auto_approved,
# rejected, withdrawn, arbitrated_buyer_wins, arbitrated_merchant_wins.
OUTCOME_PROBS = np.array(
    [
        [0.78, 0.12, 0.04, 0.06, 0.00, 0.00],  # pre-shipment cancel
        [0.80, 0.03, 0.05, 0.07, 0.03, 0.02],  # honest return after delivery
        [0.66, 0.04, 0.12, 0.08, 0.06, 0.04],  # honest refund-only for a defect (often partial)
        [0.70, 0.08, 0.05, 0.02, 0.13, 0.02],  # parcel really lost
        [0.40, 0.05, 0.17, 0.06, 0.14, 0.18],  # abuse: refund-only after receiving the goods
        [0.38, 0.07, 0.15, 0.05, 0.17, 0.18],  # abuse: "not received" while in transit
        [0.55, 0.05, 0.12, 0.05, 0.10, 0.13],  # abuse: return of a swapped or empty parcel
        [0.45, 0.05, 0.40, 0.10, 0.00, 0.00],  # pre-shipment cancel of custom goods
    ]
)
APPROVED, AUTO_APPROVED, REJECTED, WITHDRAWN, ARB_BUYER, ARB_MERCHANT = range(len(OUTCOMES))
BUYER_GETS_MONEY = np.array([True, True, False, False, True, False])
# Mean days a merchant takes to approve, per class (a return waits for the parcel back).
APPROVE_MEAN_DAYS = np.array([0.2, 5.0, 1.0, 1.5, 1.5, 1.5, 5.0, 0.3])
AUTO_APPROVE_TIMEOUT_DAYS = np.array([2.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 2.0])
ARBITRATION_MIN_DAYS = 5.0

# Risk review confirms an abusive request with a buyer-level probability, tilted towards
# requests the merchant fought and won (relative weights by outcome, normalised per class).
CONFIRM_OUTCOME_WEIGHT = np.array([0.85, 0.85, 1.2, 0.9, 0.95, 1.3])
CONFIRM_MEAN = {ABUSER: 0.55, TAKEOVER: 0.62, RING: 0.66}
# Confirmation delay: a minimum, then a mix of quick (days) and slow (weeks) reviews.
CONFIRM_DELAY_MIN_DAYS = 1.0
CONFIRM_DELAY_MIX = ((0.55, 4.0), (0.45, 21.0))  # (weight, mean days) of exponential parts

PRE_START_REGISTERED_SHARE = 0.25
PRE_START_MAX_DAYS = 1000.0
SHOPS_OPEN_BEFORE_START = 0.85

_DAY_SECONDS = 86_400
_NAT = np.iinfo(np.int64).min


@dataclass(frozen=True)
class SimulatedWorld:
    """A simulated log with the hidden truth that generated it.

    Attributes:
        log: The four tables, with `start` and `end` set.
        truth: One row per buyer: `buyer_id`, `buyer_type`, `registered_at`, `takeover_at`
            (NaT if none), `ring_id` (NA if none), and the abuse hazard the oracle needs:
            `abuse_start`, `abuse_end`, `abuse_rate_per_day` (abusive requests per day
            inside [abuse_start, abuse_end), 0 for honest buyers), `confirm_prob`.
        meta: {"start": iso, "end": iso, "seed": int, "parameters": {...}}.
    """

    log: TransactionLog
    truth: pd.DataFrame
    meta: dict


def _beta(rng: np.random.Generator, mean: float, concentration: float, size: int) -> np.ndarray:
    return rng.beta(mean * concentration, (1 - mean) * concentration, size)


def _gamma(
    rng: np.random.Generator, shape: float, mean: np.ndarray | float, size: int
) -> np.ndarray:
    return rng.gamma(shape, 1.0, size) * (np.asarray(mean) / shape)


def _confirm_weights() -> np.ndarray:
    """P(confirmed | class, outcome) / P(confirmed | class) for the abuse classes."""
    weights = np.zeros_like(OUTCOME_PROBS)
    for cls in ABUSE_CLASSES:
        weights[cls] = CONFIRM_OUTCOME_WEIGHT / (OUTCOME_PROBS[cls] @ CONFIRM_OUTCOME_WEIGHT)
    return weights


def _make_shops(rng: np.random.Generator, n_shops: int, days: int) -> dict[str, np.ndarray]:
    shop_type = rng.choice(len(SHOP_TYPES), size=n_shops, p=SHOP_TYPE_SHARES)
    shares = np.array([c.shop_share for c in CATEGORIES])
    category = rng.choice(len(CATEGORIES), size=n_shops, p=shares / shares.sum())
    old = rng.random(n_shops) < SHOPS_OPEN_BEFORE_START
    opened = np.where(old, -rng.uniform(1, 1500, n_shops), rng.uniform(0, 0.9 * days, n_shops))
    old[np.argmin(opened)] = True  # at least one shop is open from the start
    popularity = rng.lognormal(0.0, 1.1, n_shops)  # a few big shops, a long tail
    return {
        "type": shop_type,
        "category": category,
        "opened": opened,
        "old": opened < 0,
        "popularity": popularity / popularity.sum(),
    }


def _pick_shops(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    return rng.choice(len(weights), size=size, p=weights / weights.sum())


def _open_shops_only(
    rng: np.random.Generator,
    shops: dict[str, np.ndarray],
    shop: np.ndarray,
    paid: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:
    """Replace shops not yet open at payment by shops open since before `start`."""
    late = shops["opened"][shop] > paid
    if late.any():
        old_weights = np.where(shops["old"], weights, 0.0)
        shop = shop.copy()
        shop[late] = _pick_shops(rng, old_weights, int(late.sum()))
    return shop


def _make_buyers(
    rng: np.random.Generator, n: int, days: int, shops: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    kind = rng.choice(len(BUYER_TYPES), size=n, p=BUYER_TYPE_SHARES)
    pre_start = rng.random(n) < PRE_START_REGISTERED_SHARE
    registered = np.where(
        pre_start, -rng.uniform(0, PRE_START_MAX_DAYS, n), rng.uniform(0, days, n)
    )
    # A takeover needs an account with some history before the end.
    active_from = np.maximum(registered, 0.0)
    kind[(kind == TAKEOVER) & (active_from > days - 45)] = ORDINARY

    # Rings: groups of 4-30 accounts registered within days of each other, sharing shops.
    ring_id = np.full(n, -1)
    members = np.flatnonzero(kind == RING)
    ring_shops = np.zeros((0, 2), dtype=np.int64)
    if len(members):
        sizes = rng.integers(4, 31, size=len(members) // 4 + 1)
        ids = np.repeat(np.arange(len(sizes)), sizes)[: len(members)]
        n_rings = int(ids.max()) + 1
        ring_id[members] = ids
        base = rng.uniform(0, max(days - 25, 1), n_rings)
        registered[members] = base[ids] + rng.exponential(1.5, len(members))
        eligible = shops["old"] & ~np.isin(shops["category"], [VIRTUAL, CUSTOM])
        weights = np.where(eligible, shops["popularity"], 0.0)
        ring_shops = _pick_shops(rng, weights, 2 * n_rings).reshape(n_rings, 2)
    active_from = np.maximum(registered, 0.0)

    def by_type(values: dict[int, float]) -> np.ndarray:
        return np.array([values[t] for t in range(len(BUYER_TYPES))])[kind]

    order_rate = _gamma(
        rng,
        1.3,
        by_type({ORDINARY: 0.05, HEAVY: 0.08, ABUSER: 0.05, TAKEOVER: 0.05, RING: 0.15}),
        n,
    )
    cancel_share = rng.beta(
        by_type({ORDINARY: 1.2, HEAVY: 4.0, ABUSER: 1.5, TAKEOVER: 1.2, RING: 3.0}),
        by_type({ORDINARY: 35, HEAVY: 8, ABUSER: 25, TAKEOVER: 35, RING: 7}),
    )
    return_share = rng.beta(
        by_type({ORDINARY: 1.2, HEAVY: 3.0, ABUSER: 1.5, TAKEOVER: 1.2, RING: 1.0}),
        by_type({ORDINARY: 28, HEAVY: 14, ABUSER: 22, TAKEOVER: 28, RING: 15}),
    )
    defect_share = rng.beta(
        by_type({ORDINARY: 1.0, HEAVY: 1.2, ABUSER: 1.5, TAKEOVER: 1.0, RING: 1.0}),
        by_type({ORDINARY: 80, HEAVY: 40, ABUSER: 40, TAKEOVER: 80, RING: 30}),
    )
    impatience = by_type({ORDINARY: 0.15, HEAVY: 0.3, ABUSER: 0.15, TAKEOVER: 0.15, RING: 0.15})
    price_shift = rng.normal(0.0, 0.35, n) + by_type(
        {ORDINARY: 0.0, HEAVY: 0.0, ABUSER: 0.1, TAKEOVER: 0.0, RING: -0.1}
    )

    # The abuse window [abuse_start, abuse_end) and its rate; honest buyers have none.
    abuse_start = np.full(n, np.nan)
    abuse_end = np.full(n, np.nan)
    abuse_rate = np.zeros(n)
    takeover_at = np.full(n, np.nan)
    is_ab, is_to, is_ring = kind == ABUSER, kind == TAKEOVER, kind == RING
    # Abusers build a record first (mean 90 days), then abuse for a while at their own pace.
    abuse_start[is_ab] = active_from[is_ab] + _gamma(rng, 2.0, 90.0, int(is_ab.sum()))
    abuse_end[is_ab] = abuse_start[is_ab] + rng.exponential(300.0, int(is_ab.sum()))
    abuse_rate[is_ab] = np.exp(rng.normal(np.log(1 / 35), 0.8, int(is_ab.sum())))
    # Takeovers: at a random time after 30 days of history, a burst until the owner recovers.
    lo = active_from[is_to] + 30.0
    takeover_at[is_to] = lo + rng.random(int(is_to.sum())) * np.maximum(days - lo, 0.0)
    abuse_start[is_to] = takeover_at[is_to]
    abuse_end[is_to] = takeover_at[is_to] + rng.uniform(2, 14, int(is_to.sum()))
    abuse_rate[is_to] = np.exp(rng.normal(np.log(0.5), 0.5, int(is_to.sum())))
    # Rings age their accounts a little, then burst.
    abuse_start[is_ring] = registered[is_ring] + rng.uniform(1, 21, int(is_ring.sum()))
    abuse_end[is_ring] = abuse_start[is_ring] + rng.uniform(5, 25, int(is_ring.sum()))
    abuse_rate[is_ring] = np.exp(rng.normal(np.log(0.2), 0.5, int(is_ring.sum())))

    # Confirmation probability, capped so that outcome tilting keeps it a probability.
    cap = 1.0 / _confirm_weights().max()
    confirm_prob = np.zeros(n)
    for t, mean in CONFIRM_MEAN.items():
        mask = kind == t
        confirm_prob[mask] = cap * _beta(rng, mean / cap, 8.0, int(mask.sum()))

    # Normal shopping: from activation until churn (rings stop after their burst).
    active_until = np.minimum(active_from + rng.exponential(900.0, n), days)
    active_until[is_ring] = np.minimum(abuse_end[is_ring] + 2.0, days)
    return {
        "type": kind,
        "registered": registered,
        "active_from": active_from,
        "active_until": active_until,
        "order_rate": order_rate,
        "cancel_share": cancel_share,
        "return_share": return_share,
        "defect_share": defect_share,
        "impatience": impatience,
        "price_shift": price_shift,
        "ring_id": ring_id,
        "ring_shops": ring_shops,
        "takeover_at": takeover_at,
        "abuse_start": abuse_start,
        "abuse_end": abuse_end,
        "abuse_rate": abuse_rate,
        "confirm_prob": confirm_prob,
    }


def _categories_and_prices(
    rng: np.random.Generator,
    shops: dict[str, np.ndarray],
    shop: np.ndarray,
    price_shift: np.ndarray,
    cross_sell: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    m = len(shop)
    category = shops["category"][shop]
    if cross_sell:
        general = ~np.isin(category, [VIRTUAL, CUSTOM])
        other = general & (rng.random(m) < CROSS_SELL_SHARE)
        physical = np.array([i for i in range(len(CATEGORIES)) if i not in (VIRTUAL, CUSTOM)])
        shares = np.array([CATEGORIES[i].shop_share for i in physical])
        category = category.copy()
        category[other] = rng.choice(physical, size=int(other.sum()), p=shares / shares.sum())
    is_virtual = category == VIRTUAL
    custom_share = np.array([c.custom_share for c in CATEGORIES])
    is_custom = rng.random(m) < custom_share[category]
    median = np.log(np.array([c.median_cny for c in CATEGORIES]))
    sigma = np.array([c.price_sigma for c in CATEGORIES])
    log_price = median[category] + sigma[category] * rng.standard_normal(m) + price_shift
    paid_fen = np.maximum(np.rint(np.exp(log_price) * 100), 1).astype(np.int64)
    return category, is_virtual, is_custom, paid_fen


def _settle(
    rng: np.random.Generator, cls: np.ndarray, requested: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Draw each request's outcome from its class and when it is resolved."""
    m = len(cls)
    cumulative = OUTCOME_PROBS.cumsum(axis=1)[cls]
    outcome = (rng.random(m)[:, None] > cumulative).sum(axis=1)
    outcome = np.minimum(outcome, len(OUTCOMES) - 1)
    delay = np.empty(m)
    approve = outcome == APPROVED
    delay[approve] = _gamma(rng, 1.5, APPROVE_MEAN_DAYS[cls[approve]], int(approve.sum()))
    auto = outcome == AUTO_APPROVED
    delay[auto] = AUTO_APPROVE_TIMEOUT_DAYS[cls[auto]] + rng.uniform(0, 0.05, int(auto.sum()))
    pre = np.isin(cls, [PRE_SHIPMENT, PRE_SHIPMENT_CUSTOM])
    quick = np.isin(outcome, [REJECTED, WITHDRAWN])
    delay[quick] = rng.exponential(np.where(pre[quick], 0.3, 1.8))
    arbitrated = np.isin(outcome, [ARB_BUYER, ARB_MERCHANT])
    delay[arbitrated] = ARBITRATION_MIN_DAYS + _gamma(rng, 2.0, 8.0, int(arbitrated.sum()))
    return outcome, requested + delay


def _close_after_request(
    requested: np.ndarray,
    resolved: np.ndarray,
    outcome: np.ndarray,
    full: np.ndarray,
    completed: np.ndarray,
    cancelled: np.ndarray,
) -> None:
    """An after-delivery request pauses completion; a full refund closes the order."""
    open_order = ~(requested >= completed)  # a lost parcel never completes: still open
    refunded = open_order & BUYER_GETS_MONEY[outcome] & full
    cancelled[refunded] = resolved[refunded]
    kept = open_order & ~refunded
    completed[kept] = np.maximum(completed[kept], resolved[kept])
    completed[refunded] = np.nan


def _honest_orders(
    rng: np.random.Generator, buyers: dict[str, np.ndarray], shops: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Normal shopping of every buyer, with its honest cancels, returns and claims."""
    span = np.maximum(buyers["active_until"] - buyers["active_from"], 0.0)
    counts = rng.poisson(buyers["order_rate"] * span)
    buyer = np.repeat(np.arange(len(span)), counts)
    m = len(buyer)
    paid = buyers["active_from"][buyer] + rng.random(m) * span[buyer]

    shop = _pick_shops(rng, shops["popularity"], m)
    ring = buyers["ring_id"][buyer]
    to_ring_shop = (ring >= 0) & (rng.random(m) < 0.8)
    if to_ring_shop.any():
        shop[to_ring_shop] = buyers["ring_shops"][
            ring[to_ring_shop], rng.integers(0, 2, int(to_ring_shop.sum()))
        ]
    shop = _open_shops_only(rng, shops, shop, paid, shops["popularity"])
    category, is_virtual, is_custom, paid_fen = _categories_and_prices(
        rng, shops, shop, buyers["price_shift"][buyer], cross_sell=True
    )

    # Fulfilment: dispatch, tracking entry (late at some shops), delivery, completion.
    shop_type = shops["type"][shop]
    dispatch_delay = _gamma(rng, 2.0, SHIP_MEAN_DAYS[shop_type], m)
    dispatch_delay[is_virtual] = rng.uniform(1 / 1440, 30 / 1440, int(is_virtual.sum()))
    dispatched = paid + dispatch_delay
    late_tracking = (shop_type == SHIPS_BEFORE_TRACKING) & ~is_virtual
    tracked = dispatched + np.where(late_tracking, _gamma(rng, 1.5, TRACKING_LAG_MEAN_DAYS, m), 0.0)
    transit = np.where(is_virtual, 0.0, _gamma(rng, 3.0, TRANSIT_MEAN_DAYS, m))
    lost = ~is_virtual & (rng.random(m) < LOST_PARCEL_SHARE)
    delivered = np.where(lost, np.nan, np.maximum(dispatched + transit, tracked))
    confirm_after = np.minimum(rng.exponential(np.where(is_virtual, 0.5, 3.0)), 10.0)
    completed = delivered + confirm_after
    shipped = tracked.copy()
    cancelled = np.full(m, np.nan)

    # Requests: a change of mind or impatience before tracking, a lost parcel, a return or
    # a defect claim after delivery. At most one request per order.
    change_of_mind = np.where(
        rng.random(m) < buyers["cancel_share"][buyer], paid + rng.exponential(0.5, m), np.inf
    )
    impatient = np.where(
        rng.random(m) < buyers["impatience"][buyer], paid + rng.exponential(8.0, m), np.inf
    )
    cancel_at = np.minimum(change_of_mind, impatient)
    pre = cancel_at < tracked
    claim_lost = ~pre & lost & (rng.random(m) < 0.9)
    after = ~pre & ~lost
    u = rng.random(m)
    ret = after & (u < buyers["return_share"][buyer])
    defect = after & ~ret & (u < buyers["return_share"][buyer] + buyers["defect_share"][buyer])
    has_request = pre | claim_lost | ret | defect

    cls = np.select(
        [pre & is_custom, pre, claim_lost, ret],
        [PRE_SHIPMENT_CUSTOM, PRE_SHIPMENT, LOST, RETURN],
        default=DEFECT,
    )[has_request]
    idx = np.flatnonzero(has_request)
    k = len(idx)
    requested = np.select(
        [pre[idx], claim_lost[idx]],
        [cancel_at[idx], tracked[idx] + 6.0 + rng.exponential(4.0, k)],
        default=delivered[idx] + rng.exponential(np.where(cls == RETURN, 2.0, 3.0)),
    )
    amount = paid_fen[idx].copy()
    partial = (cls == DEFECT) & (rng.random(k) < 0.6)
    amount[partial] = np.maximum(
        np.rint(amount[partial] * rng.uniform(0.1, 0.7, int(partial.sum()))), 1
    ).astype(np.int64)
    outcome, resolved = _settle(rng, cls, requested)

    # An approved pre-shipment refund closes the order. Most shops then never ship; a shop
    # that had already dispatched without a tracking number still enters one later.
    is_pre = np.isin(cls, [PRE_SHIPMENT, PRE_SHIPMENT_CUSTOM])
    refunded_pre = is_pre & BUYER_GETS_MONEY[outcome]
    closed = idx[refunded_pre]
    cancelled[closed] = resolved[refunded_pre]
    completed[closed] = np.nan
    goods_gone = late_tracking[closed] & (dispatched[closed] < requested[refunded_pre])
    stopped = closed[~goods_gone]
    shipped[stopped] = np.nan
    delivered[stopped] = np.nan

    after_idx = idx[~is_pre]
    sub_completed, sub_cancelled = completed[after_idx], cancelled[after_idx]
    _close_after_request(
        requested[~is_pre],
        resolved[~is_pre],
        outcome[~is_pre],
        amount[~is_pre] == paid_fen[after_idx],
        sub_completed,
        sub_cancelled,
    )
    completed[after_idx], cancelled[after_idx] = sub_completed, sub_cancelled

    orders = {
        "buyer": buyer,
        "shop": shop,
        "category": category,
        "is_virtual": is_virtual,
        "is_custom": is_custom,
        "paid_fen": paid_fen,
        "paid": paid,
        "shipped": shipped,
        "delivered": delivered,
        "completed": completed,
        "cancelled": cancelled,
    }
    refunds = {
        "order": idx,
        "cls": cls,
        "requested": requested,
        "amount": amount,
        "resolved": resolved,
        "outcome": outcome,
        "confirmed": np.full(k, np.nan),
    }
    return orders, refunds


def _abuse_orders(
    rng: np.random.Generator,
    buyers: dict[str, np.ndarray],
    shops: dict[str, np.ndarray],
    days: int,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Abusive requests as a Poisson process per buyer, each on an order placed for it."""
    window_end = np.minimum(np.nan_to_num(buyers["abuse_end"], nan=0.0), days)
    window_start = np.nan_to_num(buyers["abuse_start"], nan=0.0)
    span = np.maximum(window_end - window_start, 0.0)
    counts = rng.poisson(buyers["abuse_rate"] * span)
    buyer = np.repeat(np.arange(len(span)), counts)
    m = len(buyer)
    requested = window_start[buyer] + rng.random(m) * span[buyer]

    weights = (
        shops["popularity"] * np.array([c.abuse_appeal for c in CATEGORIES])[shops["category"]]
    )
    shop = _pick_shops(rng, weights, m)
    ring = buyers["ring_id"][buyer]
    in_ring = ring >= 0
    if in_ring.any():
        shop[in_ring] = buyers["ring_shops"][ring[in_ring], rng.integers(0, 2, int(in_ring.sum()))]

    cls = rng.choice(np.array(ABUSE_CLASSES), size=m, p=[0.6, 0.25, 0.15])
    ship = _gamma(rng, 2.0, SHIP_MEAN_DAYS[shops["type"][shop]], m)
    transit = _gamma(rng, 3.0, TRANSIT_MEAN_DAYS, m)
    not_received = cls == ABUSE_NOT_RECEIVED
    in_transit_share = rng.uniform(0.3, 0.9, m)
    wait = rng.exponential(1.5, m)
    lag = np.where(not_received, ship + transit * in_transit_share, ship + transit + wait)
    # The order is placed for the request, after the account exists (squeezed if needed).
    room = requested - buyers["active_from"][buyer]
    scale = np.minimum(1.0, 0.98 * room / lag)
    paid = requested - lag * scale
    shop = _open_shops_only(rng, shops, shop, paid, weights)
    shipped = paid + ship * scale
    delivered = shipped + transit * scale
    completed = delivered + np.minimum(rng.exponential(3.0, m), 10.0)
    cancelled = np.full(m, np.nan)
    category, is_virtual, is_custom, paid_fen = _categories_and_prices(
        rng, shops, shop, buyers["price_shift"][buyer] + 0.15, cross_sell=False
    )

    amount = paid_fen.copy()
    partial = (cls == ABUSE_DELIVERED) & (rng.random(m) < 0.15)
    amount[partial] = np.maximum(
        np.rint(amount[partial] * rng.uniform(0.3, 0.8, int(partial.sum()))), 1
    ).astype(np.int64)
    outcome, resolved = _settle(rng, cls, requested)
    _close_after_request(requested, resolved, outcome, amount == paid_fen, completed, cancelled)

    p_confirm = buyers["confirm_prob"][buyer] * _confirm_weights()[cls, outcome]
    confirm_delay = CONFIRM_DELAY_MIN_DAYS + _confirm_delays(rng, m)
    confirmed = np.where(rng.random(m) < p_confirm, requested + confirm_delay, np.nan)

    orders = {
        "buyer": buyer,
        "shop": shop,
        "category": category,
        "is_virtual": is_virtual,
        "is_custom": is_custom,
        "paid_fen": paid_fen,
        "paid": paid,
        "shipped": shipped,
        "delivered": delivered,
        "completed": completed,
        "cancelled": cancelled,
    }
    refunds = {
        "order": np.arange(m),
        "cls": cls,
        "requested": requested,
        "amount": amount,
        "resolved": resolved,
        "outcome": outcome,
        "confirmed": confirmed,
    }
    return orders, refunds


def _confirm_delays(rng: np.random.Generator, size: int) -> np.ndarray:
    weights = np.array([w for w, _ in CONFIRM_DELAY_MIX])
    means = np.array([mean for _, mean in CONFIRM_DELAY_MIX])
    part = rng.choice(len(weights), size=size, p=weights)
    return rng.exponential(means[part])


def _timestamps(days_since_start: np.ndarray, start: pd.Timestamp) -> pd.Series:
    """Float days since `start` (NaN: empty) to whole-second UTC timestamps."""
    missing = ~np.isfinite(days_since_start)
    seconds = np.floor(np.where(missing, 0.0, days_since_start) * _DAY_SECONDS).astype(np.int64)
    nanos = np.where(missing, _NAT, start.value + seconds * 1_000_000_000)
    return pd.Series(pd.DatetimeIndex(nanos.view("M8[ns]")).tz_localize("UTC"))


def _ids(prefix: str, count: int, width: int) -> pd.Series:
    return prefix + pd.Series(np.arange(1, count + 1)).astype("str").str.zfill(width)


def _censor(values: np.ndarray, days: int) -> np.ndarray:
    """Empty every timestamp at or after the end of the export."""
    return np.where(values < days, values, np.nan)


def _assemble(
    buyers: dict[str, np.ndarray],
    shops: dict[str, np.ndarray],
    parts: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]],
    start: pd.Timestamp,
    days: int,
) -> tuple[TransactionLog, pd.DataFrame]:
    offsets = np.cumsum([0] + [len(o["paid"]) for o, _ in parts])
    orders = {key: np.concatenate([o[key] for o, _ in parts]) for key in parts[0][0]}
    refunds = {key: np.concatenate([r[key] for _, r in parts]) for key in parts[0][1]}
    refunds["order"] = np.concatenate(
        [r["order"] + off for (_, r), off in zip(parts, offsets[:-1], strict=True)]
    )

    # Ids follow time: buyers by registration, orders by payment, refunds by request.
    buyer_order = np.argsort(buyers["registered"], kind="stable")
    buyer_rank = np.empty_like(buyer_order)
    buyer_rank[buyer_order] = np.arange(len(buyer_order))
    buyer_ids = _ids("B", len(buyer_order), 7)

    order_sort = np.argsort(orders["paid"], kind="stable")
    orders = {key: value[order_sort] for key, value in orders.items()}
    order_rank = np.empty_like(order_sort)
    order_rank[order_sort] = np.arange(len(order_sort))
    refunds["order"] = order_rank[refunds["order"]]
    keep = refunds["requested"] < days
    refund_sort = np.argsort(np.where(keep, refunds["requested"], np.inf), kind="stable")
    refund_sort = refund_sort[: int(keep.sum())]
    refunds = {key: value[refund_sort] for key, value in refunds.items()}

    order_ids = _ids("O", len(order_sort), 9)
    shop_ids = _ids("S", len(shops["type"]), 5)
    owner = buyer_rank[orders["buyer"]]
    buyers_frame = pd.DataFrame(
        {
            "buyer_id": buyer_ids,
            "registered_at": _timestamps(buyers["registered"][buyer_order], start),
        }
    )
    shops_frame = pd.DataFrame(
        {
            "shop_id": shop_ids,
            "opened_at": _timestamps(shops["opened"], start),
        }
    )
    orders_frame = pd.DataFrame(
        {
            "order_id": order_ids,
            "buyer_id": buyer_ids.to_numpy()[owner],
            "shop_id": shop_ids.to_numpy()[orders["shop"]],
            "category": pd.Series(np.array(CATEGORY_NAMES)[orders["category"]]).astype("str"),
            "is_virtual": orders["is_virtual"].astype(bool),
            "is_custom": orders["is_custom"].astype(bool),
            "paid_fen": orders["paid_fen"].astype(np.int64),
            "paid_at": _timestamps(orders["paid"], start),
            **{
                f"{col}_at": _timestamps(_censor(orders[col], days), start)
                for col in ("shipped", "delivered", "completed", "cancelled")
            },
        }
    )
    resolved = _censor(refunds["resolved"], days)
    outcome = np.where(np.isfinite(resolved), refunds["outcome"], -1)
    refunds_frame = pd.DataFrame(
        {
            "refund_id": _ids("R", len(refund_sort), 9),
            "order_id": order_ids.to_numpy()[refunds["order"]],
            "buyer_id": orders_frame["buyer_id"].to_numpy()[refunds["order"]],
            "requested_at": _timestamps(refunds["requested"], start),
            "kind": pd.Series(np.array(REFUND_KINDS)[CLASS_KIND[refunds["cls"]]]).astype("str"),
            "amount_fen": refunds["amount"].astype(np.int64),
            "resolved_at": _timestamps(resolved, start),
            "outcome": pd.Series(
                pd.Categorical.from_codes(outcome.astype(np.int64), pd.Index(OUTCOMES))
            ).astype("str"),
            "abuse_confirmed_at": _timestamps(_censor(refunds["confirmed"], days), start),
        }
    )
    for frame in (buyers_frame, shops_frame, orders_frame, refunds_frame):
        for col in frame.columns:
            if col.endswith("_id"):
                frame[col] = frame[col].astype("str")

    ring = buyers["ring_id"][buyer_order]
    truth = pd.DataFrame(
        {
            "buyer_id": buyer_ids,
            "buyer_type": pd.Series(np.array(BUYER_TYPES)[buyers["type"][buyer_order]]).astype(
                "str"
            ),
            "registered_at": buyers_frame["registered_at"],
            "takeover_at": _timestamps(buyers["takeover_at"][buyer_order], start),
            "ring_id": pd.Series(ring).astype("Int64").mask(ring < 0),
            "abuse_start": _timestamps(buyers["abuse_start"][buyer_order], start),
            "abuse_end": _timestamps(buyers["abuse_end"][buyer_order], start),
            "abuse_rate_per_day": buyers["abuse_rate"][buyer_order],
            "confirm_prob": buyers["confirm_prob"][buyer_order],
        }
    )
    log = TransactionLog(
        buyers=buyers_frame,
        shops=shops_frame,
        orders=orders_frame,
        refunds=refunds_frame,
        start=start,
        end=start + pd.Timedelta(days=days),
    )
    return log, truth


def _parameters(buyers: int, shops: int, days: int) -> dict:
    return {
        "buyers": buyers,
        "shops": shops,
        "days": days,
        "buyer_type_shares": dict(zip(BUYER_TYPES, BUYER_TYPE_SHARES, strict=True)),
        "shop_type_shares": dict(zip(SHOP_TYPES, SHOP_TYPE_SHARES, strict=True)),
        "categories": [c._asdict() for c in CATEGORIES],
        "confirm_mean": {BUYER_TYPES[t]: p for t, p in CONFIRM_MEAN.items()},
        "confirm_delay_min_days": CONFIRM_DELAY_MIN_DAYS,
        "confirm_delay_mix": [list(part) for part in CONFIRM_DELAY_MIX],
        "pre_start_registered_share": PRE_START_REGISTERED_SHARE,
    }


def simulate(
    buyers: int = 20_000,
    shops: int = 500,
    days: int = 540,
    seed: int = 0,
    start: str = "2025-01-01",
    progress: bool = False,
) -> SimulatedWorld:
    """Simulate a platform's transaction log together with the truth behind it.

    Args:
        buyers: Number of buyer accounts (including those registered before `start`).
        shops: Number of shops.
        days: Length of the export; `end` = `start` + `days`.
        seed: Seed of the random generator; the same seed gives identical tables.
        start: First day of the export (YYYY-MM-DD, 00:00 UTC).
        progress: Show a tqdm progress bar.

    Returns:
        The log (valid under `features.schema.validate_log`), the hidden truth per buyer
        and the metadata to store beside the log.

    Raises:
        ValueError: If a size is not positive.
    """
    if buyers < 1 or shops < 1 or days < 1:
        raise ValueError("buyers, shops and days must be positive")
    start_at = as_of_time(start)
    rng = np.random.default_rng(seed)
    steps = ["shops", "buyers", "orders", "abuse", "tables"]
    with tqdm(total=len(steps), desc="simulate", disable=not progress) as bar:
        bar.set_postfix_str(steps[0])
        shop_table = _make_shops(rng, shops, days)
        bar.update()
        bar.set_postfix_str(steps[1])
        buyer_table = _make_buyers(rng, buyers, days, shop_table)
        bar.update()
        bar.set_postfix_str(steps[2])
        honest = _honest_orders(rng, buyer_table, shop_table)
        bar.update()
        bar.set_postfix_str(steps[3])
        abuse = _abuse_orders(rng, buyer_table, shop_table, days)
        bar.update()
        bar.set_postfix_str(steps[4])
        log, truth = _assemble(buyer_table, shop_table, [honest, abuse], start_at, days)
        bar.update()
    meta = {
        "start": start_at.isoformat(),
        "end": (start_at + pd.Timedelta(days=days)).isoformat(),
        "seed": int(seed),
        "parameters": _parameters(buyers, shops, days),
    }
    return SimulatedWorld(log=log, truth=truth, meta=meta)


def write_world(world: SimulatedWorld, out_dir: str | os.PathLike[str]) -> None:
    """Write the log (four Parquet tables and meta.json) and truth.parquet beside it.

    Each file is written atomically.
    """
    out_dir = Path(out_dir)
    write_log(world.log, out_dir, world.meta)
    write_parquet(world.truth, out_dir / "truth.parquet")


def _delay_cdf_integral(x: np.ndarray) -> np.ndarray:
    """The integral of the confirmation-delay CDF from 0 to x (days)."""
    excess = np.maximum(x - CONFIRM_DELAY_MIN_DAYS, 0.0)
    total = excess.copy()
    for weight, mean in CONFIRM_DELAY_MIX:
        total -= weight * mean * -np.expm1(-excess / mean)
    return total


def oracle_scores(
    truth: pd.DataFrame, as_of: object, horizon_days: int = 90, maturity_days: int = 30
) -> pd.Series:
    """The probability that each buyer is labelled bad as of a date, from the hidden truth.

    Abusive requests of a buyer arrive as a Poisson process with rate `abuse_rate_per_day`
    inside [abuse_start, abuse_end); each is confirmed with probability `confirm_prob` after
    a delay D (CONFIRM_DELAY_MIN_DAYS plus an exponential mix). Thinning keeps a Poisson
    count, so P(bad) = 1 - exp(-rate * p * integral over (T, T+H] of P(D <= T+H+M-t) dt).
    No other request is ever confirmed, so this is the exact label probability.

    Args:
        truth: `SimulatedWorld.truth` (or truth.parquet).
        as_of: The as-of date D; T = D 00:00 UTC.
        horizon_days: H, as for the labels.
        maturity_days: M, as for the labels.

    Returns:
        P(bad) in [0, 1], indexed by buyer_id, for every buyer in `truth`.
    """
    known_at = as_of_time(as_of)
    day = pd.Timedelta(days=1)
    since = (truth["abuse_start"] - known_at) / day
    until = (truth["abuse_end"] - known_at) / day
    low = np.clip(since.to_numpy(dtype=float, na_value=np.nan), 0.0, horizon_days)
    high = np.clip(until.to_numpy(dtype=float, na_value=np.nan), 0.0, horizon_days)
    limit = float(horizon_days + maturity_days)
    exposure = _delay_cdf_integral(limit - low) - _delay_cdf_integral(limit - high)
    rate = truth["abuse_rate_per_day"].to_numpy(dtype=float) * truth["confirm_prob"].to_numpy(
        dtype=float
    )
    expected = np.where(np.isfinite(exposure), rate * np.maximum(exposure, 0.0), 0.0)
    return pd.Series(
        -np.expm1(-expected), index=pd.Index(truth["buyer_id"], name="buyer_id"), name="oracle"
    )
