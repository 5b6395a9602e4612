"""Explanations add up to the score and name the feature that drives it."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from training.explain import explain


@pytest.fixture(scope="module")
def booster_and_rows() -> tuple[lgb.Booster, pd.DataFrame]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(2000, 3)), columns=["refunds", "age", "noise"])
    label = (frame["refunds"] + rng.normal(scale=0.3, size=2000) > 1.5).astype(int)
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": 0}
    booster = lgb.train(params, lgb.Dataset(frame, label), num_boost_round=30)
    frame.insert(0, "buyer_id", [f"B{i}" for i in range(len(frame))])
    return booster, frame


def test_contributions_add_up_to_the_score(booster_and_rows) -> None:
    booster, rows = booster_and_rows
    columns = ["refunds", "age", "noise"]
    risky = rows.loc[rows["refunds"].idxmax(), "buyer_id"]
    explanation = explain(booster, rows, risky, columns, threshold=0.05)
    # the expected value (pred_contrib's last column) is the same for every row
    bias = booster.predict(rows[columns].head(1), pred_contrib=True)[0][-1]
    log_odds = bias + explanation.contributions["log_odds"].sum()
    assert np.isclose(1 / (1 + np.exp(-log_odds)), explanation.score)
    own_row = rows.loc[rows["buyer_id"] == risky, columns]
    assert np.isclose(explanation.score, booster.predict(own_row)[0])
    assert not explanation.premium
    assert explanation.contributions.iloc[0]["feature"] == "refunds"
    sentences = explanation.sentences(top=2)
    assert sentences[0].startswith(f"Buyer {risky} is not premium")
    assert "refunds = " in sentences[1] and "raises the risk" in sentences[1]


def test_an_unknown_buyer_is_an_error(booster_and_rows) -> None:
    booster, rows = booster_and_rows
    with pytest.raises(KeyError, match="B-none"):
        explain(booster, rows, "B-none", ["refunds", "age", "noise"], 0.05)


def test_several_snapshots_or_another_column_order_are_errors(booster_and_rows) -> None:
    booster, rows = booster_and_rows
    columns = ["refunds", "age", "noise"]
    two = pd.concat(
        [rows.head(1).assign(as_of="2026-01-01"), rows.head(1).assign(as_of="2026-02-01")]
    )
    with pytest.raises(ValueError, match=r"2 feature rows \['2026-01-01', '2026-02-01'\]"):
        explain(booster, two, "B0", columns, 0.05)
    with pytest.raises(ValueError, match="the model's inputs in its order"):
        explain(booster, rows, "B0", ["age", "refunds", "noise"], 0.05)
