"""The simulator's records: columns of equal length, one element per shop, buyer, shopping
segment, abusive episode, order or request.

Times are float days since the start of the export (NaN: never, or not yet); types,
categories, request classes and outcomes are indices into the vocabularies of `params`;
shops, buyers and orders are referred to by position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Self

import numpy as np


class _Columns:
    """Row-wise operations on a dataclass whose fields are equal-length arrays."""

    def take(self, index: np.ndarray) -> Self:
        """The rows at `index` (positions or a mask), in that order."""
        return type(self)(**{name: getattr(self, name)[index] for name in _names(self)})

    @classmethod
    def concat(cls, parts: Sequence[Self]) -> Self:
        """The rows of every part, one part after the other."""
        return cls(
            **{name: np.concatenate([getattr(p, name) for p in parts]) for name in _names(cls)}
        )


def _names(record: Any) -> list[str]:
    return [f.name for f in fields(record)]


@dataclass(frozen=True)
class Shops:
    """The shops, and how buyers choose among them.

    Attributes:
        shop_type: Index into SHOP_TYPES.
        category: The shop's own category (index into CATEGORIES).
        opened: When it opened (negative: before the export).
        old: Open before the export began.
        popularity: Share of normal shopping it attracts (sums to 1).
        segment_weights: Shop-choice weights per segment kind (NORMAL, RECORD, WELCOME,
            THIEF), shape (4, shops).
        abuse_weights: Shop-choice weights of abusive claims.
    """

    shop_type: np.ndarray
    category: np.ndarray
    opened: np.ndarray
    old: np.ndarray
    popularity: np.ndarray
    segment_weights: np.ndarray
    abuse_weights: np.ndarray


@dataclass(frozen=True)
class Buyers:
    """The accounts, their habits and their hidden abuse (NaN where none).

    Attributes:
        buyer_type: Index into BUYER_TYPES.
        registered: Sign-up (negative: before the export).
        active_from: When the account can first order in the export.
        active_until: When normal shopping stops (churn; a ring member after its burst).
        order_rate: Normal orders per day.
        cancel_share, return_share, defect_share, impatience: Refund propensities.
        price_shift: Log price taste.
        ring_id: The ring (-1 if none).
        ring_shops: The two shared shops of each ring, shape (rings, 2).
        onset_from: The buyer's own abuse onset is drawn after this (abusers, rings).
        abuse_start, abuse_end, abuse_rate, confirm_prob: The buyer's own abuse episode
            (rate 0 for honest buyers).
        exposed_from: The takeover hazard applies from then.
        takeover_at, takeover_end, takeover_rate, takeover_confirm: The takeover, if one
            happens before the end of the export.
    """

    buyer_type: np.ndarray
    registered: np.ndarray
    active_from: np.ndarray
    active_until: np.ndarray
    order_rate: np.ndarray
    cancel_share: np.ndarray
    return_share: np.ndarray
    defect_share: np.ndarray
    impatience: np.ndarray
    price_shift: np.ndarray
    ring_id: np.ndarray
    ring_shops: np.ndarray
    onset_from: np.ndarray
    abuse_start: np.ndarray
    abuse_end: np.ndarray
    abuse_rate: np.ndarray
    confirm_prob: np.ndarray
    exposed_from: np.ndarray
    takeover_at: np.ndarray
    takeover_end: np.ndarray
    takeover_rate: np.ndarray
    takeover_confirm: np.ndarray


@dataclass(frozen=True)
class Segments(_Columns):
    """Spells of shopping: who shops when, how fast, how, and at which favourite shops.

    Attributes:
        kind: NORMAL, RECORD, WELCOME or THIEF.
        buyer: The buyer (position).
        begin, end: The spell.
        rate: Orders per day in it.
        favourites: FAVOURITES shop slots, shape (segments, FAVOURITES).
        favourite_share: Share of its orders at the favourites.
    """

    kind: np.ndarray
    buyer: np.ndarray
    begin: np.ndarray
    end: np.ndarray
    rate: np.ndarray
    favourites: np.ndarray
    favourite_share: np.ndarray


@dataclass(frozen=True)
class Episodes(_Columns):
    """Abusive episodes: the buyer's own (abusers, rings) and the takeovers.

    Attributes:
        buyer: The account (position).
        kind: ABUSER, RING or TAKEOVER.
        begin, end: The episode.
        rate: Abusive requests per day inside it.
        confirm_prob: Each request's mean confirmation probability.
        orders_from: Orders for the requests are placed after this (the account exists,
            or the theft happened).
    """

    buyer: np.ndarray
    kind: np.ndarray
    begin: np.ndarray
    end: np.ndarray
    rate: np.ndarray
    confirm_prob: np.ndarray
    orders_from: np.ndarray


@dataclass(frozen=True)
class Orders(_Columns):
    """Orders and their lifecycle.

    Attributes:
        buyer, shop: Positions.
        category: Index into CATEGORIES.
        is_virtual, is_custom: Flags.
        paid_fen: Amount paid.
        paid, shipped, delivered, completed, cancelled: Times (shipped: tracking entered).
    """

    buyer: np.ndarray
    shop: np.ndarray
    category: np.ndarray
    is_virtual: np.ndarray
    is_custom: np.ndarray
    paid_fen: np.ndarray
    paid: np.ndarray
    shipped: np.ndarray
    delivered: np.ndarray
    completed: np.ndarray
    cancelled: np.ndarray


@dataclass(frozen=True)
class Requests(_Columns):
    """After-sales requests.

    Attributes:
        order: The order (position in the `Orders` they were made with).
        cls: Index into REQUEST_CLASSES.
        requested, resolved, confirmed: Times (confirmed: abuse confirmed, NaN if never).
        amount: Amount asked, in fen.
        outcome: Index into OUTCOMES.
    """

    order: np.ndarray
    cls: np.ndarray
    requested: np.ndarray
    amount: np.ndarray
    resolved: np.ndarray
    outcome: np.ndarray
    confirmed: np.ndarray
