"""Features and shop metrics at many (entity, date) pairs equal the snapshot builders'."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import features
from features.history import buyer_features_at, shop_metrics_at
from features.shops import shop_metrics
from features.simulate import simulate

DAYS = ["2025-02-10", "2025-04-01", "2025-05-20"]


@pytest.fixture(scope="module")
def log() -> features.TransactionLog:
    return simulate(buyers=600, shops=12, days=150, seed=3).log


def test_buyer_features_at_pairs_equal_each_days_snapshot(log: features.TransactionLog) -> None:
    buyers = log.buyers["buyer_id"].to_numpy()
    pairs = pd.DataFrame(
        {"buyer_id": np.tile(buyers, len(DAYS)), "as_of": np.repeat(DAYS, len(buyers))}
    )
    got = buyer_features_at(log, pairs)
    for day in DAYS:
        expected = features.build_features(log, day).set_index("buyer_id")
        mine = got.loc[got["as_of"] == pd.Timestamp(day, tz="UTC")].set_index("buyer_id")
        assert sorted(mine.index) == sorted(expected.index)  # only buyers registered before T
        np.testing.assert_array_equal(
            mine.loc[expected.index, features.FEATURE_COLUMNS].to_numpy(),
            expected[features.FEATURE_COLUMNS].to_numpy(),
        )


def test_shop_metrics_at_pairs_equal_each_days_metrics(log: features.TransactionLog) -> None:
    shops = log.shops["shop_id"].to_numpy()
    pairs = pd.DataFrame(
        {"shop_id": np.tile(shops, len(DAYS)), "as_of": np.repeat(DAYS, len(shops))}
    )
    got = shop_metrics_at(log, pairs)
    for day in DAYS:
        expected = shop_metrics(log, day).set_index("shop_id")
        mine = got.loc[got["as_of"] == pd.Timestamp(day, tz="UTC")].set_index("shop_id")
        assert sorted(mine.index) == sorted(expected.index)
        for column in expected.columns:
            a = mine.loc[expected.index, column].to_numpy(float)
            b = expected[column].to_numpy(float)
            np.testing.assert_allclose(a, b, rtol=1e-12, err_msg=column)
