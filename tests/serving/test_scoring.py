"""Scoring fails closed when the champion cannot be trusted, and maps the store's columns to the
model's."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from fastapi.testclient import TestClient

from tests.serving.conftest import (
    COLUMNS,
    DECIDER,
    URL,
    BrokenBooster,
    body,
    codes,
    decide,
    stub_champion,
)


def test_a_model_that_cannot_score_fails_closed(
    make_client: Callable[..., TestClient], champion_loader: Callable
) -> None:
    champion_loader(stub_champion(booster=BrokenBooster()))
    answer = decide(make_client(), body())
    assert (answer["decision"], codes(answer)) == ("manual_review", ["SCORE_UNAVAILABLE"])


def test_a_model_trained_on_other_features_fails_closed(
    make_client: Callable[..., TestClient], champion_loader: Callable
) -> None:
    other = stub_champion()
    object.__setattr__(other, "feature_set_version", "buyer-features-v0")
    champion_loader(other)
    assert codes(decide(make_client(), body())) == ["SCORE_UNAVAILABLE"]


class SecondColumnBooster:
    """Scores a row with its second column."""

    def predict(self, rows: np.ndarray, **_: object) -> np.ndarray:
        return rows[:, 1].copy()


def test_a_model_taking_the_store_columns_in_another_order_gets_its_own_order(
    make_client: Callable[..., TestClient], champion_loader: Callable
) -> None:
    # The store holds (score_hint, orders_total); this model takes (orders_total, score_hint)
    # and scores with its second column, the hint: 0.01, premium. Given the store's order it
    # would score 10 orders, outside [0, 1]: no score.
    reordered = stub_champion(booster=SecondColumnBooster())
    object.__setattr__(reordered, "feature_columns", tuple(reversed(COLUMNS)))
    champion_loader(reordered)
    answer = decide(make_client(), body("REORDER"))
    assert (answer["decision"], answer["buyer"]["score"]) == ("auto_approve", 0.01)


class TwoOutputBooster:
    """A model with two outputs a row (shape (n, 2)) where one score a row is expected."""

    def predict(self, rows: np.ndarray, **_: object) -> np.ndarray:
        return np.stack([rows[:, 0], rows[:, 0]], axis=1)


def test_a_model_with_several_outputs_a_row_fails_closed_not_503(
    make_client: Callable[..., TestClient], champion_loader: Callable
) -> None:
    champion_loader(stub_champion(booster=TwoOutputBooster()))
    client = make_client()
    answer = decide(client, body("TWO1"))
    assert (answer["decision"], codes(answer)) == ("manual_review", ["SCORE_UNAVAILABLE"])
    batch = client.post(f"{URL}/batch", json={"requests": [body("TWO2")]}, headers=DECIDER)
    assert codes(batch.json()["results"][0]["decision"]) == ["SCORE_UNAVAILABLE"]
