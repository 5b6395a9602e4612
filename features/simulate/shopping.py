"""Honest shopping: the spells in which accounts shop, their orders, and the cancels,
returns and claims that go with them (a thief's purchases included, its claims apart)."""

from __future__ import annotations

import numpy as np

from features.simulate.laws import gamma
from features.simulate.lifecycle import categories_and_prices, close_after_request, settle
from features.simulate.params import (
    ABUSER,
    BUYER_GETS_MONEY,
    DEFECT,
    FAVOURITES,
    HEAVY,
    LOST,
    LOST_PARCEL_SHARE,
    NORMAL,
    ORDINARY,
    PRE_SHIPMENT,
    PRE_SHIPMENT_CUSTOM,
    RECORD,
    RETURN,
    RING_FAVOURITE_SHARE,
    SEGMENT_CONFIRM_RECEIPT_DAYS,
    SEGMENT_FAVOURITE_SHARE,
    SEGMENT_PRICE_SHIFT,
    SEGMENT_REFUND_SCALE,
    SHIP_MEAN_DAYS,
    SHIPS_BEFORE_TRACKING,
    THIEF,
    TRACKING_LAG_MEAN_DAYS,
    TRANSIT_MEAN_DAYS,
    WELCOME,
    WorldParams,
)
from features.simulate.population import open_shops_only, pick_shops
from features.simulate.records import Buyers, Orders, Requests, Segments, Shops


def segments(
    rng: np.random.Generator, params: WorldParams, buyers: Buyers, shops: Shops, days: int
) -> Segments:
    """Shopping segments: who shops when, how fast, how, and at which favourite shops.

    Abusers shop normally only after their onset; before it they build a record (where
    `params.abusers_build_record`; else they shop normally from activation). Some
    honest newcomers start with a welcome burst. A thief shops while holding an account.
    """
    kind = buyers.buyer_type
    n = len(kind)
    everyone = np.arange(n)
    builders = np.flatnonzero((kind == ABUSER) & params.abusers_build_record)
    normal_from = buyers.active_from.copy()
    normal_from[builders] = np.maximum(buyers.abuse_start[builders], normal_from[builders])

    honest = np.isin(kind, [ORDINARY, HEAVY]) & (buyers.registered >= 0)
    welcome = np.flatnonzero(honest & (rng.random(n) < params.welcome_share))
    welcome_days = rng.exponential(params.welcome_days_mean, len(welcome))
    taken = np.flatnonzero(np.isfinite(buyers.takeover_at))
    thief_log = params.thief_rate_log
    parts = [
        (NORMAL, everyone, normal_from, buyers.active_until, buyers.order_rate),
        (
            RECORD,
            builders,
            buyers.active_from[builders],
            buyers.abuse_start[builders],
            gamma(rng, 2.0, params.record_rate_mean, len(builders)),
        ),
        (
            WELCOME,
            welcome,
            buyers.registered[welcome],
            buyers.registered[welcome] + welcome_days,
            gamma(rng, 2.0, params.welcome_rate_mean, len(welcome)),
        ),
        (
            THIEF,
            taken,
            np.maximum(buyers.takeover_at[taken], 0.0),
            buyers.takeover_end[taken],
            np.exp(rng.normal(thief_log[0], thief_log[1], len(taken))),
        ),
    ]
    segment_kind = np.concatenate([np.full(len(who), k) for k, who, *_ in parts])
    buyer = np.concatenate([who for _, who, *_ in parts])
    begin = np.concatenate([b for _, _, b, _, _ in parts])
    end = np.minimum(np.concatenate([e for _, _, _, e, _ in parts]), days)
    rate = np.concatenate([r for *_, r in parts])

    favourites = np.empty((len(buyer), FAVOURITES), dtype=np.int64)
    for k in range(len(SEGMENT_PRICE_SHIFT)):
        mask = segment_kind == k
        count = int(mask.sum()) * FAVOURITES
        favourites[mask] = pick_shops(rng, shops.segment_weights[k], count).reshape(-1, FAVOURITES)
    favourite_share = SEGMENT_FAVOURITE_SHARE[segment_kind]
    ring = buyers.ring_id[buyer]
    ring_normal = (segment_kind == NORMAL) & (ring >= 0)
    favourites[ring_normal] = np.tile(buyers.ring_shops[ring[ring_normal]], 2)
    favourite_share[ring_normal] = RING_FAVOURITE_SHARE
    return Segments(
        kind=segment_kind,
        buyer=buyer,
        begin=begin,
        end=end,
        rate=rate,
        favourites=favourites,
        favourite_share=favourite_share,
    )


