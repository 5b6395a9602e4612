"""Abuse: every abusive episode's requests, each on an order placed for it, and which of
them risk review confirms (nothing else is ever confirmed)."""

from __future__ import annotations

import numpy as np

from features.simulate.laws import gamma
from features.simulate.lifecycle import categories_and_prices, close_after_request, settle
from features.simulate.params import (
    ABUSE_CLASSES,
    ABUSE_DELIVERED,
    ABUSE_NOT_RECEIVED,
    ABUSE_PRE_SHIPMENT,
    RING,
    SEGMENT_PRICE_SHIFT,
    SHIP_MEAN_DAYS,
    SHIPS_BEFORE_TRACKING,
    TAKEOVER,
    THIEF,
    TRACKING_LAG_MEAN_DAYS,
    TRANSIT_MEAN_DAYS,
    WorldParams,
)
from features.simulate.population import open_shops_only, pick_shops
from features.simulate.records import Buyers, Episodes, Orders, Requests, Shops


def episodes(buyers: Buyers) -> Episodes:
    """Every abusive episode: the buyer's own (abusers, rings) and the takeovers."""
    own = np.flatnonzero(buyers.abuse_rate > 0)
    taken = np.flatnonzero(np.isfinite(buyers.takeover_at))
    return Episodes(
        buyer=np.concatenate([own, taken]),
        kind=np.concatenate([buyers.buyer_type[own], np.full(len(taken), TAKEOVER)]),
        begin=np.concatenate([buyers.abuse_start[own], buyers.takeover_at[taken]]),
        end=np.concatenate([buyers.abuse_end[own], buyers.takeover_end[taken]]),
        rate=np.concatenate([buyers.abuse_rate[own], buyers.takeover_rate[taken]]),
        confirm_prob=np.concatenate([buyers.confirm_prob[own], buyers.takeover_confirm[taken]]),
        orders_from=np.maximum(
            np.concatenate([buyers.active_from[own], buyers.takeover_at[taken]]), 0.0
        ),
    )


def _abuse_classes(
    rng: np.random.Generator, params: WorldParams, requested: np.ndarray, days: int
) -> np.ndarray:
    """Each abusive request's class, from the mix of the time it is made."""
    classes, m = np.array(ABUSE_CLASSES), len(requested)
    early = rng.choice(classes, size=m, p=list(params.abuse_class_mix))
    if params.late_abuse_class_mix is None:
        return early
    late = rng.choice(classes, size=m, p=list(params.late_abuse_class_mix))
    return np.where(rng.random(m) < np.clip(requested / days, 0.0, 1.0), late, early)


def _exploit_weights(shops: Shops, weights: np.ndarray) -> np.ndarray:
    """Shop weights of the pre-shipment exploit: shops that ship before entering tracking
    numbers; any shop where there is none (its parcel leaves before its number all the same).
    """
    targets = np.where(shops.shop_type == SHIPS_BEFORE_TRACKING, weights, 0.0)
    return targets if targets.sum() > 0 else weights


def abuse_orders(
    rng: np.random.Generator, params: WorldParams, buyers: Buyers, shops: Shops, days: int
) -> tuple[Orders, Requests]:
    """Abusive requests as a Poisson process per episode, each on an order placed for it."""
    spells = episodes(buyers)
    window_start = np.maximum(spells.begin, 0.0)
    window_end = np.minimum(spells.end, days)
    span = np.maximum(window_end - window_start, 0.0)
    counts = rng.poisson(spells.rate * span)
    episode = np.repeat(np.arange(len(span)), counts)
    buyer = spells.buyer[episode]
    kind = spells.kind[episode]
    m = len(buyer)
    requested = window_start[episode] + rng.random(m) * span[episode]

    weights = shops.abuse_weights if params.abuse_shops_by_appeal else shops.popularity
    shop = pick_shops(rng, weights, m)
    thief = kind == TAKEOVER
    shop[thief] = pick_shops(rng, shops.segment_weights[THIEF], int(thief.sum()))
    ring = np.where(kind == RING, buyers.ring_id[buyer], -1)
    in_ring = ring >= 0
    if in_ring.any():
        shop[in_ring] = buyers.ring_shops[ring[in_ring], rng.integers(0, 2, int(in_ring.sum()))]

    cls = _abuse_classes(rng, params, requested, days)
    exploit = cls == ABUSE_PRE_SHIPMENT
    if exploit.any():
        shop[exploit] = pick_shops(rng, _exploit_weights(shops, weights), int(exploit.sum()))
    ship = gamma(rng, 2.0, SHIP_MEAN_DAYS[shops.shop_type[shop]], m)
    transit = gamma(rng, 3.0, TRANSIT_MEAN_DAYS, m)
    not_received = cls == ABUSE_NOT_RECEIVED
    in_transit_share = rng.uniform(0.3, 0.9, m)
    wait = rng.exponential(1.5, m)
    lag = np.where(not_received, ship + transit * in_transit_share, ship + transit + wait)
    if exploit.any():
        # Dispatched, then the request, then the tracking number `gap` after dispatch.
        gap = gamma(rng, 1.5, TRACKING_LAG_MEAN_DAYS, m)
        lag = np.where(exploit, ship + gap * rng.uniform(0.2, 0.9, m), lag)
    # The order is placed for the request, inside the episode's room (squeezed if needed).
    room = requested - spells.orders_from[episode]
    scale = np.minimum(1.0, 0.98 * room / lag)
    paid = requested - lag * scale
    shop = open_shops_only(rng, shops, shop, paid, weights)
    shipped = paid + ship * scale
    delivered = shipped + transit * scale
    if exploit.any():
        tracked = shipped + gap * scale
        delivered = np.where(exploit, np.maximum(delivered, tracked), delivered)
        shipped = np.where(exploit, tracked, shipped)
    completed = delivered + np.minimum(rng.exponential(3.0, m), 10.0)
    cancelled = np.full(m, np.nan)
    taste = np.where(
        thief, SEGMENT_PRICE_SHIFT[THIEF], buyers.price_shift[buyer] + params.abuse_price_shift
    )
    category, is_virtual, is_custom, paid_fen = categories_and_prices(
        rng, params, shops, shop, taste, cross_sell=False
    )

    amount = paid_fen.copy()
    partial = (cls == ABUSE_DELIVERED) & (rng.random(m) < params.abuse_partial_share)
    amount[partial] = np.maximum(
        np.rint(amount[partial] * rng.uniform(0.3, 0.8, int(partial.sum()))), 1
    ).astype(np.int64)
    outcome, resolved = settle(rng, params, cls, requested)
    close_after_request(requested, resolved, outcome, amount == paid_fen, completed, cancelled)

    confirmation = params.confirmation()
    p_confirm = spells.confirm_prob[episode] * confirmation.weights[cls, outcome]
    confirm_delay = confirmation.min_days + confirmation.delays(rng, m)
    confirmed = np.where(rng.random(m) < p_confirm, requested + confirm_delay, np.nan)

    bought = (buyer, shop, category, is_virtual, is_custom, paid_fen)
    orders = Orders(*bought, paid, shipped, delivered, completed, cancelled)
    requests = Requests(np.arange(m), cls, requested, amount, resolved, outcome, confirmed)
    return orders, requests
