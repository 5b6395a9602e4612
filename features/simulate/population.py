"""Shops and buyers: who is on the platform, since when, with what habits and hidden abuse."""

from __future__ import annotations

import numpy as np

from features.simulate.laws import gamma
from features.simulate.params import (
    ABUSER,
    BUYER_TYPES,
    CUSTOM,
    HEAVY,
    ORDINARY,
    RING,
    SHOP_TYPES,
    TAKEOVER,
    VIRTUAL,
    WorldParams,
)
from features.simulate.records import Buyers, Shops


def pick_shops(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    """Draw `size` shops with probabilities proportional to `weights` (all alike where every
    weight is zero: a world of a few shops may have none of the kind wanted)."""
    total = weights.sum()
    if not total > 0:
        weights, total = np.ones(len(weights)), float(len(weights))
    return rng.choice(len(weights), size=size, p=weights / total)


def open_shops_only(
    rng: np.random.Generator,
    shops: Shops,
    shop: np.ndarray,
    paid: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:
    """Replace shops not yet open at payment by shops open since before `start`."""
    late = shops.opened[shop] > paid
    if late.any():
        old_weights = np.where(shops.old, weights, 0.0)
        if not old_weights.sum() > 0:
            old_weights = shops.old.astype(float)
        shop = shop.copy()
        shop[late] = pick_shops(rng, old_weights, int(late.sum()))
    return shop


def make_shops(rng: np.random.Generator, params: WorldParams, n_shops: int, days: int) -> Shops:
    """The shops: type, category, opening and popularity (a few big shops, a long tail)."""
    shop_type = rng.choice(len(SHOP_TYPES), size=n_shops, p=params.shop_type_shares)
    shares = np.array([c.shop_share for c in params.categories])
    category = rng.choice(len(params.categories), size=n_shops, p=shares / shares.sum())
    old = rng.random(n_shops) < params.shops_open_before_start
    opened = np.where(old, -rng.uniform(1, 1500, n_shops), rng.uniform(0, 0.9 * days, n_shops))
    if not (opened < 0).any():  # at least one shop is open from the start
        opened[np.argmin(opened)] = -1.0
    popularity = rng.lognormal(0.0, 1.1, n_shops)
    popularity = popularity / popularity.sum()

    def appeal(field: str) -> np.ndarray:
        return popularity * np.array([getattr(c, field) for c in params.categories])[category]

    return Shops(
        shop_type=shop_type,
        category=category,
        opened=opened,
        old=opened < 0,
        popularity=popularity,
        segment_weights=np.stack(
            [popularity, appeal("record_appeal"), appeal("record_appeal"), appeal("resale_appeal")]
        ),
        abuse_weights=appeal("abuse_appeal"),
    )


def _abusers_by_cohort(
    rng: np.random.Generator,
    params: WorldParams,
    kind: np.ndarray,
    registered: np.ndarray,
    days: int,
) -> np.ndarray:
    """Thin the abusers so that their share moves with the time of sign-up.

    An abuser registered at t stays one with probability m(t) / max(1, g), m rising
    linearly from 1 (at the start of the export, and before) to g (at its end), g being
    `abuse_growth`; the others become honest, ordinary or heavy refunders in their
    shares' proportion.
    """
    growth = params.abuse_growth
    multiplier = 1.0 + (growth - 1.0) * np.clip(registered / days, 0.0, 1.0)
    dropped = (kind == ABUSER) & (rng.random(len(kind)) >= multiplier / max(1.0, growth))
    ordinary, heavy = params.buyer_type_shares[ORDINARY], params.buyer_type_shares[HEAVY]
    honest = np.where(rng.random(len(kind)) < heavy / (ordinary + heavy), HEAVY, ORDINARY)
    return np.where(dropped, honest, kind)


def _campaign_starts(rng: np.random.Generator, growth: float, span: float, size: int) -> np.ndarray:
    """When ring campaigns start: uniformly on [0, span], or, where abuse grows, with a
    density rising linearly to `growth` times its value at 0 (by inverting its CDF)."""
    if growth == 1.0:
        return rng.uniform(0, span, size)
    u = rng.random(size)
    return span * (np.sqrt(1.0 + (growth**2 - 1.0) * u) - 1.0) / (growth - 1.0)


def make_buyers(
    rng: np.random.Generator, params: WorldParams, n: int, days: int, shops: Shops
) -> Buyers:
    """The accounts: type, sign-up, habits, rings, their own abuse episode and takeovers."""
    kind = rng.choice(len(BUYER_TYPES), size=n, p=params.buyer_type_shares)
    pre_start = rng.random(n) < params.pre_start_registered_share
    registered = np.where(
        pre_start, -rng.uniform(0, params.pre_start_max_days, n), rng.uniform(0, days, n)
    )
    if params.abuse_growth != 1.0:
        kind = _abusers_by_cohort(rng, params, kind, registered, days)

    # Rings: groups of 4-30 accounts registered within days of each other, sharing shops.
    ring_id = np.full(n, -1)
    members = np.flatnonzero(kind == RING)
    ring_shops = np.zeros((0, 2), dtype=np.int64)
    # Mean log abuse rate per buyer: a ring member's is the campaign's.
    log_rate_mean = np.full(n, params.abuser_rate_log[0])
    if len(members):
        sizes = rng.integers(4, 31, size=len(members) // 4 + 1)
        ids = np.repeat(np.arange(len(sizes)), sizes)[: len(members)]
        n_rings = int(ids.max()) + 1
        ring_id[members] = ids
        base = _campaign_starts(rng, params.abuse_growth, max(days - 25, 1), n_rings)
        registered[members] = base[ids] + rng.exponential(1.5, len(members))
        eligible = shops.old & ~np.isin(shops.category, [VIRTUAL, CUSTOM])
        weights = np.where(eligible, shops.popularity, 0.0)
        ring_shops = pick_shops(rng, weights, 2 * n_rings).reshape(n_rings, 2)
        campaign = rng.normal(params.ring_rate_log[0], params.ring_rate_log[1], n_rings)
        log_rate_mean[members] = campaign[ids]
    active_from = np.maximum(registered, 0.0)

    def by_type(trait: str, part: int | None = None) -> np.ndarray:
        values = params.trait(trait)
        return (values if part is None else values[:, part])[kind]

    order_rate = gamma(rng, 1.3, by_type("order_rate_mean"), n)
    cancel_share = rng.beta(by_type("cancel_beta", 0), by_type("cancel_beta", 1))
    return_share = rng.beta(by_type("return_beta", 0), by_type("return_beta", 1))
    defect_share = rng.beta(by_type("defect_beta", 0), by_type("defect_beta", 1))
    impatience = by_type("impatience")
    price_shift = rng.normal(0.0, 0.35, n) + by_type("price_shift")

    # The buyer's own abuse episode (abusers and rings); honest buyers have none.
    confirmation = params.confirmation()
    onset_from = np.full(n, np.nan)
    abuse_start = np.full(n, np.nan)
    abuse_end = np.full(n, np.nan)
    abuse_rate = np.zeros(n)
    confirm_prob = np.zeros(n)
    for person, anchor, onset, length, log_rate_sd in (
        (ABUSER, active_from, params.abuser_onset, params.abuser_career, params.abuser_rate_log[1]),
        (RING, registered, params.ring_onset, params.ring_burst, params.ring_member_rate_sd),
    ):
        mask = kind == person
        size = int(mask.sum())
        onset_from[mask] = anchor[mask]
        abuse_start[mask] = anchor[mask] + onset.sample(rng, size)
        abuse_end[mask] = abuse_start[mask] + length.sample(rng, size)
        abuse_rate[mask] = np.exp(rng.normal(log_rate_mean[mask], log_rate_sd, size))
        confirm_prob[mask] = confirmation.probabilities(rng, params.confirm_mean_of(person), size)

    # Takeover: any account, at a constant hazard once it has a month of history. Those
    # before `start` happened outside the export; those after `end` are not recorded.
    exposed_from = registered + params.takeover_min_history_days
    takeover_at = exposed_from + params.takeover_wait.sample(rng, n)
    taken = takeover_at < days
    takeover_at[~taken] = np.nan
    takeover_end = np.full(n, np.nan)
    takeover_rate = np.zeros(n)
    takeover_confirm = np.zeros(n)
    size = int(taken.sum())
    takeover_end[taken] = takeover_at[taken] + params.takeover_burst.sample(rng, size)
    rate_log = params.takeover_rate_log
    takeover_rate[taken] = np.exp(rng.normal(rate_log[0], rate_log[1], size))
    takeover_confirm[taken] = confirmation.probabilities(
        rng, params.confirm_mean_of(TAKEOVER), size
    )

    # Normal shopping: from activation until churn (rings stop after their burst).
    active_until = np.minimum(active_from + rng.exponential(900.0, n), days)
    is_ring = kind == RING
    active_until[is_ring] = np.minimum(abuse_end[is_ring] + 2.0, days)
    return Buyers(
        buyer_type=kind,
        registered=registered,
        active_from=active_from,
        active_until=active_until,
        order_rate=order_rate,
        cancel_share=cancel_share,
        return_share=return_share,
        defect_share=defect_share,
        impatience=impatience,
        price_shift=price_shift,
        ring_id=ring_id,
        ring_shops=ring_shops,
        onset_from=onset_from,
        abuse_start=abuse_start,
        abuse_end=abuse_end,
        abuse_rate=abuse_rate,
        confirm_prob=confirm_prob,
        exposed_from=exposed_from,
        takeover_at=takeover_at,
        takeover_end=takeover_end,
        takeover_rate=takeover_rate,
        takeover_confirm=takeover_confirm,
    )
