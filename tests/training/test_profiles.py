"""On every simulator profile (small worlds), no baseline beats the registered model on
validation: the search registers the family that wins there, and the hand rule does not
win either. The full-size figures per profile and seed are in docs/benchmarks.md
(benchmarks/bench_selection.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from features.simulate import simulate, write_world
from training.config import DataChecks, ModelParams, SearchParams, SnapshotParams, TrainConfig
from training.train import ORACLE, fit_and_evaluate, load_training_data

# Small worlds of 420 days (seven matured monthly dates after 90 days of history): enough bad
# buyers in every split on each profile; small-shop keeps its own size (~1% bad).
SIZES = {"default": 3_000, "small-shop": 5_000, "weak-signal": 3_000, "drifting": 4_000}
AUC_SLACK = 0.005  # the tolerance for the registered model against the best baseline


@pytest.mark.slow
@pytest.mark.parametrize("profile", list(SIZES))
def test_no_baseline_beats_the_registered_model_on_validation(profile: str, tmp_path: Path) -> None:
    shops = None if profile == "small-shop" else 150
    world = simulate(buyers=SIZES[profile], shops=shops, days=420, seed=3, profile=profile)
    write_world(world, tmp_path)
    config = TrainConfig(
        data_dir=tmp_path,
        snapshots=SnapshotParams(min_history_days=90),
        model=ModelParams(num_boost_round=80, early_stopping_rounds=20, learning_rate=0.1),
        search=SearchParams(trials=3),
        checks=DataChecks(min_train_rows=500, min_eval_rows=200, min_positives=5),
        progress=False,
    )
    data = load_training_data(config)
    evaluation = fit_and_evaluate(data.split, config)
    bad = data.split.valid["bad"].to_numpy()

    def figures(name: str) -> tuple[float, float]:
        scores = np.clip(evaluation.results[name].valid_scores, 1e-7, 1 - 1e-7)
        return float(log_loss(bad, scores, labels=[0, 1])), float(roc_auc_score(bad, scores))

    model_loss, model_auc = figures(evaluation.chosen)
    for baseline in evaluation.baselines():
        assert baseline != ORACLE
        loss, auc = figures(baseline)
        assert model_loss <= loss, f"{profile}: {baseline} has a lower validation log loss"
        assert model_auc >= auc - AUC_SLACK, (
            f"{profile}: {baseline}'s validation AUC {auc:.4f} beats the registered "
            f"{evaluation.chosen}'s {model_auc:.4f}"
        )
