"""Model selection: a bounded, seeded, time-ordered search over the model family and capacity.

Every candidate is fit on the training dates and scored on the validation dates only; the
test month is never looked at here, so the test figures `train` prints stay out of time.
The candidates:

- LightGBM, its capacity and regularisation drawn by Optuna's TPE sampler (seeded with the
  model's seed). The first trial is the settings given in `ModelParams`, so the search can
  only find something at least as good on validation as the fixed model it replaced.
  Early stopping watches the same validation month (as before the search).
- Logistic regression (`LogisticBaseline`): on a small, sparse export it beat the tuned
  trees by 0.09 AUC (issue 15), so it is a candidate, not only a yardstick.

The winner is the candidate with the lowest validation log loss. Why log loss and not AUC:
the threshold policy reads the scores as calibrated probabilities of bad (premium iff
P(bad) <= threshold, chosen for a target bad rate, and the expected-loss budget sums
P(bad) x amount), so the model must be judged on its probabilities, which a proper scoring
rule does; AUC only judges the order and would let a badly calibrated model win.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import optuna
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

from training.config import ModelParams, SearchParams
from training.models import BoosterScorer, LogisticBaseline, fit_lightgbm

LIGHTGBM: Literal["lightgbm"] = "lightgbm"
LOGISTIC: Literal["logistic"] = "logistic"
_EPS = 1e-7

# What the search may change (the rest of ModelParams is kept as given).
SEARCHED = ("learning_rate", "num_leaves", "min_data_in_leaf", "feature_fraction", "lambda_l2")


@dataclass(frozen=True)
class Candidate:
    """One fitted candidate's validation figures."""

    name: str  # "lightgbm-3" (the Optuna trial number) or "logistic"
    family: str
    params: dict[str, Any]
    valid_log_loss: float
    valid_roc_auc: float
    seconds: float
    # Test figures for the record (MLflow), computed by the caller's `report`: never read
    # by the choice.
    test: dict[str, float] = field(default_factory=dict)


@dataclass
class Selection:
    """The search's outcome: the winner, the best of each family, every candidate."""

    family: str  # the winner's
    booster: lgb.Booster  # the best LightGBM (the winner when family is lightgbm)
    logistic: LogisticBaseline
    lightgbm_params: ModelParams  # the best LightGBM's settings
    candidates: list[Candidate] = field(default_factory=list)
    seconds: float = 0.0
    budget: SearchParams = field(default_factory=SearchParams)
    stopped_by: str = "trials"  # or "seconds"

    @property
    def winner(self) -> Candidate:
        """The chosen candidate (lowest validation log loss)."""
        return min(self.candidates, key=lambda c: c.valid_log_loss)

    def summary(self) -> str:
        """One line for the console: budget, trials run, winner and why."""
        trials = sum(c.family == LIGHTGBM for c in self.candidates)
        best = self.winner
        return (
            f"model search: {trials} LightGBM trial(s) of {self.budget.trials} in "
            f"{self.seconds:.1f} s (cap {self.budget.seconds:g} s, stopped by {self.stopped_by})"
            f" + logistic regression; chosen: {best.name} (validation log loss "
            f"{best.valid_log_loss:.5f}, AUC {best.valid_roc_auc:.4f})"
        )


def _figures(bad: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    clipped = np.clip(scores, _EPS, 1 - _EPS)
    return float(log_loss(bad, clipped, labels=[0, 1])), float(roc_auc_score(bad, scores))


def _suggest(trial: optuna.Trial, base: ModelParams) -> ModelParams:
    """A trial's LightGBM settings. Ranges span a few thousand rows at 1% bad (few, large
    leaves, strong L2) to 10^6 rows (many leaves): what the fixed defaults could not."""
    return base.model_copy(
        update={
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 4, 96, log=True),
            "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 10, 800, log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.4, 1.0),
            "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 100.0, log=True),
        }
    )


def search(
    train_x: pd.DataFrame,
    train_y: np.ndarray,
    valid_x: pd.DataFrame,
    valid_y: np.ndarray,
    base: ModelParams,
    budget: SearchParams,
    columns: list[str],
    report: Callable[[Callable[[pd.DataFrame], np.ndarray]], dict[str, float]] | None = None,
) -> Selection:
    """Fit the candidates on the training rows, score them on validation, pick the winner.

    Args:
        train_x, train_y: The training dates' features and labels.
        valid_x, valid_y: The validation dates' (early stopping and the choice).
        base: The LightGBM settings of the first trial; the others keep its fixed fields
            (rounds, early stopping, seed, threads).
        budget: Trials and seconds.
        columns: The feature columns, in order.
        report: Given a candidate's predict, its figures for the record (test figures,
            logged to MLflow); the choice never reads them.
    """
    record = report or (lambda predict: {})
    started = time.perf_counter()
    candidates: list[Candidate] = []
    best: dict[str, Any] = {"loss": math.inf}

    def objective(trial: optuna.Trial) -> float:
        params = _suggest(trial, base)
        began = time.perf_counter()
        booster = fit_lightgbm(train_x, train_y, valid_x, valid_y, params)
        loss, auc = _figures(valid_y, BoosterScorer(booster).predict(valid_x))
        chosen = {k: getattr(params, k) for k in SEARCHED}
        chosen["best_iteration"] = booster.current_iteration()
        candidates.append(
            Candidate(
                f"{LIGHTGBM}-{trial.number}",
                LIGHTGBM,
                chosen,
                loss,
                auc,
                time.perf_counter() - began,
                record(BoosterScorer(booster).predict),
            )
        )
        if loss < best["loss"]:
            best.update(loss=loss, booster=booster, params=params)
        return loss

    # Optuna logs every trial at INFO; the summary line says what matters.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=base.seed)
    )
    study.enqueue_trial({k: getattr(base, k) for k in SEARCHED})

    longest = [0.0]

    def within_budget(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        # Optuna's timeout is checked only before a trial starts, so the last one overran
        # the cap by a whole trial; stop when the longest trial so far would not fit.
        if trial.datetime_start is not None and trial.datetime_complete is not None:
            took = (trial.datetime_complete - trial.datetime_start).total_seconds()
            longest[0] = max(longest[0], took)
        if time.perf_counter() - started + longest[0] > budget.seconds:
            study.stop()

    study.optimize(
        objective, n_trials=budget.trials, timeout=budget.seconds, callbacks=[within_budget]
    )

    began = time.perf_counter()
    logistic = LogisticBaseline(columns, seed=base.seed).fit(train_x, train_y)
    loss, auc = _figures(valid_y, logistic.predict(valid_x))
    candidates.append(
        Candidate(
            LOGISTIC,
            LOGISTIC,
            {"C": 1.0},
            loss,
            auc,
            time.perf_counter() - began,
            record(logistic.predict),
        )
    )
    trials = sum(c.family == LIGHTGBM for c in candidates)
    selection = Selection(
        family=LIGHTGBM,
        booster=best["booster"],
        logistic=logistic,
        lightgbm_params=best["params"],
        candidates=candidates,
        seconds=time.perf_counter() - started,
        budget=budget,
        stopped_by="trials" if trials >= budget.trials else "seconds",
    )
    selection.family = selection.winner.family
    logging.getLogger(__name__).info(selection.summary())
    return selection
