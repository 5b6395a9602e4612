"""The transaction-log simulator: a synthetic platform whose buyers have hidden types.

The world is one a risk analyst would recognise. Buyers are ordinary, honest heavy
refunders (many pre-shipment cancels, never abuse), abusers and new-account rings.
Abusers first build a record: from a young account, a burst of cheap orders at a few
shops, confirmed quickly and hardly ever refunded; then, at a random onset, refund-only
claims after the goods arrived and "not received" claims. Rings sign up together, shop at
a couple of shared shops and burst soon after sign-up. Honest newcomers sometimes shop in a
welcome burst of cheap orders too, so a record-building phase is a hint, not a proof. Any
account with a month of history may be taken over, at a constant hazard: the thief buys
resellable, high-priced goods at new shops and files abusive claims for a few days until the
owner recovers the account. Shops are good, slow shippers, or ship before entering the
tracking number (the POLICY.md risk). Every order goes through payment, tracking,
delivery, completion or cancellation; after-sales requests come before and after shipment,
with outcomes and resolution times; abuse is confirmed late, and not always.

Abusive requests come in *episodes* (an abuser's career, a ring's burst, a takeover): per
episode a Poisson process of constant rate between a random onset and a random end, each
request confirmed independently with a known probability after a delay of known
distribution; nothing else is ever confirmed. The onsets, lengths, rates and confirmation
probabilities are drawn from the distributions below, so the chance that a buyer is *bad*
as of T (DESIGN.md) given what exists at T (the buyer's type and traits, and the episodes
that have already begun or ended) is an exact integral over what has not happened yet,
which `oracle_scores` computes from the hidden truth: the best score any model can reach.

Timestamps are generated as float days since `start` and written as whole seconds. The
log is an export of [start, end): buyers may have registered before `start` (their
activity before it is not in the export), and every later timestamp at or after `end` is
empty, as the platform would show it at `end`.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from features.io import LogFileError, write_log, write_parquet
from features.log import OUTCOMES, REFUND_KINDS, TABLES, TransactionLog, as_of_time

# Hidden buyer types (traits of the person behind the account) and their shares. An
# account takeover is not a type: it is an event that can happen to any account. The shares
# are of every account ever registered, dormant ones included: with them about 4-5% of the
# accounts registered before a monthly date have a request confirmed as abuse in the next
# quarter (an abuser is in career for a while, not for ever; rings are throwaway accounts).
BUYER_TYPES = ("ordinary", "heavy_refunder", "abuser", "ring")
BUYER_TYPE_SHARES = (0.795, 0.10, 0.065, 0.04)
ORDINARY, HEAVY, ABUSER, RING = range(len(BUYER_TYPES))
# The abusive episodes; the thief of a taken-over account has its own confirmation mean.
TAKEOVER = len(BUYER_TYPES)

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
    """A product category: how common, how priced, how often custom-made, how tempting.

    `abuse_appeal` weighs shops for abusive claims, `record_appeal` for cheap record-building
    and welcome-offer orders (accessories, gift-like goods), `resale_appeal` for what a
    thief buys with a taken-over account (goods and top-ups that resell).
    """

    name: str
    shop_share: float
    median_cny: float
    price_sigma: float
    custom_share: float
    abuse_appeal: float
    record_appeal: float
    resale_appeal: float


CATEGORIES = (
    Category("apparel", 0.23, 139.0, 0.85, 0.02, 1.5, 1.0, 1.0),
    Category("electronics", 0.10, 459.0, 1.00, 0.0, 2.0, 3.0, 4.0),
    Category("home", 0.15, 169.0, 0.95, 0.03, 1.0, 0.6, 0.6),
    Category("beauty", 0.12, 159.0, 0.80, 0.0, 1.5, 2.0, 2.0),
    Category("food", 0.13, 69.0, 0.60, 0.0, 0.7, 1.5, 0.2),
    Category("books", 0.06, 49.0, 0.50, 0.0, 0.3, 0.5, 0.1),
    Category("toys", 0.08, 129.0, 0.85, 0.0, 0.8, 2.0, 0.5),
    Category("virtual", 0.08, 50.0, 1.00, 0.0, 0.0, 0.5, 2.0),
    Category("custom", 0.05, 199.0, 0.80, 1.0, 0.2, 0.1, 0.0),
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

# Risk review confirms an abusive request with an episode-level probability, tilted towards
# requests the merchant fought and won (relative weights by outcome, normalised per class).
CONFIRM_OUTCOME_WEIGHT = np.array([0.85, 0.85, 1.2, 0.9, 0.95, 1.3])
CONFIRM_MEAN = {ABUSER: 0.55, TAKEOVER: 0.62, RING: 0.66}
CONFIRM_CONCENTRATION = 8.0
# Confirmation delay: a minimum, then a mix of quick (days) and slow (weeks) reviews.
CONFIRM_DELAY_MIN_DAYS = 1.0
CONFIRM_DELAY_MIX = ((0.55, 4.0), (0.45, 21.0))  # (weight, mean days) of exponential parts

PRE_START_REGISTERED_SHARE = 0.25
PRE_START_MAX_DAYS = 1000.0
SHOPS_OPEN_BEFORE_START = 0.85


@dataclass(frozen=True)
class Delay:
    """A random delay in days, with the density and survival function the oracle needs.

    Attributes:
        kind: "erlang" (`a` = integer shape, `b` = mean), "uniform" (on [a, b]) or
            "exponential" (`a` = mean).
        a: First parameter.
        b: Second parameter (unused for "exponential").
    """

    kind: str
    a: float
    b: float = 0.0

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draw `size` delays."""
        if self.kind == "erlang":
            return rng.gamma(self.a, self.b / self.a, size)
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b, size)
        return rng.exponential(self.a, size)

    def support(self) -> tuple[float, float]:
        """The interval outside which the density is zero."""
        return (self.a, self.b) if self.kind == "uniform" else (0.0, math.inf)

    def survival(self, x: np.ndarray) -> np.ndarray:
        """P(delay > x)."""
        x = np.asarray(x, dtype=float)
        if self.kind == "uniform":
            return np.clip((self.b - x) / (self.b - self.a), 0.0, 1.0)
        pos = np.maximum(x, 0.0)
        if self.kind == "exponential":
            return np.exp(-pos / self.a)
        scaled = pos * self.a / self.b
        terms = sum(scaled**k / math.factorial(k) for k in range(int(self.a)))
        return np.exp(-scaled) * terms

    def density(self, x: np.ndarray) -> np.ndarray:
        """The probability density at x."""
        x = np.asarray(x, dtype=float)
        if self.kind == "uniform":
            return np.where((x >= self.a) & (x <= self.b), 1.0 / (self.b - self.a), 0.0)
        pos = np.maximum(x, 0.0)
        if self.kind == "exponential":
            return np.where(x >= 0, np.exp(-pos / self.a) / self.a, 0.0)
        shape, rate = int(self.a), self.a / self.b
        value = rate**shape * pos ** (shape - 1) * np.exp(-rate * pos) / math.factorial(shape - 1)
        return np.where(x >= 0, value, 0.0)


