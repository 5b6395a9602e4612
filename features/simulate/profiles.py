"""Named worlds: the default platform and worlds that look like real exports.

Each profile stands for a situation a real export brings (docs/simulator.md says which and
why each parameter moves). They exist to test robustness, never to flatter a model: the
oracle stays exact on every one, since each changes only laws the oracle is told of (the
profile is recorded in the truth) or what abuse looks like in the log, never how likely a
buyer's requests are to be confirmed.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from features.simulate.params import (
    ABUSE_DELIVERED,
    ABUSE_NOT_RECEIVED,
    ABUSE_RETURN,
    BUYER_TRAITS,
    CATEGORIES,
    DEFECT,
    LOST,
    OUTCOME_PROBS,
    RETURN,
    WorldParams,
)

# The truth's column naming the profile; absent in the default world's truth (as in every
# truth written before profiles existed), so the default world's files stay as they were.
PROFILE_COLUMN = "profile"


@dataclass(frozen=True)
class Profile:
    """A named world: its sizes (overridable one by one) and its laws.

    Attributes:
        name: As `--profile` takes it.
        stands_for: The real situation it imitates, in one line.
        buyers: Default number of buyer accounts.
        shops: Default number of shops.
        days: Default length of the export.
        params: The laws and shares.
    """

    name: str
    stands_for: str
    buyers: int
    shops: int
    days: int
    params: WorldParams


class UnknownProfileError(ValueError):
    """A profile name that is not one of PROFILES."""


def _small_shop() -> WorldParams:
    ordinary, heavy, abuser, ring = BUYER_TRAITS
    # One apparel shop: buyers place a fraction of their orders here, rarely take an
    # unshipped order to after-sales (they cancel it), and return often. Abusers shop as
    # ordinary buyers do: in one shop there is little to tell them by.
    apparel_only = tuple(c._replace(shop_share=float(c.name == "apparel")) for c in CATEGORIES)
    shopper = ordinary._replace(
        order_rate_mean=0.02,
        cancel_beta=(0.3, 40),
        return_beta=(2.0, 11),
        defect_beta=(0.5, 80),
        impatience=0.02,
    )
    return WorldParams(
        buyer_type_shares=(0.882, 0.10, 0.014, 0.004),
        categories=apparel_only,
        traits=(
            shopper,
            heavy._replace(
                order_rate_mean=0.035,
                cancel_beta=(0.4, 16),
                return_beta=(4.0, 8),
                defect_beta=(0.8, 40),
                impatience=0.04,
            ),
            shopper._replace(price_shift=abuser.price_shift),
            ring._replace(order_rate_mean=0.05, cancel_beta=(0.5, 20), impatience=0.02),
        ),
        # Abuse in a clothes shop is mostly a return of something else, or of worn goods.
        abuse_class_mix=(0.12, 0.06, 0.82, 0.0),
    )


def _weak_signal() -> WorldParams:
    ordinary, heavy, abuser, ring = BUYER_TRAITS
    # Heavy refunders who return and claim after delivery (few cancels before shipment),
    # as often as an abuser's honest requests and abusive claims add up to.
    heavy = heavy._replace(
        cancel_beta=(1.5, 25), return_beta=(4.0, 12), defect_beta=(2.5, 20), impatience=0.15
    )
    outcomes = list(OUTCOME_PROBS)
    # Merchants settle abusive claims as they settle the honest claims they imitate.
    imitated = ((ABUSE_DELIVERED, DEFECT), (ABUSE_NOT_RECEIVED, LOST), (ABUSE_RETURN, RETURN))
    for abusive, honest in imitated:
        outcomes[abusive] = OUTCOME_PROBS[honest]
    return WorldParams(
        buyer_type_shares=(0.715, 0.18, 0.065, 0.04),
        traits=(ordinary, heavy, abuser._replace(price_shift=0.0), ring),
        outcome_probs=tuple(outcomes),
        abuse_class_mix=(0.35, 0.10, 0.55, 0.0),
        abuse_partial_share=0.6,
        abuse_price_shift=0.0,
        abuse_shops_by_appeal=False,
        abusers_build_record=False,
    )


def _drifting() -> WorldParams:
    return WorldParams(
        buyer_type_shares=(0.68, 0.10, 0.18, 0.04),
        abuse_growth=8.0,
        # From claims after delivery to the pre-shipment exploit, as word of it spreads.
        late_abuse_class_mix=(0.15, 0.10, 0.10, 0.65),
    )


def _profiles() -> dict[str, Profile]:
    profiles = (
        Profile(
            "default",
            "a large platform: many shops, a few percent of buyers abusive, rich signal",
            20_000,
            500,
            540,
            WorldParams(),
        ),
        Profile(
            "small-shop",
            "one shop's own export: ~5,000 buyers, ~1% bad, nearly all returns",
            5_000,
            1,
            540,
            _small_shop(),
        ),
        Profile(
            "weak-signal",
            "abusers who shop and claim like heavy honest refunders",
            20_000,
            500,
            540,
            _weak_signal(),
        ),
        Profile(
            "drifting",
            "abuse grows and moves to the pre-shipment exploit over the export",
            20_000,
            500,
            540,
            _drifting(),
        ),
    )
    return {profile.name: profile for profile in profiles}


PROFILES = _profiles()


def get_profile(name: str) -> Profile:
    """The profile called `name`.

    Raises:
        UnknownProfileError: No profile has that name (the message lists those there are).
    """
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(PROFILES)
        raise UnknownProfileError(f"unknown profile {name!r}; known profiles: {known}") from None


def profile_of(truth: pd.DataFrame) -> Profile:
    """The profile a truth table was simulated under (default when it names none).

    Raises:
        UnknownProfileError: It names a profile that does not exist, or several.
    """
    if PROFILE_COLUMN not in truth.columns:
        return PROFILES["default"]
    names = truth[PROFILE_COLUMN].dropna().unique().tolist()
    if len(names) != 1:
        raise UnknownProfileError(f"the truth names {len(names)} profiles ({names}); expected one")
    return get_profile(str(names[0]))
