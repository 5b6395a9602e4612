"""Every feature can be told in words."""

from __future__ import annotations

import math

import pytest

import features
from features.describe import describe, described_features


def test_every_feature_has_a_phrase_of_its_own() -> None:
    assert described_features() == features.FEATURE_COLUMNS


@pytest.mark.parametrize(
    ("feature", "value", "phrase"),
    [
        (
            "refund_only_after_delivery_90d",
            4.0,
            "4 refund-only requests after delivery in the last 90 days",
        ),
        ("pre_ship_refund_rate_365d", 0.375, "refunds before shipment on 38% of the year's orders"),
        ("gmv_30d_cny", 1234.5, "1,234.50 CNY spent in the last 30 days"),
        ("account_age_days", 12.4, "an account 12 days old"),
        ("days_since_last_confirmed_abuse", math.nan, "no refund ever confirmed as abuse"),
        ("cancel_rate_365d", math.nan, "cancel rate 365d not known"),
        ("not_a_feature", 2.5, "not_a_feature = 2.5"),
    ],
)
def test_phrases(feature: str, value: float, phrase: str) -> None:
    assert describe(feature, value) == phrase