# Abusers build a record from activation (young accounts mostly), then abuse for a while.
ABUSER_ONSET = Delay("erlang", 2, 60.0)
ABUSER_CAREER = Delay("exponential", 540.0)
# (mean, sd) of log abusive requests per day: from an occasional claim every few months to
# several a week.
ABUSER_RATE_LOG = (math.log(1 / 28), 0.9)
# Rings age their accounts for days to weeks after sign-up, then burst. A ring's campaign
# has its own intensity (set by whoever runs it) and members vary around it.
RING_ONSET = Delay("uniform", 2.0, 45.0)
RING_BURST = Delay("uniform", 7.0, 40.0)
RING_RATE_LOG = (math.log(0.2), 0.45)  # (mean, sd) of a campaign's log rate per member-day
RING_MEMBER_RATE_SD = 0.25  # sd of a member's log rate around the campaign's
# Takeovers: a constant hazard once an account has a month of history, at most one per
# account; the thief bursts until the owner recovers the account.
TAKEOVER_MIN_HISTORY_DAYS = 30.0
TAKEOVER_WAIT = Delay("exponential", 18_000.0)  # 1 / hazard per day: about 2% a year
TAKEOVER_BURST = Delay("uniform", 2.0, 14.0)
TAKEOVER_RATE_LOG = (math.log(0.5), 0.5)

# Shopping segments: normal shopping, an abuser's record building, an honest newcomer's
# welcome burst, a thief's shopping. Per segment kind: price shift (log scale), refund
# propensity scale, mean days to confirm receipt, share of orders at the segment's
# favourite shops, and the category appeal that weighs shop choice.
NORMAL, RECORD, WELCOME, THIEF = range(4)
SEGMENT_PRICE_SHIFT = np.array([0.0, -0.8, -0.5, 0.8])
SEGMENT_REFUND_SCALE = np.array([1.0, 0.1, 1.0, 0.05])
SEGMENT_CONFIRM_RECEIPT_DAYS = np.array([3.0, 0.7, 3.0, 3.0])
SEGMENT_FAVOURITE_SHARE = np.array([0.3, 0.75, 0.5, 0.2])
RING_FAVOURITE_SHARE = 0.8
FAVOURITES = 4  # favourite shop slots per segment (drawn with replacement)
RECORD_RATE_MEAN = 0.2  # orders per day while building a record
WELCOME_SHARE = 0.3  # of honest accounts registered during the export
WELCOME_DAYS_MEAN = 25.0
WELCOME_RATE_MEAN = 0.15
THIEF_RATE_LOG = (math.log(0.8), 0.4)  # thief's own purchases per day

_DAY_SECONDS = 86_400
_NAT = np.iinfo(np.int64).min


