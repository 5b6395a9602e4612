"""Why not premium, in words: the factors, their standing among buyers, and where they show."""

from __future__ import annotations

import math
from collections.abc import Callable

import lightgbm as lgb
import numpy as np
import pytest
from fastapi.testclient import TestClient

from modelcontract import BinnedProfile, ReferenceProfile
from serving.factors import standing, top_factors
from serving.model import Champion, PathContributions, SingleRowLeaves
from tests.serving.conftest import ADMIN, COLUMNS, THRESHOLD, HintBooster, body, decide

# 101 percentiles of 0..100: the k-th percentile is k.
PERCENT = BinnedProfile(
    edges=(50.0,), shares=(0.5, 0.5, 0.0), quantiles=tuple(float(k) for k in range(101))
)
ZEROS = BinnedProfile(  # most buyers at 0, a few at 1..4
    edges=(1.0,),
    shares=(0.9, 0.1, 0.0),
    quantiles=tuple([0.0] * 91 + [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]),
)


@pytest.mark.parametrize(
    ("value", "profile", "said"),
    [
        (98.5, PERCENT, "more than 98% of buyers"),
        (1000.0, PERCENT, "more than 99% of buyers"),
        (50.0, PERCENT, ""),  # the middle says nothing
        (51.0, PERCENT, "more than 50% of buyers"),
        (2.0, PERCENT, "less than 97% of buyers"),
        (3.0, ZEROS, "more than 96% of buyers"),
        (0.0, ZEROS, ""),  # as most buyers
        (
            math.nan,
            BinnedProfile(edges=(), shares=(0.2, 0.8), missing_share=0.8),
            "as for 80% of buyers",
        ),
        (5.0, BinnedProfile(edges=(), shares=(1.0, 0.0)), ""),  # no quantiles recorded
    ],
)
def test_standing_among_buyers(value: float, profile: BinnedProfile, said: str) -> None:
    assert standing(value, profile) == said


def _profile(columns: tuple[str, ...] = COLUMNS) -> ReferenceProfile:
    return ReferenceProfile(rows=100, features=dict.fromkeys(columns, PERCENT), score=PERCENT)


def test_the_factors_are_what_raised_the_score_strongest_first() -> None:
    columns = ("refund_only_after_delivery_90d", "orders_total", "refunds_30d", "open_refunds")
    row = np.array([99.0, 3.0, 60.0, math.nan])
    contributions = np.array([0.4, -1.0, 0.9, 0.1, -2.0])  # the last: the expected value
    factors = top_factors(row, contributions, columns, _profile(columns), top=2)
    assert [f["feature"] for f in factors] == ["refunds_30d", "refund_only_after_delivery_90d"]
    assert factors[1]["sentence"] == (
        "99 refund-only requests after delivery in the last 90 days, more than 98% of buyers"
    )
    assert factors[0]["contribution"] == 0.9
    # Nothing lowered the score into the list, and a missing value is told as such.
    assert all(
        f["contribution"] > 0 for f in top_factors(row, contributions, columns, _profile(columns))
    )
    missing = top_factors(row, np.array([0, 0, 0, 0.5, 0]), columns, _profile(columns))
    assert missing == [
        {
            "feature": "open_refunds",
            "value": None,
            "contribution": 0.5,
            "sentence": "open refunds not known",
        }
    ]


def _booster(rounds: int = 30, best_iteration: int = 0) -> tuple[lgb.Booster, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 6))
    x[rng.random(x.shape) < 0.1] = np.nan  # missing values take the trees' default branch
    x[:, 5] = 1.0  # a constant: never split on
    signal = np.nan_to_num(x[:, 0]) * 2 + np.nan_to_num(x[:, 1])
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 7, "num_threads": 1},
        lgb.Dataset(x, label=(signal + rng.normal(size=600) > 0).astype(int)),
        num_boost_round=rounds,
    )
    booster.best_iteration = best_iteration
    return booster, x


@pytest.mark.parametrize("best_iteration", [0, 12])
def test_path_contributions_sum_to_the_raw_score(best_iteration: int) -> None:
    booster, x = _booster(best_iteration=best_iteration)
    explain = PathContributions(booster)
    got = np.array([explain(row) for row in x[:100]])
    np.testing.assert_allclose(got.sum(axis=1), booster.predict(x[:100], raw_score=True), atol=1e-5)
    assert np.all(got[:, 5] == 0)  # a feature no split tests gets no credit
    # The leaves are LightGBM's own.
    np.testing.assert_array_equal(
        [SingleRowLeaves(booster)(row) for row in x[:20]], booster.predict(x[:20], pred_leaf=True)
    )
    # They agree with tree SHAP on what matters most: the strongest feature, row by row.
    shap = booster.predict(x[:100], pred_contrib=True)
    same = np.argmax(np.abs(got[:, :5]), axis=1) == np.argmax(np.abs(shap[:, :5]), axis=1)
    assert same.mean() > 0.9
    with pytest.raises(ValueError, match="expected 6 features"):
        explain(np.zeros(5))


def _explaining_champion(profile: ReferenceProfile | None, explain: Callable | None) -> Champion:
    return Champion(
        "buyer-quality",
        "7",
        HintBooster(),
        THRESHOLD,
        COLUMNS,
        "test-v1",
        explain_one=explain,
        profile=profile,
    )


def _hint_contributions(row: np.ndarray) -> np.ndarray:
    return np.array([row[0] * 10, 0.2, -3.0])


def test_a_buyer_who_is_not_premium_is_told_why_and_a_premium_one_is_not(
    make_client: Callable[..., TestClient], champion_loader: Callable
) -> None:
    champion_loader(_explaining_champion(_profile(), _hint_contributions))
    client = make_client()
    refused = decide(client, body("RF-bad", buyer_id="B_BAD"))
    assert refused["buyer"]["premium"] is False
    factors = refused["buyer"]["factors"]
    assert [f["feature"] for f in factors] == ["score_hint", "orders_total"]
    assert factors[0]["value"] == 0.9 and factors[0]["contribution"] == 9.0
    approved = decide(client, body("RF-good"))
    assert approved["decision"] == "auto_approve" and "factors" not in approved["buyer"]
    # The replay answers the factors as they were first given.
    again = client.post(
        "/v1/refund-decisions",
        json=body("RF-bad", buyer_id="B_BAD"),
        headers={"Authorization": ADMIN["Authorization"]},
    )
    assert again.json()["buyer"]["factors"] == factors
    # The admin view of the buyer says the same.
    view = client.get("/v1/admin/buyers/B_BAD", headers=ADMIN).json()
    assert view["premium"] is False and view["score"] == 0.9 and view["factors"] == factors
    good = client.get("/v1/admin/buyers/B_GOOD", headers=ADMIN).json()
    assert good["premium"] is True and good.get("factors") is None


def _broken(row: np.ndarray) -> np.ndarray:
    raise RuntimeError("corrupt tree")


@pytest.mark.parametrize(
    "champion",
    [
        _explaining_champion(None, _hint_contributions),  # a version from before profiles
        _explaining_champion(_profile(), None),  # contributions unavailable
        _explaining_champion(_profile(), _broken),  # contributions failing
    ],
    ids=["no-profile", "no-contributions", "failing"],
)
def test_without_factors_the_decision_is_the_same(
    make_client: Callable[..., TestClient], champion_loader: Callable, champion: Champion
) -> None:
    champion_loader(champion)
    answer = decide(make_client(), body("RF-bad", buyer_id="B_BAD"))
    assert answer["decision"] == "manual_review" and answer["buyer"]["premium"] is False
    assert "factors" not in answer["buyer"]
