"""What honest and abusive orders share: what is bought at what price, how a request is
settled, and how a request after delivery closes its order."""

from __future__ import annotations

import numpy as np

from features.log import OUTCOMES
from features.simulate.laws import gamma
from features.simulate.params import (
    APPROVE_MEAN_DAYS,
    APPROVED,
    ARB_BUYER,
    ARB_MERCHANT,
    ARBITRATION_MIN_DAYS,
    AUTO_APPROVE_TIMEOUT_DAYS,
    AUTO_APPROVED,
    BUYER_GETS_MONEY,
    CROSS_SELL_SHARE,
    CUSTOM,
    PRE_SHIPMENT_CLASSES,
    REJECTED,
    VIRTUAL,
    WITHDRAWN,
    WorldParams,
)
from features.simulate.records import Shops


def categories_and_prices(
    rng: np.random.Generator,
    params: WorldParams,
    shops: Shops,
    shop: np.ndarray,
    price_shift: np.ndarray,
    cross_sell: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(category, is_virtual, is_custom, paid_fen) of orders at `shop`.

    A general shop also sells from other physical categories (`cross_sell`); the price is
    log-normal around the category's median, shifted by the buyer's taste.
    """
    categories = params.categories
    m = len(shop)
    category = shops.category[shop]
    if cross_sell:
        general = ~np.isin(category, [VIRTUAL, CUSTOM])
        other = general & (rng.random(m) < CROSS_SELL_SHARE)
        physical = np.array([i for i in range(len(categories)) if i not in (VIRTUAL, CUSTOM)])
        shares = np.array([categories[i].shop_share for i in physical])
        category = category.copy()
        category[other] = rng.choice(physical, size=int(other.sum()), p=shares / shares.sum())
    is_virtual = category == VIRTUAL
    custom_share = np.array([c.custom_share for c in categories])
    is_custom = rng.random(m) < custom_share[category]
    median = np.log(np.array([c.median_cny for c in categories]))
    sigma = np.array([c.price_sigma for c in categories])
    log_price = median[category] + sigma[category] * rng.standard_normal(m) + price_shift
    paid_fen = np.maximum(np.rint(np.exp(log_price) * 100), 1).astype(np.int64)
    return category, is_virtual, is_custom, paid_fen


def settle(
    rng: np.random.Generator, params: WorldParams, cls: np.ndarray, requested: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Draw each request's outcome from its class and when it is resolved."""
    m = len(cls)
    cumulative = params.outcome_table().cumsum(axis=1)[cls]
    outcome = (rng.random(m)[:, None] > cumulative).sum(axis=1)
    outcome = np.minimum(outcome, len(OUTCOMES) - 1)
    delay = np.empty(m)
    approve = outcome == APPROVED
    delay[approve] = gamma(rng, 1.5, APPROVE_MEAN_DAYS[cls[approve]], int(approve.sum()))
    auto = outcome == AUTO_APPROVED
    delay[auto] = AUTO_APPROVE_TIMEOUT_DAYS[cls[auto]] + rng.uniform(0, 0.05, int(auto.sum()))
    pre = np.isin(cls, PRE_SHIPMENT_CLASSES)
    quick = np.isin(outcome, [REJECTED, WITHDRAWN])
    delay[quick] = rng.exponential(np.where(pre[quick], 0.3, 1.8))
    arbitrated = np.isin(outcome, [ARB_BUYER, ARB_MERCHANT])
    delay[arbitrated] = ARBITRATION_MIN_DAYS + gamma(rng, 2.0, 8.0, int(arbitrated.sum()))
    return outcome, requested + delay


def close_after_request(
    requested: np.ndarray,
    resolved: np.ndarray,
    outcome: np.ndarray,
    full: np.ndarray,
    completed: np.ndarray,
    cancelled: np.ndarray,
) -> None:
    """An after-delivery request pauses completion; a full refund closes the order.

    `completed` and `cancelled` are updated in place.
    """
    open_order = ~(requested >= completed)  # a lost parcel never completes: still open
    refunded = open_order & BUYER_GETS_MONEY[outcome] & full
    cancelled[refunded] = resolved[refunded]
    kept = open_order & ~refunded
    completed[kept] = np.maximum(completed[kept], resolved[kept])
    completed[refunded] = np.nan