@dataclass(frozen=True)
class SimulatedWorld:
    """A simulated log with the hidden truth that generated it.

    Attributes:
        log: The four tables, with `start` and `end` set.
        truth: One row per buyer (timestamps UTC, NaT when not applicable): `buyer_id`,
            `buyer_type`, `registered_at`, `ring_id` (NA if none); the buyer's own abuse
            episode (abusers and rings): `abuse_onset_from` (the onset is drawn after it),
            the realised `abuse_start` and `abuse_end`, `abuse_rate_per_day` (abusive
            requests per day inside [abuse_start, abuse_end), 0 for honest buyers) and
            `confirm_prob`; and the takeover: `takeover_exposed_from` (the hazard applies
            from then), the realised `takeover_at` (NaT if none before the end of the
            export), `takeover_end`, `takeover_rate_per_day`, `takeover_confirm_prob`.
            Realised times may lie after any given T: only `oracle_scores` should read
            them, and it only uses those before T.
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


def _confirm_beta(episode: int) -> tuple[float, float, float]:
    """(cap, alpha, beta): an episode's confirm probability is cap * Beta(alpha, beta).

    The cap keeps the outcome-tilted probability a probability.
    """
    cap = 1.0 / float(_confirm_weights().max())
    mean = CONFIRM_MEAN[episode] / cap
    return cap, mean * CONFIRM_CONCENTRATION, (1 - mean) * CONFIRM_CONCENTRATION


def _confirm_probs(rng: np.random.Generator, episode: int, size: int) -> np.ndarray:
    cap, alpha, beta = _confirm_beta(episode)
    return cap * rng.beta(alpha, beta, size)


def _make_shops(rng: np.random.Generator, n_shops: int, days: int) -> dict[str, np.ndarray]:
    shop_type = rng.choice(len(SHOP_TYPES), size=n_shops, p=SHOP_TYPE_SHARES)
    shares = np.array([c.shop_share for c in CATEGORIES])
    category = rng.choice(len(CATEGORIES), size=n_shops, p=shares / shares.sum())
    old = rng.random(n_shops) < SHOPS_OPEN_BEFORE_START
    opened = np.where(old, -rng.uniform(1, 1500, n_shops), rng.uniform(0, 0.9 * days, n_shops))
    old[np.argmin(opened)] = True  # at least one shop is open from the start
    popularity = rng.lognormal(0.0, 1.1, n_shops)  # a few big shops, a long tail
    popularity = popularity / popularity.sum()

    def appeal(field: str) -> np.ndarray:
        return popularity * np.array([getattr(c, field) for c in CATEGORIES])[category]

    return {
        "type": shop_type,
        "category": category,
        "opened": opened,
        "old": opened < 0,
        "popularity": popularity,
        # Shop-choice weights per segment kind (NORMAL, RECORD, WELCOME, THIEF).
        "segment_weights": np.stack(
            [popularity, appeal("record_appeal"), appeal("record_appeal"), appeal("resale_appeal")]
        ),
        "abuse_weights": appeal("abuse_appeal"),
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

    # Rings: groups of 4-30 accounts registered within days of each other, sharing shops.
    ring_id = np.full(n, -1)
    members = np.flatnonzero(kind == RING)
    ring_shops = np.zeros((0, 2), dtype=np.int64)
    # Mean log abuse rate per buyer: a ring member's is the campaign's.
    log_rate_mean = np.full(n, ABUSER_RATE_LOG[0])
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
        campaign = rng.normal(RING_RATE_LOG[0], RING_RATE_LOG[1], n_rings)
        log_rate_mean[members] = campaign[ids]
    active_from = np.maximum(registered, 0.0)

    def by_type(values: dict[int, float]) -> np.ndarray:
        return np.array([values[t] for t in range(len(BUYER_TYPES))])[kind]

    order_rate = _gamma(
        rng, 1.3, by_type({ORDINARY: 0.05, HEAVY: 0.08, ABUSER: 0.05, RING: 0.15}), n
    )
    cancel_share = rng.beta(
        by_type({ORDINARY: 1.2, HEAVY: 4.0, ABUSER: 1.5, RING: 3.0}),
        by_type({ORDINARY: 35, HEAVY: 8, ABUSER: 25, RING: 7}),
    )
    return_share = rng.beta(
        by_type({ORDINARY: 1.2, HEAVY: 3.0, ABUSER: 1.5, RING: 1.0}),
        by_type({ORDINARY: 28, HEAVY: 14, ABUSER: 22, RING: 15}),
    )
    defect_share = rng.beta(
        by_type({ORDINARY: 1.0, HEAVY: 1.2, ABUSER: 1.5, RING: 1.0}),
        by_type({ORDINARY: 80, HEAVY: 40, ABUSER: 40, RING: 30}),
    )
    impatience = by_type({ORDINARY: 0.15, HEAVY: 0.3, ABUSER: 0.15, RING: 0.15})
    price_shift = rng.normal(0.0, 0.35, n) + by_type(
        {ORDINARY: 0.0, HEAVY: 0.0, ABUSER: 0.1, RING: -0.1}
    )

    # The buyer's own abuse episode (abusers and rings); honest buyers have none.
    onset_from = np.full(n, np.nan)
    abuse_start = np.full(n, np.nan)
    abuse_end = np.full(n, np.nan)
    abuse_rate = np.zeros(n)
    confirm_prob = np.zeros(n)
    for person, anchor, onset, length, log_rate_sd in (
        (ABUSER, active_from, ABUSER_ONSET, ABUSER_CAREER, ABUSER_RATE_LOG[1]),
        (RING, registered, RING_ONSET, RING_BURST, RING_MEMBER_RATE_SD),
    ):
        mask = kind == person
        size = int(mask.sum())
        onset_from[mask] = anchor[mask]
        abuse_start[mask] = anchor[mask] + onset.sample(rng, size)
        abuse_end[mask] = abuse_start[mask] + length.sample(rng, size)
        abuse_rate[mask] = np.exp(rng.normal(log_rate_mean[mask], log_rate_sd, size))
        confirm_prob[mask] = _confirm_probs(rng, person, size)

    # Takeover: any account, at a constant hazard once it has a month of history. Those
    # before `start` happened outside the export; those after `end` are not recorded.
    exposed_from = registered + TAKEOVER_MIN_HISTORY_DAYS
    takeover_at = exposed_from + TAKEOVER_WAIT.sample(rng, n)
    taken = takeover_at < days
    takeover_at[~taken] = np.nan
    takeover_end = np.full(n, np.nan)
    takeover_rate = np.zeros(n)
    takeover_confirm = np.zeros(n)
    size = int(taken.sum())
    takeover_end[taken] = takeover_at[taken] + TAKEOVER_BURST.sample(rng, size)
    takeover_rate[taken] = np.exp(rng.normal(TAKEOVER_RATE_LOG[0], TAKEOVER_RATE_LOG[1], size))
    takeover_confirm[taken] = _confirm_probs(rng, TAKEOVER, size)

    # Normal shopping: from activation until churn (rings stop after their burst).
    active_until = np.minimum(active_from + rng.exponential(900.0, n), days)
    is_ring = kind == RING
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
        "onset_from": onset_from,
        "abuse_start": abuse_start,
        "abuse_end": abuse_end,
        "abuse_rate": abuse_rate,
        "confirm_prob": confirm_prob,
        "exposed_from": exposed_from,
        "takeover_at": takeover_at,
        "takeover_end": takeover_end,
        "takeover_rate": takeover_rate,
        "takeover_confirm": takeover_confirm,
    }


def _segments(
    rng: np.random.Generator,
    buyers: dict[str, np.ndarray],
    shops: dict[str, np.ndarray],
    days: int,
) -> dict[str, np.ndarray]:
    """Shopping segments: who shops when, how fast, how, and at which favourite shops.

    Abusers shop normally only after their onset; before it they build a record. Some
    honest newcomers start with a welcome burst. A thief shops while holding an account.
    """
    kind = buyers["type"]
    n = len(kind)
    everyone = np.arange(n)
    abuser = np.flatnonzero(kind == ABUSER)
    normal_from = buyers["active_from"].copy()
    normal_from[abuser] = np.maximum(buyers["abuse_start"][abuser], normal_from[abuser])

    honest = np.isin(kind, [ORDINARY, HEAVY]) & (buyers["registered"] >= 0)
    welcome = np.flatnonzero(honest & (rng.random(n) < WELCOME_SHARE))
    welcome_days = rng.exponential(WELCOME_DAYS_MEAN, len(welcome))
    taken = np.flatnonzero(np.isfinite(buyers["takeover_at"]))
    parts = [
        (NORMAL, everyone, normal_from, buyers["active_until"], buyers["order_rate"]),
        (
            RECORD,
            abuser,
            buyers["active_from"][abuser],
            buyers["abuse_start"][abuser],
            _gamma(rng, 2.0, RECORD_RATE_MEAN, len(abuser)),
        ),
        (
            WELCOME,
            welcome,
            buyers["registered"][welcome],
            buyers["registered"][welcome] + welcome_days,
            _gamma(rng, 2.0, WELCOME_RATE_MEAN, len(welcome)),
        ),
        (
            THIEF,
            taken,
            np.maximum(buyers["takeover_at"][taken], 0.0),
            buyers["takeover_end"][taken],
            np.exp(rng.normal(THIEF_RATE_LOG[0], THIEF_RATE_LOG[1], len(taken))),
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
        favourites[mask] = _pick_shops(rng, shops["segment_weights"][k], count).reshape(
            -1, FAVOURITES
        )
    favourite_share = SEGMENT_FAVOURITE_SHARE[segment_kind]
    ring = buyers["ring_id"][buyer]
    ring_normal = (segment_kind == NORMAL) & (ring >= 0)
    favourites[ring_normal] = np.tile(buyers["ring_shops"][ring[ring_normal]], 2)
    favourite_share[ring_normal] = RING_FAVOURITE_SHARE
    return {
        "kind": segment_kind,
        "buyer": buyer,
        "begin": begin,
        "end": end,
        "rate": rate,
        "favourites": favourites,
        "favourite_share": favourite_share,
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


def _shopping_orders(
    rng: np.random.Generator,
    buyers: dict[str, np.ndarray],
    shops: dict[str, np.ndarray],
    segments: dict[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The orders of every shopping segment, with their honest cancels, returns and claims."""
    span = np.maximum(segments["end"] - segments["begin"], 0.0)
    counts = rng.poisson(segments["rate"] * span)
    segment = np.repeat(np.arange(len(span)), counts)
    buyer = segments["buyer"][segment]
    kind = segments["kind"][segment]
    m = len(buyer)
    paid = segments["begin"][segment] + rng.random(m) * span[segment]

    favourite = rng.random(m) < segments["favourite_share"][segment]
    shop = np.empty(m, dtype=np.int64)
    shop[favourite] = segments["favourites"][
        segment[favourite], rng.integers(0, FAVOURITES, int(favourite.sum()))
    ]
    for k in range(len(SEGMENT_PRICE_SHIFT)):
        mask = ~favourite & (kind == k)
        shop[mask] = _pick_shops(rng, shops["segment_weights"][k], int(mask.sum()))
    shop = _open_shops_only(rng, shops, shop, paid, shops["popularity"])
    # A thief's taste is the thief's, not the owner's.
    own_taste = np.where(kind == THIEF, 0.0, buyers["price_shift"][buyer])
    category, is_virtual, is_custom, paid_fen = _categories_and_prices(
        rng, shops, shop, own_taste + SEGMENT_PRICE_SHIFT[kind], cross_sell=True
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
    receipt_days = np.where(is_virtual, 0.5, SEGMENT_CONFIRM_RECEIPT_DAYS[kind])
    completed = delivered + np.minimum(rng.exponential(receipt_days), 10.0)
    shipped = tracked.copy()
    cancelled = np.full(m, np.nan)

    # Requests: a change of mind or impatience before tracking, a lost parcel, a return or
    # a defect claim after delivery. At most one request per order.
    scale = SEGMENT_REFUND_SCALE[kind]
    change_of_mind = np.where(
        rng.random(m) < scale * buyers["cancel_share"][buyer],
        paid + rng.exponential(0.5, m),
        np.inf,
    )
    impatient = np.where(
        rng.random(m) < scale * buyers["impatience"][buyer], paid + rng.exponential(8.0, m), np.inf
    )
    cancel_at = np.minimum(change_of_mind, impatient)
    pre = cancel_at < tracked
    claim_lost = ~pre & lost & (rng.random(m) < 0.9)
    after = ~pre & ~lost
    u = rng.random(m)
    return_share = scale * buyers["return_share"][buyer]
    ret = after & (u < return_share)
    defect = after & ~ret & (u < return_share + scale * buyers["defect_share"][buyer])
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


def _episodes(buyers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every abusive episode: the buyer's own (abusers, rings) and the takeovers."""
    own = np.flatnonzero(buyers["abuse_rate"] > 0)
    taken = np.flatnonzero(np.isfinite(buyers["takeover_at"]))
    return {
        "buyer": np.concatenate([own, taken]),
        "kind": np.concatenate([buyers["type"][own], np.full(len(taken), TAKEOVER)]),
        "begin": np.concatenate([buyers["abuse_start"][own], buyers["takeover_at"][taken]]),
        "end": np.concatenate([buyers["abuse_end"][own], buyers["takeover_end"][taken]]),
        "rate": np.concatenate([buyers["abuse_rate"][own], buyers["takeover_rate"][taken]]),
        "confirm_prob": np.concatenate(
            [buyers["confirm_prob"][own], buyers["takeover_confirm"][taken]]
        ),
        # Orders for the requests are placed after the account exists, or after the theft.
        "orders_from": np.maximum(
            np.concatenate([buyers["active_from"][own], buyers["takeover_at"][taken]]), 0.0
        ),
    }


def _abuse_orders(
    rng: np.random.Generator,
    buyers: dict[str, np.ndarray],
    shops: dict[str, np.ndarray],
    days: int,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Abusive requests as a Poisson process per episode, each on an order placed for it."""
    episodes = _episodes(buyers)
    window_start = np.maximum(episodes["begin"], 0.0)
    window_end = np.minimum(episodes["end"], days)
    span = np.maximum(window_end - window_start, 0.0)
    counts = rng.poisson(episodes["rate"] * span)
    episode = np.repeat(np.arange(len(span)), counts)
    buyer = episodes["buyer"][episode]
    kind = episodes["kind"][episode]
    m = len(buyer)
    requested = window_start[episode] + rng.random(m) * span[episode]

    weights = shops["abuse_weights"]
    shop = _pick_shops(rng, weights, m)
    thief = kind == TAKEOVER
    shop[thief] = _pick_shops(rng, shops["segment_weights"][THIEF], int(thief.sum()))
    ring = np.where(kind == RING, buyers["ring_id"][buyer], -1)
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
    # The order is placed for the request, inside the episode's room (squeezed if needed).
    room = requested - episodes["orders_from"][episode]
    scale = np.minimum(1.0, 0.98 * room / lag)
    paid = requested - lag * scale
    shop = _open_shops_only(rng, shops, shop, paid, weights)
    shipped = paid + ship * scale
    delivered = shipped + transit * scale
    completed = delivered + np.minimum(rng.exponential(3.0, m), 10.0)
    cancelled = np.full(m, np.nan)
    taste = np.where(thief, SEGMENT_PRICE_SHIFT[THIEF], buyers["price_shift"][buyer] + 0.15)
    category, is_virtual, is_custom, paid_fen = _categories_and_prices(
        rng, shops, shop, taste, cross_sell=False
    )

    amount = paid_fen.copy()
    partial = (cls == ABUSE_DELIVERED) & (rng.random(m) < 0.15)
    amount[partial] = np.maximum(
        np.rint(amount[partial] * rng.uniform(0.3, 0.8, int(partial.sum()))), 1
    ).astype(np.int64)
    outcome, resolved = _settle(rng, cls, requested)
    _close_after_request(requested, resolved, outcome, amount == paid_fen, completed, cancelled)

    p_confirm = episodes["confirm_prob"][episode] * _confirm_weights()[cls, outcome]
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

    def when(key: str) -> pd.Series:
        return _timestamps(buyers[key][buyer_order], start)

    truth = pd.DataFrame(
        {
            "buyer_id": buyer_ids,
            "buyer_type": pd.Series(np.array(BUYER_TYPES)[buyers["type"][buyer_order]]).astype(
                "str"
            ),
            "registered_at": buyers_frame["registered_at"],
            "ring_id": pd.Series(ring).astype("Int64").mask(ring < 0),
            "abuse_onset_from": when("onset_from"),
            "abuse_start": when("abuse_start"),
            "abuse_end": when("abuse_end"),
            "abuse_rate_per_day": buyers["abuse_rate"][buyer_order],
            "confirm_prob": buyers["confirm_prob"][buyer_order],
            "takeover_exposed_from": when("exposed_from"),
            "takeover_at": when("takeover_at"),
            "takeover_end": when("takeover_end"),
            "takeover_rate_per_day": buyers["takeover_rate"][buyer_order],
            "takeover_confirm_prob": buyers["takeover_confirm"][buyer_order],
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
    def delay(d: Delay) -> dict:
        return {"kind": d.kind, "a": d.a, "b": d.b}

    return {
        "buyers": buyers,
        "shops": shops,
        "days": days,
        "buyer_type_shares": dict(zip(BUYER_TYPES, BUYER_TYPE_SHARES, strict=True)),
        "shop_type_shares": dict(zip(SHOP_TYPES, SHOP_TYPE_SHARES, strict=True)),
        "categories": [c._asdict() for c in CATEGORIES],
        "confirm_mean": {(BUYER_TYPES + ("takeover",))[t]: p for t, p in CONFIRM_MEAN.items()},
        "confirm_delay_min_days": CONFIRM_DELAY_MIN_DAYS,
        "confirm_delay_mix": [list(part) for part in CONFIRM_DELAY_MIX],
        "pre_start_registered_share": PRE_START_REGISTERED_SHARE,
        "abuser_onset": delay(ABUSER_ONSET),
        "abuser_career": delay(ABUSER_CAREER),
        "abuser_rate_log_mean_sd": list(ABUSER_RATE_LOG),
        "ring_onset": delay(RING_ONSET),
        "ring_burst": delay(RING_BURST),
        "ring_campaign_rate_log_mean_sd": list(RING_RATE_LOG),
        "ring_member_rate_log_sd": RING_MEMBER_RATE_SD,
        "takeover_hazard_per_day": 1.0 / TAKEOVER_WAIT.a,
        "takeover_min_history_days": TAKEOVER_MIN_HISTORY_DAYS,
        "takeover_burst": delay(TAKEOVER_BURST),
        "record_rate_mean": RECORD_RATE_MEAN,
        "welcome_share": WELCOME_SHARE,
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
        segments = _segments(rng, buyer_table, shop_table, days)
        shopping = _shopping_orders(rng, buyer_table, shop_table, segments)
        bar.update()
        bar.set_postfix_str(steps[3])
        abuse = _abuse_orders(rng, buyer_table, shop_table, days)
        bar.update()
        bar.set_postfix_str(steps[4])
        log, truth = _assemble(buyer_table, shop_table, [shopping, abuse], start_at, days)
        bar.update()
    meta = {
        "start": start_at.isoformat(),
        "end": (start_at + pd.Timedelta(days=days)).isoformat(),
        "seed": int(seed),
        "parameters": _parameters(buyers, shops, days),
    }
    return SimulatedWorld(log=log, truth=truth, meta=meta)


def check_world_dir(out_dir: str | os.PathLike[str]) -> Path:
    """`out_dir` if a simulated world may be written there: a new or empty folder, or one
    holding an earlier simulated world (Parquet tables and their truth.parquet). A log that
    came from elsewhere is never written over.

    Raises:
        LogFileError: `out_dir` is a file, or holds a log that was not simulated.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise LogFileError(f"{out_dir} is a file, not a folder for the simulated log")
    found = [
        path
        for name in TABLES
        for path in (out_dir / f"{name}.parquet", out_dir / f"{name}.csv")
        if path.exists()
    ]
    simulated = (out_dir / "truth.parquet").is_file()
    if any(path.suffix == ".csv" for path in found) or (found and not simulated):
        names = ", ".join(path.name for path in found)
        raise LogFileError(
            f"{out_dir} already holds a log that was not simulated ({names}); choose another folder"
        )
    return out_dir


def write_world(world: SimulatedWorld, out_dir: str | os.PathLike[str]) -> None:
    """Write the log (four Parquet tables and meta.json) and truth.parquet beside it.

    Only into a folder `check_world_dir` accepts. The six files are written into a staging
    folder inside `out_dir` first and moved in only once all are written, so a failed or
    interrupted run leaves the world that was there (tables and truth never from two runs).

    Raises:
        LogFileError: `out_dir` is a file, or holds a log that was not simulated.
    """
    out_dir = check_world_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for left in out_dir.glob(".simulate-*"):  # from a run that was killed
        shutil.rmtree(left, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".simulate-", dir=out_dir))
    try:
        write_log(world.log, staging, world.meta)
        write_parquet(world.truth, staging / "truth.parquet")
        # One rename each, meta.json last: nothing is computed between them.
        for path in sorted(staging.iterdir(), key=lambda path: path.name == "meta.json"):
            os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _delay_cdf_integral(x: np.ndarray) -> np.ndarray:
    """The integral of the confirmation-delay CDF from 0 to x (days)."""
    excess = np.maximum(x - CONFIRM_DELAY_MIN_DAYS, 0.0)
    total = excess.copy()
    for weight, mean in CONFIRM_DELAY_MIX:
        total -= weight * mean * -np.expm1(-excess / mean)
    return total


# Gauss-Legendre nodes per integral; the integrands are smooth on each interval used.
_NODES = 32
# Grid step (days) of the table of P(no bad | takeover at t), shared by every account.
_TABLE_STEP_DAYS = 0.25


def _gauss(low: np.ndarray, high: np.ndarray, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre points and weights on [low, high] per element (empty if high < low)."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    high = np.maximum(high, low)
    half = (high - low)[..., None] / 2
    return (low + high)[..., None] / 2 + half * x, half * w


def _exposure(begin: np.ndarray | float, end: np.ndarray | float, limit: float) -> np.ndarray:
    """The integral over [begin, end] of P(confirmation delay <= limit - t) dt."""
    return _delay_cdf_integral(limit - np.asarray(begin)) - _delay_cdf_integral(
        limit - np.asarray(end)
    )


def _clean_ongoing(
    begun: np.ndarray, length: Delay, rate: np.ndarray, horizon: float, limit: float
) -> np.ndarray:
    """E[exp(-expected confirmed requests)] for episodes begun at `begun` <= 0, alive at 0.

    Times are days after T. The end is unknown: its law given that it is after 0.
    """
    low, high = length.support()
    # Floored to whole seconds in the truth, an end may sit a hair past the support.
    alive = np.maximum(length.survival(-begun), 1e-300)
    ends, weights = _gauss(np.maximum(begun + low, 0.0), np.minimum(begun + high, horizon), _NODES)
    density = length.density(ends - begun[:, None]) / alive[:, None]
    inside = weights * density * np.exp(-rate[:, None] * _exposure(0.0, ends, limit))
    tail = length.survival(horizon - begun) / alive * np.exp(-rate * _exposure(0.0, horizon, limit))
    return inside.sum(axis=1) + tail


def _clean_from_onset(
    onset: np.ndarray, length: Delay, rate: np.ndarray, horizon: float, limit: float
) -> np.ndarray:
    """E[exp(-expected confirmed requests)] for episodes starting at `onset` in [0, horizon]."""
    low, high = length.support()
    ends, weights = _gauss(
        np.minimum(onset + low, horizon), np.minimum(onset + high, horizon), _NODES
    )
    density = length.density(ends - onset[..., None])
    exposure = _exposure(onset[..., None], ends, limit)
    inside = (weights * density * np.exp(-rate[..., None] * exposure)).sum(axis=-1)
    tail = length.survival(horizon - onset) * np.exp(-rate * _exposure(onset, horizon, limit))
    return inside + tail


def _clean_future(anchor: np.ndarray, onset: Delay, clean_at: object, horizon: float) -> np.ndarray:
    """Average `clean_at(onset time)` over an onset that has not happened by 0.

    The onset is `anchor` + a delay of law `onset`, conditioned on being after 0; an onset
    after the horizon leaves the window clean.
    """
    low, high = onset.support()
    alive = np.maximum(onset.survival(-anchor), 1e-300)
    times, weights = _gauss(
        np.clip(anchor + low, 0.0, horizon), np.clip(anchor + high, 0.0, horizon), _NODES
    )
    density = onset.density(times - anchor[:, None]) / alive[:, None]
    inside = (weights * density * clean_at(times)).sum(axis=1)  # type: ignore[operator]
    return inside + onset.survival(horizon - anchor) / alive


def _takeover_rates() -> tuple[np.ndarray, np.ndarray]:
    """Quadrature (values, weights) for a thief's rate x confirm probability."""
    z, wz = np.polynomial.hermite_e.hermegauss(24)
    rate = np.exp(TAKEOVER_RATE_LOG[0] + TAKEOVER_RATE_LOG[1] * z)
    cap, alpha, beta = _confirm_beta(TAKEOVER)
    # Beta(alpha, beta) by Gauss-Legendre after x = 1 - (1 - u)^(1/beta), which makes the
    # density smooth at 1 where beta < 2 would make it steep.
    u, wu = _gauss(np.array(0.0), np.array(1.0), 96)
    x = 1 - (1 - u) ** (1 / beta)
    wx = wu * x ** (alpha - 1) / beta  # dx = (1 - u)^(1/beta - 1) / beta du cancels (1-x)^(beta-1)
    values = (rate[:, None] * cap * x[None, :]).ravel()
    weights = (wz[:, None] * wx[None, :]).ravel()
    return values, weights / weights.sum()


def _takeover_table(horizon: float, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """P(no bad label from a takeover at t), for t on a grid over [0, horizon]."""
    grid = np.linspace(0.0, horizon, int(round(horizon / _TABLE_STEP_DAYS)) + 1)
    values, weights = _takeover_rates()

    def clean(exposure: np.ndarray) -> np.ndarray:
        return np.exp(-exposure[..., None] * values) @ weights

    low, high = TAKEOVER_BURST.support()
    ends, end_weights = _gauss(
        np.minimum(grid + low, horizon), np.minimum(grid + high, horizon), _NODES
    )
    density = TAKEOVER_BURST.density(ends - grid[:, None])
    inside = (end_weights * density * clean(_exposure(grid[:, None], ends, limit))).sum(axis=1)
    tail = TAKEOVER_BURST.survival(horizon - grid) * clean(_exposure(grid, horizon, limit))
    return grid, inside + tail


def oracle_scores(
    truth: pd.DataFrame, as_of: object, horizon_days: int = 90, maturity_days: int = 30
) -> pd.Series:
    """The probability that each buyer is labelled bad as of a date, given what exists at T.

    It uses the buyer's type and traits (an abuser's or ring member's rate and confirmation
    probability), the registration time, and the episodes that began or ended before T
    (with a thief's rate and confirmation probability once the takeover has happened).
    Everything later is averaged over its law: an onset not yet happened over the onset
    delay given that it has not happened by T, an end not yet happened over the length
    given that it has lasted until T, and a takeover not yet happened over the constant
    hazard, the thief's rate, confirmation probability and burst length. Never the realised
    future.

    Given an episode's onset s, end e, rate r and confirmation probability p, confirmed
    requests inside the label window are a thinned Poisson count with mean
    r * p * integral over (T, T+H] within [s, e) of P(D <= T+H+M-t) dt (D the confirmation
    delay), so P(bad) = 1 - E[exp(-that mean)], the expectation over what is unknown at T;
    the buyer's own episode and the takeover are independent, so their clean
    probabilities multiply. The integrals are computed by Gauss-Legendre quadrature, exact
    to far below sampling noise. No other request is ever confirmed.

    Args:
        truth: `SimulatedWorld.truth` (or truth.parquet).
        as_of: The as-of date D; T = D 00:00 UTC.
        horizon_days: H, as for the labels.
        maturity_days: M, as for the labels.

    Returns:
        P(bad) in [0, 1], indexed by buyer_id, for every buyer in `truth`.
    """
    known_at = as_of_time(as_of)
    horizon = float(horizon_days)
    limit = float(horizon_days + maturity_days)

    def days_after_t(column: str) -> np.ndarray:
        return ((truth[column] - known_at) / pd.Timedelta(days=1)).to_numpy(
            dtype=float, na_value=np.nan
        )

    buyer_type = truth["buyer_type"].to_numpy()
    clean = np.ones(len(truth))

    # The buyer's own episode.
    begun, ended = days_after_t("abuse_start"), days_after_t("abuse_end")
    anchor = days_after_t("abuse_onset_from")
    rate = truth["abuse_rate_per_day"].to_numpy(dtype=float) * truth["confirm_prob"].to_numpy(
        dtype=float
    )
    for person, onset, length in (
        ("abuser", ABUSER_ONSET, ABUSER_CAREER),
        ("ring", RING_ONSET, RING_BURST),
    ):
        mine = buyer_type == person
        ongoing = np.flatnonzero(mine & (begun <= 0) & (ended > 0))
        clean[ongoing] = _clean_ongoing(begun[ongoing], length, rate[ongoing], horizon, limit)
        future = np.flatnonzero(mine & (begun > 0))
        future_rate = rate[future][:, None]
        clean[future] = _clean_future(
            anchor[future],
            onset,
            lambda at, r=future_rate, d=length: _clean_from_onset(at, d, r, horizon, limit),
            horizon,
        )

    # The takeover: the thief's burst if it has happened, else the hazard ahead.
    taken_at, taken_until = days_after_t("takeover_at"), days_after_t("takeover_end")
    thief_rate = truth["takeover_rate_per_day"].to_numpy(dtype=float) * truth[
        "takeover_confirm_prob"
    ].to_numpy(dtype=float)
    ongoing = np.flatnonzero((taken_at <= 0) & (taken_until > 0))
    clean[ongoing] *= _clean_ongoing(
        taken_at[ongoing], TAKEOVER_BURST, thief_rate[ongoing], horizon, limit
    )
    ahead = np.flatnonzero(~(taken_at <= 0))
    grid, table = _takeover_table(horizon, limit)
    clean[ahead] *= _clean_future(
        days_after_t("takeover_exposed_from")[ahead],
        TAKEOVER_WAIT,
        lambda at: np.interp(at, grid, table),
        horizon,
    )
    return pd.Series(
        np.clip(1.0 - clean, 0.0, 1.0),
        index=pd.Index(truth["buyer_id"], name="buyer_id"),
        name="oracle",
    )
