"""The world's vocabularies (buyer, shop and request types, categories, outcomes) and
`WorldParams`, the laws and shares a world is drawn from.

The vocabularies are fixed: the generators and the oracle index arrays by them. The
parameters are what a profile may change; their defaults are the default world's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np

from features.log import OUTCOMES, REFUND_KINDS
from features.simulate.laws import ConfirmationLaw, Delay

# Hidden buyer types (traits of the person behind the account). An account takeover is not
# a type: it is an event that can happen to any account.
BUYER_TYPES = ("ordinary", "heavy_refunder", "abuser", "ring")
ORDINARY, HEAVY, ABUSER, RING = range(len(BUYER_TYPES))
# The abusive episodes; the thief of a taken-over account has its own confirmation mean.
TAKEOVER = len(BUYER_TYPES)

SHOP_TYPES = ("good", "slow_shipper", "ships_before_tracking")
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
PRE_SHIPMENT_CUSTOM, ABUSE_PRE_SHIPMENT = 7, 8
REQUEST_CLASSES = (
    "pre_shipment",
    "return",
    "defect",
    "lost_parcel",
    "abuse_after_delivery",
    "abuse_not_received",
    "abuse_return",
    "pre_shipment_custom",
    "abuse_pre_shipment",
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
        _REFUND_ONLY,
    ]
)
# An abusive pre-shipment request is the exploit the policy names: refund-only asked after
# the parcel left but before its tracking number is entered, so the order shows unshipped.
ABUSE_CLASSES = (ABUSE_DELIVERED, ABUSE_NOT_RECEIVED, ABUSE_RETURN, ABUSE_PRE_SHIPMENT)
# Requests filed while the order shows unshipped (settled quickly when refused).
PRE_SHIPMENT_CLASSES = (PRE_SHIPMENT, PRE_SHIPMENT_CUSTOM, ABUSE_PRE_SHIPMENT)
# P(outcome | class), columns in the order of features.log.OUTCOMES: approved, auto_approved,
# rejected, withdrawn, arbitrated_buyer_wins, arbitrated_merchant_wins.
OUTCOME_PROBS = (
    (0.78, 0.12, 0.04, 0.06, 0.00, 0.00),  # pre-shipment cancel
    (0.80, 0.03, 0.05, 0.07, 0.03, 0.02),  # honest return after delivery
    (0.66, 0.04, 0.12, 0.08, 0.06, 0.04),  # honest refund-only for a defect (often partial)
    (0.70, 0.08, 0.05, 0.02, 0.13, 0.02),  # parcel really lost
    (0.40, 0.05, 0.17, 0.06, 0.14, 0.18),  # abuse: refund-only after receiving the goods
    (0.38, 0.07, 0.15, 0.05, 0.17, 0.18),  # abuse: "not received" while in transit
    (0.55, 0.05, 0.12, 0.05, 0.10, 0.13),  # abuse: return of a swapped or empty parcel
    (0.45, 0.05, 0.40, 0.10, 0.00, 0.00),  # pre-shipment cancel of custom goods
    (0.70, 0.18, 0.06, 0.02, 0.02, 0.02),  # abuse: refund-only before the tracking number
)
APPROVED, AUTO_APPROVED, REJECTED, WITHDRAWN, ARB_BUYER, ARB_MERCHANT = range(len(OUTCOMES))
BUYER_GETS_MONEY = np.array([True, True, False, False, True, False])
# Mean days a merchant takes to approve, per class (a return waits for the parcel back).
APPROVE_MEAN_DAYS = np.array([0.2, 5.0, 1.0, 1.5, 1.5, 1.5, 5.0, 0.3, 0.2])
AUTO_APPROVE_TIMEOUT_DAYS = np.array([2.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 2.0, 2.0])
ARBITRATION_MIN_DAYS = 5.0
# Risk review tilts confirmation towards requests the merchant fought and won (relative
# weights by outcome, normalised per class).
CONFIRM_OUTCOME_WEIGHT = np.array([0.85, 0.85, 1.2, 0.9, 0.95, 1.3])

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

# The default world's episode laws. Abusers build a record from activation (young accounts
# mostly), then abuse for a while; rings age their accounts for days to weeks after sign-up,
# then burst; a takeover strikes at a constant hazard once an account has a month of
# history, and the thief bursts until the owner recovers the account.
ABUSER_ONSET = Delay("erlang", 2, 60.0)
ABUSER_CAREER = Delay("exponential", 540.0)
RING_ONSET = Delay("uniform", 2.0, 45.0)
RING_BURST = Delay("uniform", 7.0, 40.0)
TAKEOVER_WAIT = Delay("exponential", 18_000.0)  # 1 / hazard per day: about 2% a year
TAKEOVER_BURST = Delay("uniform", 2.0, 14.0)


class BuyerTraits(NamedTuple):
    """A buyer type's shopping habits: the laws each buyer's own habits are drawn from.

    Attributes:
        order_rate_mean: Mean orders per day (Gamma, shape 1.3) while active.
        cancel_beta: Beta(a, b) of the share of orders cancelled on a change of mind.
        return_beta: Beta(a, b) of the share of delivered orders returned.
        defect_beta: Beta(a, b) of the share of delivered orders claimed as defective.
        impatience: Share of orders the buyer would cancel if it waited long to ship.
        price_shift: Shift of the log price the buyer pays (taste).
    """

    order_rate_mean: float
    cancel_beta: tuple[float, float]
    return_beta: tuple[float, float]
    defect_beta: tuple[float, float]
    impatience: float
    price_shift: float


BUYER_TRAITS = (
    BuyerTraits(0.05, (1.2, 35), (1.2, 28), (1.0, 80), 0.15, 0.0),  # ordinary
    BuyerTraits(0.08, (4.0, 8), (3.0, 14), (1.2, 40), 0.3, 0.0),  # heavy refunder
    BuyerTraits(0.05, (1.5, 25), (1.5, 22), (1.5, 40), 0.15, 0.1),  # abuser
    BuyerTraits(0.15, (3.0, 7), (1.0, 15), (1.0, 30), 0.15, -0.1),  # ring
)


@dataclass(frozen=True)
class WorldParams:
    """The shares and laws a world is drawn from; the defaults are the default world's.

    Attributes:
        buyer_type_shares: Of every account ever registered, dormant ones included: with
            the defaults about 4-5% of the accounts registered before a monthly date have a
            request confirmed as abuse in the next quarter (an abuser is in career for a
            while, not for ever; rings are throwaway accounts).
        shop_type_shares: Of the shops, per SHOP_TYPES.
        categories: The categories (names fixed, in CATEGORY_NAMES' order).
        traits: Per buyer type, the laws of its shopping habits.
        outcome_probs: P(outcome | request class), rows of REQUEST_CLASSES.
        abuse_class_mix: P(request class) of an abusive request, over ABUSE_CLASSES (at the
            start of the export when `late_abuse_class_mix` is set).
        late_abuse_class_mix: None, or the mix at the end of the export: the mix of a
            request at time t moves linearly from `abuse_class_mix` to it.
        abuse_partial_share: Of refund-only claims after delivery, those for part of the
            amount.
        abuse_price_shift: Added to an abuser's log price on the orders placed to claim.
        abuse_shops_by_appeal: Abusive claims go to shops by their category's abuse appeal
            (else by popularity, as normal shopping does).
        abusers_build_record: Abusers shop cheap and quick from activation to their onset
            (else they shop normally from activation).
        abuse_growth: g, how much more abuse joins at the end of the export than at its
            start, linearly in between: the share of abusers among accounts registered at
            the end over that among accounts registered at the start or before
            (`buyer_type_shares` holds the larger of the two), and the rate at which ring
            campaigns start. 1: no change.
        confirm_mean: (episode, mean confirmation probability) per abusive episode.
        confirm_concentration: Of the Beta law of an episode's confirmation probability.
        confirm_delay_min_days: The shortest confirmation delay.
        confirm_delay_mix: A mix of quick (days) and slow (weeks) reviews after the minimum:
            (weight, mean days) of its exponential parts.
        pre_start_registered_share: Of the accounts, registered before the export begins.
        pre_start_max_days: How long before the export they may have registered.
        shops_open_before_start: Share of shops open before the export begins.
        abuser_onset: From activation to an abuser's first abusive request.
        abuser_career: How long an abuser abuses.
        abuser_rate_log: (mean, sd) of log abusive requests per day: from an occasional
            claim every few months to several a week.
        ring_onset: From sign-up to a ring member's burst.
        ring_burst: How long a ring member bursts.
        ring_rate_log: (mean, sd) of a campaign's log rate per member-day: a ring's campaign
            has its own intensity (set by whoever runs it).
        ring_member_rate_sd: sd of a member's log rate around the campaign's.
        takeover_min_history_days: An account is exposed to takeover after this long.
        takeover_wait: From exposure to takeover (at most one per account).
        takeover_burst: How long a thief holds the account.
        takeover_rate_log: (mean, sd) of a thief's log abusive requests per day.
        record_rate_mean: Orders per day while building a record.
        welcome_share: Of honest accounts registered during the export, shopping first in a
            welcome burst.
        welcome_days_mean: How long a welcome burst lasts (exponential mean).
        welcome_rate_mean: Orders per day in a welcome burst.
        thief_rate_log: (mean, sd) of a thief's own log purchases per day.
    """

    buyer_type_shares: tuple[float, ...] = (0.795, 0.10, 0.065, 0.04)
    shop_type_shares: tuple[float, ...] = (0.75, 0.15, 0.10)
    categories: tuple[Category, ...] = CATEGORIES
    traits: tuple[BuyerTraits, ...] = BUYER_TRAITS
    outcome_probs: tuple[tuple[float, ...], ...] = OUTCOME_PROBS
    abuse_class_mix: tuple[float, ...] = (0.6, 0.25, 0.15, 0.0)
    late_abuse_class_mix: tuple[float, ...] | None = None
    abuse_partial_share: float = 0.15
    abuse_price_shift: float = 0.15
    abuse_shops_by_appeal: bool = True
    abusers_build_record: bool = True
    abuse_growth: float = 1.0
    confirm_mean: tuple[tuple[int, float], ...] = ((ABUSER, 0.55), (TAKEOVER, 0.62), (RING, 0.66))
    confirm_concentration: float = 8.0
    confirm_delay_min_days: float = 1.0
    confirm_delay_mix: tuple[tuple[float, float], ...] = ((0.55, 4.0), (0.45, 21.0))
    pre_start_registered_share: float = 0.25
    pre_start_max_days: float = 1000.0
    shops_open_before_start: float = 0.85
    abuser_onset: Delay = ABUSER_ONSET
    abuser_career: Delay = ABUSER_CAREER
    abuser_rate_log: tuple[float, float] = (math.log(1 / 28), 0.9)
    ring_onset: Delay = RING_ONSET
    ring_burst: Delay = RING_BURST
    ring_rate_log: tuple[float, float] = (math.log(0.2), 0.45)
    ring_member_rate_sd: float = 0.25
    takeover_min_history_days: float = 30.0
    takeover_wait: Delay = TAKEOVER_WAIT
    takeover_burst: Delay = TAKEOVER_BURST
    takeover_rate_log: tuple[float, float] = (math.log(0.5), 0.5)
    record_rate_mean: float = 0.2
    welcome_share: float = 0.3
    welcome_days_mean: float = 25.0
    welcome_rate_mean: float = 0.15
    thief_rate_log: tuple[float, float] = (math.log(0.8), 0.4)

    def __post_init__(self) -> None:
        """Refuse parameters no world can be drawn from.

        Raises:
            ValueError: A share list of the wrong length or not summing to 1, a category
                list that is not CATEGORY_NAMES, a growth that is not positive, or a mean
                confirmation probability the outcome tilt cannot reach.
        """
        mixes = [
            ("buyer_type_shares", self.buyer_type_shares, len(BUYER_TYPES)),
            ("shop_type_shares", self.shop_type_shares, len(SHOP_TYPES)),
            ("abuse_class_mix", self.abuse_class_mix, len(ABUSE_CLASSES)),
        ]
        if self.late_abuse_class_mix is not None:
            mixes.append(("late_abuse_class_mix", self.late_abuse_class_mix, len(ABUSE_CLASSES)))
        for name, shares, size in mixes:
            if len(shares) != size or min(shares) < 0 or not math.isclose(sum(shares), 1.0):
                raise ValueError(f"{name} must be {size} shares >= 0 summing to 1: {shares}")
        if tuple(c.name for c in self.categories) != CATEGORY_NAMES:
            raise ValueError(f"categories must be {CATEGORY_NAMES}, in that order")
        if self.abuse_growth <= 0:
            raise ValueError("abuse_growth must be positive")
        cap = self.confirmation().cap
        for episode, mean in self.confirm_mean:
            if not 0 < mean < cap:
                raise ValueError(
                    f"confirm_mean {mean} of episode {episode} is not in (0, {cap:.3f})"
                )

    def outcome_table(self) -> np.ndarray:
        """`outcome_probs` as an array: rows of request classes, columns of OUTCOMES."""
        return np.array(self.outcome_probs)

    def confirmation(self) -> ConfirmationLaw:
        """The confirmation law of the abuse classes this world files."""
        return ConfirmationLaw.build(
            self.outcome_table(),
            self.abuse_classes_filed(),
            CONFIRM_OUTCOME_WEIGHT,
            self.confirm_concentration,
            self.confirm_delay_min_days,
            self.confirm_delay_mix,
        )

    def abuse_classes_filed(self) -> tuple[int, ...]:
        """The abuse classes this world's abusive requests may be filed as."""
        mixes = [self.abuse_class_mix, self.late_abuse_class_mix or self.abuse_class_mix]
        return tuple(c for i, c in enumerate(ABUSE_CLASSES) if any(mix[i] > 0 for mix in mixes))

    def confirm_mean_of(self, episode: int) -> float:
        """The mean confirmation probability of an episode kind (ABUSER, RING, TAKEOVER)."""
        return dict(self.confirm_mean)[episode]

    def trait(self, name: str) -> np.ndarray:
        """One trait per buyer type, as an array indexed by type."""
        return np.array([getattr(traits, name) for traits in self.traits])

    def describe(self, buyers: int, shops: int, days: int) -> dict:
        """The parameters as meta.json records them."""
        return {
            "buyers": buyers,
            "shops": shops,
            "days": days,
            "buyer_type_shares": dict(zip(BUYER_TYPES, self.buyer_type_shares, strict=True)),
            "shop_type_shares": dict(zip(SHOP_TYPES, self.shop_type_shares, strict=True)),
            "categories": [c._asdict() for c in self.categories],
            "confirm_mean": {(BUYER_TYPES + ("takeover",))[t]: p for t, p in self.confirm_mean},
            "confirm_delay_min_days": self.confirm_delay_min_days,
            "confirm_delay_mix": [list(part) for part in self.confirm_delay_mix],
            "pre_start_registered_share": self.pre_start_registered_share,
            "abuser_onset": self.abuser_onset.as_dict(),
            "abuser_career": self.abuser_career.as_dict(),
            "abuser_rate_log_mean_sd": list(self.abuser_rate_log),
            "ring_onset": self.ring_onset.as_dict(),
            "ring_burst": self.ring_burst.as_dict(),
            "ring_campaign_rate_log_mean_sd": list(self.ring_rate_log),
            "ring_member_rate_log_sd": self.ring_member_rate_sd,
            "takeover_hazard_per_day": 1.0 / self.takeover_wait.a,
            "takeover_min_history_days": self.takeover_min_history_days,
            "takeover_burst": self.takeover_burst.as_dict(),
            "record_rate_mean": self.record_rate_mean,
            "welcome_share": self.welcome_share,
        }

    def changes_from_default(self) -> dict:
        """The parameters whose value differs from the default world's, as meta.json records
        them (named tuples and laws as objects, tuples as lists)."""
        default = WorldParams()
        return {
            f.name: _plain(getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }


def _plain(value: object) -> object:
    """A parameter's value as JSON can hold it."""
    if isinstance(value, Delay):
        return value.as_dict()
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {key: _plain(item) for key, item in value._asdict().items()}
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value
