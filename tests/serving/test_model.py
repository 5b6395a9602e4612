"""The champion's fast single-row scoring gives exactly what `Booster.predict` gives."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from serving.model import PARALLEL_ROWS, Champion, SingleRowScorer, _single_row_scorer


def _rows(n: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, width)) * 10
    x[rng.random(x.shape) < 0.15] = np.nan  # missing values take the trees' default branch
    return x


def _booster(objective: str = "binary", rounds: int = 40) -> lgb.Booster:
    x = _rows(600, 6, seed=0)
    signal = np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) * 0.5
    y = (signal > 0).astype(int) if objective == "binary" else np.digitize(signal, [-5, 5])
    extra = {"num_class": 3} if objective == "multiclass" else {}
    return lgb.train(
        {"objective": objective, "verbose": -1, "num_leaves": 15, "num_threads": 1, **extra},
        lgb.Dataset(x, label=y),
        num_boost_round=rounds,
    )


def test_fast_single_row_equals_booster_predict() -> None:
    booster = _booster()
    rows = _rows(500, 6, seed=1)
    rows[0] = np.nan  # a buyer with no features at all
    scorer = SingleRowScorer(booster)
    expected = booster.predict(rows, num_threads=1)
    assert [scorer(row) for row in rows] == expected.tolist()  # bit for bit


def test_fast_single_row_uses_the_best_iteration_as_predict_does() -> None:
    booster = _booster(rounds=60)
    booster.best_iteration = 25  # as early stopping leaves it
    rows = _rows(200, 6, seed=2)
    scorer = SingleRowScorer(booster)
    assert [scorer(row) for row in rows] == booster.predict(rows).tolist()
    assert booster.predict(rows).tolist() != booster.predict(rows, num_iteration=60).tolist()


def test_fast_single_row_refuses_a_wrong_width() -> None:
    scorer = SingleRowScorer(_booster())
    with pytest.raises(ValueError, match="expected 6 features"):
        scorer(np.zeros(5))


def test_a_model_with_several_outputs_per_row_keeps_booster_predict() -> None:
    assert _single_row_scorer(_booster("multiclass", rounds=5)) is None


def test_champion_scores_one_row_fast_and_many_with_the_booster() -> None:
    booster = _booster()
    rows = _rows(50, 6, seed=3)
    champion = Champion(
        "m", "1", booster, 0.5, tuple("abcdef"), "v", score_one=SingleRowScorer(booster)
    )
    expected = booster.predict(rows, num_threads=1)
    assert champion.score(rows).tolist() == expected.tolist()
    assert champion.score(rows[7:8]).tolist() == [expected[7]]


def test_a_batch_is_scored_on_several_threads_with_the_same_results() -> None:
    booster = _booster()
    rows = _rows(PARALLEL_ROWS * 4, 6, seed=3)
    champion = Champion("m", "1", booster, 0.5, tuple("abcdef"), "", batch_threads=2)
    expected = booster.predict(rows, num_threads=1)
    assert champion.score(rows).tolist() == expected.tolist()  # bit for bit
    assert champion.score(rows[:3]).tolist() == expected[:3].tolist()  # one thread