def shopping_orders(
    rng: np.random.Generator,
    params: WorldParams,
    buyers: Buyers,
    shops: Shops,
    spells: Segments,
) -> tuple[Orders, Requests]:
    """The orders of every shopping segment, with their honest cancels, returns and claims."""
    span = np.maximum(spells.end - spells.begin, 0.0)
    counts = rng.poisson(spells.rate * span)
    segment = np.repeat(np.arange(len(span)), counts)
    buyer = spells.buyer[segment]
    kind = spells.kind[segment]
    m = len(buyer)
    paid = spells.begin[segment] + rng.random(m) * span[segment]

    favourite = rng.random(m) < spells.favourite_share[segment]
    shop = np.empty(m, dtype=np.int64)
    shop[favourite] = spells.favourites[
        segment[favourite], rng.integers(0, FAVOURITES, int(favourite.sum()))
    ]
    for k in range(len(SEGMENT_PRICE_SHIFT)):
        mask = ~favourite & (kind == k)
        shop[mask] = pick_shops(rng, shops.segment_weights[k], int(mask.sum()))
    shop = open_shops_only(rng, shops, shop, paid, shops.popularity)
    # A thief's taste is the thief's, not the owner's.
    own_taste = np.where(kind == THIEF, 0.0, buyers.price_shift[buyer])
    category, is_virtual, is_custom, paid_fen = categories_and_prices(
        rng, params, shops, shop, own_taste + SEGMENT_PRICE_SHIFT[kind], cross_sell=True
    )

    # Fulfilment: dispatch, tracking entry (late at some shops), delivery, completion.
    shop_type = shops.shop_type[shop]
    dispatch_delay = gamma(rng, 2.0, SHIP_MEAN_DAYS[shop_type], m)
    dispatch_delay[is_virtual] = rng.uniform(1 / 1440, 30 / 1440, int(is_virtual.sum()))
    dispatched = paid + dispatch_delay
    late_tracking = (shop_type == SHIPS_BEFORE_TRACKING) & ~is_virtual
    tracked = dispatched + np.where(late_tracking, gamma(rng, 1.5, TRACKING_LAG_MEAN_DAYS, m), 0.0)
    transit = np.where(is_virtual, 0.0, gamma(rng, 3.0, TRANSIT_MEAN_DAYS, m))
    lost = ~is_virtual & (rng.random(m) < LOST_PARCEL_SHARE)
    delivered = np.where(lost, np.nan, np.maximum(dispatched + transit, tracked))
    receipt_days = np.where(is_virtual, 0.5, SEGMENT_CONFIRM_RECEIPT_DAYS[kind])
    completed = delivered + np.minimum(rng.exponential(receipt_days), 10.0)
    shipped = tracked.copy()
    cancelled = np.full(m, np.nan)

    # Requests: a change of mind or impatience before tracking, a lost parcel, a return or
    # a defect claim after delivery. At most one request per order.
    scale = SEGMENT_REFUND_SCALE[kind]
    change_of_mind = np.where(
        rng.random(m) < scale * buyers.cancel_share[buyer],
        paid + rng.exponential(0.5, m),
        np.inf,
    )
    impatient = np.where(
        rng.random(m) < scale * buyers.impatience[buyer], paid + rng.exponential(8.0, m), np.inf
    )
    cancel_at = np.minimum(change_of_mind, impatient)
    pre = cancel_at < tracked
    claim_lost = ~pre & lost & (rng.random(m) < 0.9)
    after = ~pre & ~lost
    u = rng.random(m)
    return_share = scale * buyers.return_share[buyer]
    ret = after & (u < return_share)
    defect = after & ~ret & (u < return_share + scale * buyers.defect_share[buyer])
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
    outcome, resolved = settle(rng, params, cls, requested)

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
    close_after_request(
        requested[~is_pre],
        resolved[~is_pre],
        outcome[~is_pre],
        amount[~is_pre] == paid_fen[after_idx],
        sub_completed,
        sub_cancelled,
    )
    completed[after_idx], cancelled[after_idx] = sub_completed, sub_cancelled

    bought = (buyer, shop, category, is_virtual, is_custom, paid_fen)
    orders = Orders(*bought, paid, shipped, delivered, completed, cancelled)
    requests = Requests(idx, cls, requested, amount, resolved, outcome, np.full(k, np.nan))
    return orders, requests
