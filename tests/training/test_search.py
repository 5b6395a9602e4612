"""The model search: seeded, bounded, chosen on validation log loss; a logistic winner is
registered as its document, judged by the gate and served without pickle or pandas."""

from __future__ import annotations

import dataclasses
import json

import mlflow
import numpy as np
import pandas as pd
import pytest

import features
from modelcontract import MODEL_NAME
from modelcontract.linear import LinearModel
from serving.factors import top_factors
from serving.model import load_champion
from training import registry
from training.config import ModelParams, PromoteConfig, SearchParams, TrainConfig
from training.promote import promote
from training.search import LIGHTGBM, LOGISTIC, SEARCHED, search
from training.train import fit_and_evaluate, load_training_data, log_and_register

COLUMNS = ["a", "b", "c", "d"]
BASE = ModelParams(num_boost_round=60, early_stopping_rounds=10, learning_rate=0.1, seed=5)


def _frames(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    # A purely linear signal on a log scale: the world logistic regression is right for.
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.exponential(3.0, size=(rows, len(COLUMNS))), columns=COLUMNS)
    logit = -3.5 + 1.2 * np.log1p(frame["a"]) - 0.8 * np.log1p(frame["b"])
    return frame, (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)


def test_the_search_is_seeded_bounded_and_chooses_the_lowest_validation_log_loss() -> None:
    train_x, train_y = _frames(4000, 1)
    valid_x, valid_y = _frames(2000, 2)
    budget = SearchParams(trials=4)
    first = search(train_x, train_y, valid_x, valid_y, BASE, budget, COLUMNS)
    again = search(train_x, train_y, valid_x, valid_y, BASE, budget, COLUMNS)

    assert [c.family for c in first.candidates] == [LIGHTGBM] * 4 + [LOGISTIC]
    assert first.candidates[0].params == {
        **{k: getattr(BASE, k) for k in SEARCHED},
        "best_iteration": first.candidates[0].params["best_iteration"],
    }  # the given settings are the first trial
    assert [(c.params, c.valid_log_loss) for c in first.candidates] == [
        (c.params, c.valid_log_loss) for c in again.candidates
    ]  # same data, seed and budget: the same search
    best = min(first.candidates, key=lambda c: c.valid_log_loss)
    assert first.winner == best and first.family == best.family
    # On a linear world the linear model is the better probability model, and it wins.
    assert first.family == LOGISTIC
    assert "4 LightGBM trial(s) of 4" in first.summary() and "chosen: logistic" in first.summary()
    # The seconds cap stops the search after the trial running when it passes (one at least).
    capped = search(
        train_x, train_y, valid_x, valid_y, BASE, SearchParams(trials=50, seconds=1e-3), COLUMNS
    )
    assert sum(c.family == LIGHTGBM for c in capped.candidates) == 1
    assert capped.stopped_by == "seconds"


@pytest.mark.slow
def test_a_logistic_winner_is_registered_judged_and_served(
    tracking: str, small_config: TrainConfig
) -> None:
    client = registry.connect()
    data = load_training_data(small_config)
    evaluation = fit_and_evaluate(data.split, small_config)  # no oracle: not read here
    # Whatever won on this world, register the logistic candidate: its own path end to end.
    evaluation = dataclasses.replace(evaluation, chosen=LOGISTIC)
    result = log_and_register(client, data, evaluation, small_config)

    run = client.get_run(result.run_id)
    assert run.data.params["model_family"] == LOGISTIC
    assert run.data.params["search.trials"] == "3"
    assert "search/logistic/valid_log_loss" in run.data.metrics
    assert "search/lightgbm-0/test_roc_auc" in run.data.metrics
    searched = json.loads(
        open(
            mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="search.json")
        ).read()
    )
    assert searched["criterion"] == "validation log loss" and len(searched["candidates"]) == 4
    version = client.get_model_version(MODEL_NAME, result.model_version)
    assert version.tags["model_family"] == LOGISTIC

    gate = promote(PromoteConfig())
    assert gate.verdict.label == "promoted", gate.verdict.reasons
    served = load_champion(tracking, MODEL_NAME, "champion")
    assert isinstance(served.booster, LinearModel) and served.family == LOGISTIC
    rows = data.split.test[features.FEATURE_COLUMNS].to_numpy(np.float64)
    expected = evaluation.selection.logistic.predict(data.split.test)  # type: ignore[union-attr]
    np.testing.assert_allclose(served.score(rows[:10]), expected[:10], rtol=1e-12)
    np.testing.assert_allclose(served.score(rows), expected, rtol=1e-12)  # the batch path
    # Why not premium: the linear terms, in words.
    assert served.explain_one is not None and served.profile is not None
    riskiest = rows[int(np.argmax(expected))]
    factors = top_factors(
        riskiest, served.explain_one(riskiest), served.feature_columns, served.profile
    )
    assert factors and all(f["contribution"] > 0 and f["sentence"] for f in factors)
