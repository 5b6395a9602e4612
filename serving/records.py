"""What the online store knows, as plain records: a snapshot's description, a buyer, a shop.

The decision (`serving.decision`) takes these as its inputs; the store (`serving.store`)
reads them, and a backtest or a notebook can build them from a feature table. No database is
behind them here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


@dataclass(frozen=True, slots=True)
class StoreMeta:
    """What the current snapshot is: its date, feature set and columns."""

    as_of: str
    feature_set_version: str
    feature_columns: tuple[str, ...]
    materialized_at: str
    policy_version: str
    generation: str = ""


class BuyerRecord(NamedTuple):
    """A buyer as the online store knows them (overrides applied).

    A buyer the snapshot does not know but an admin revoked has no features (`features` is
    empty) and `registered_at` NaN: they are revoked, with no history.
    """

    buyer_id: str
    registered_at: float  # epoch seconds
    order_count: int
    features: np.ndarray  # float64, in the snapshot's column order
    revoked: bool
    revoked_reason: str


class ShopRecord(NamedTuple):
    """A shop's eligibility (overrides applied) and the metrics it was decided from."""

    shop_id: str
    eligible: bool
    reasons: str
    metrics_json: str | None

    @property
    def metrics(self) -> dict:
        """The shop metrics eligibility was decided from ({} for an admin-only shop)."""
        return json.loads(self.metrics_json) if self.metrics_json else {}


class Override(NamedTuple):
    """An admin's override: a buyer revoked or restored, a shop's eligibility set by hand.

    Kept durably where decisions are recorded (the audit log) and applied to every store
    snapshot, whatever file or table the snapshot is in.
    """

    kind: str  # "buyer" (flag: revoked) or "shop" (flag: eligible)
    target: str  # the buyer_id or shop_id
    flag: bool
    reason: str
    actor: str
    at: float  # epoch seconds
