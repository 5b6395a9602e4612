"""Training: snapshots -> model search and baselines -> out-of-time evaluation -> MLflow.

The pure core is `fit_and_evaluate` (a Split in, fitted scorers and figures out); `train`
adds the edges: reading the data directory and logging and registering with MLflow.
A notebook can call `load_training_data`, `fit_and_evaluate` and stop there.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature

import features
from features.log import TransactionLog
from features.simulate import oracle_scores
from modelcontract import CHALLENGER, PROFILE_ARTIFACT, ModelVersionTags
from modelcontract.artifact import LINEAR_DATA, LINEAR_FLAVOUR
from modelcontract.linear import LINEAR_FORMAT, LinearModel
from training import registry
from training.config import TrainConfig
from training.errors import TrainingDataError
from training.evaluate import PremiumCut, choose_threshold, score_metrics
from training.matrix import read_matrix
from training.models import BASELINE_ARTIFACTS, BoosterScorer, HandRule
from training.plots import (
    calibration_figure,
    coverage_figure,
    roc_pr_figure,
    shap_summary_figure,
    shap_values,
)
from training.reference import reference_profile
from training.search import LIGHTGBM, LOGISTIC, Selection, search
from training.snapshots import Split, build_snapshots, snapshot_dates, split_by_time

MODEL = LIGHTGBM  # the LightGBM family's row (the search's best LightGBM)
HAND_RULE = "hand_rule"
ORACLE = "oracle"
# The families the search chooses between; the chosen one is registered (Evaluation.chosen).
FAMILIES = (LIGHTGBM, LOGISTIC)
TABLE_METRICS = (
    "roc_auc",
    "pr_auc",
    "brier",
    "calibration_error",
    "premium_coverage",
    "premium_bad_rate",
)
_SHAP_ROWS = 5000

# rows (buyer_id, as_of) -> P(bad) from the simulator's hidden truth
OracleFn = Callable[[pd.DataFrame], np.ndarray]


@dataclass(frozen=True)
class TrainingData:
    """The labelled snapshots of one data directory, split by time."""

    data_dir: Path
    fingerprint: str
    split: Split
    oracle: OracleFn | None


@dataclass(frozen=True)
class ScorerResult:
    """One scorer's threshold (chosen on validation) and its figures on test."""

    cut: PremiumCut
    valid_scores: np.ndarray
    test_scores: np.ndarray
    metrics: dict[str, float]


@dataclass(frozen=True)
class Evaluation:
    """The search's winner, the baselines and how each did out of time.

    `results` holds the best LightGBM (`MODEL`), logistic regression (a candidate and a
    baseline), the hand rule and the oracle when known; `chosen` names the family registered.
    """

    booster: lgb.Booster  # the search's best LightGBM
    feature_columns: list[str]
    results: dict[str, ScorerResult]
    target_bad_rate: float
    selection: Selection | None = None
    chosen: str = MODEL
    hand_rule: HandRule | None = None

    @property
    def model(self) -> ScorerResult:
        """The registered (chosen) model's result."""
        return self.results[self.chosen]

    @property
    def registered_model(self) -> lgb.Booster | LinearModel:
        """The model as registered and served: the Booster, or the logistic regression's
        document (both `predict` a NumPy matrix in `feature_columns` order)."""
        if self.chosen == LOGISTIC and self.selection is not None:
            return LinearModel(self.selection.logistic.to_spec())
        return self.booster

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """P(bad) from the registered model."""
        if self.chosen == LOGISTIC and self.selection is not None:
            return self.selection.logistic.predict(frame)
        return BoosterScorer(self.booster).predict(frame)

    def baselines(self) -> list[str]:
        """The scorers the registered model must not lose to: the other family, the hand rule
        (the oracle is a ceiling, not a baseline)."""
        return [name for name in self.results if name not in (self.chosen, ORACLE)]

    def table(self) -> pd.DataFrame:
        """Test figures, one row per scorer (model, baselines, oracle when known)."""
        rows = {
            name: {**{m: r.metrics[m] for m in TABLE_METRICS}, "threshold": r.cut.threshold}
            for name, r in self.results.items()
        }
        return pd.DataFrame.from_dict(rows, orient="index")


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    run_id: str
    model_version: str
    evaluation: Evaluation
    data_window: str
    fingerprint: str


def fingerprint(data_dir: Path) -> str:
    """The hash of the input tables (the project's one definition: features.io)."""
    return features.fingerprint(data_dir)


def oracle_from_truth(data_dir: Path, horizon_days: int, maturity_days: int) -> OracleFn | None:
    """The simulator's true P(bad), when the data directory holds truth.parquet."""
    truth_path = data_dir / "truth.parquet"
    if not truth_path.is_file():
        return None
    truth = pd.read_parquet(truth_path)

    def oracle(rows: pd.DataFrame) -> np.ndarray:
        scores = np.full(len(rows), np.nan)
        for as_of, index in rows.groupby("as_of").indices.items():
            by_buyer = oracle_scores(truth, as_of, horizon_days, maturity_days)
            scores[index] = rows["buyer_id"].iloc[index].map(by_buyer).to_numpy(np.float64)
        return scores

    return oracle


def load_training_data(config: TrainConfig, log: TransactionLog | None = None) -> TrainingData:
    """Read the data directory, build labelled snapshots and split them by time.

    Raises:
        features.LogFileError, features.LogValidationError: The directory is not a valid log.
        TrainingDataError: Too few matured dates, rows or bad buyers.
    """
    data_dir = Path(config.data_dir)
    # Taken first: an export landing while the log is read must not be the one on record.
    data_fingerprint = fingerprint(data_dir) if data_dir.is_dir() else ""
    params = config.snapshots
    if config.matrix_dir is not None:  # built by an engine (a cluster): only read here
        snapshots, meta = read_matrix(config.matrix_dir, params, data_fingerprint)
        data_fingerprint = data_fingerprint or meta.get("data_fingerprint", "")
    else:
        log = log if log is not None else features.load_log(data_dir)
        dates = snapshot_dates(log, params)
        if not dates:
            raise TrainingDataError(
                f"{data_dir}: no as-of date has both {params.min_history_days} days of history "
                f"and a matured label ({params.horizon_days}+{params.maturity_days} days) in "
                "the log"
            )
        snapshots = build_snapshots(log, dates, params, progress=config.progress)
    try:
        split = split_by_time(snapshots, params, config.checks)
    except TrainingDataError as exc:
        raise TrainingDataError(f"{data_dir}: {exc}") from exc
    oracle = oracle_from_truth(data_dir, params.horizon_days, params.maturity_days)
    return TrainingData(data_dir.resolve(), data_fingerprint, split, oracle)


def _result(
    predict: Callable[[pd.DataFrame], np.ndarray], split: Split, target_bad_rate: float
) -> ScorerResult:
    valid_scores = predict(split.valid)
    test_scores = predict(split.test)
    cut = choose_threshold(valid_scores, split.valid["bad"].to_numpy(), target_bad_rate)
    metrics = score_metrics(split.test["bad"].to_numpy(), test_scores, cut.threshold)
    return ScorerResult(cut, valid_scores, test_scores, metrics)


def fit_and_evaluate(
    split: Split, config: TrainConfig, oracle: OracleFn | None = None
) -> Evaluation:
    """Search the models on the training and validation rows, fit the hand rule, and judge
    every one out of time.

    The search (`training.search`) chooses the family and settings on validation log loss;
    every scorer's threshold is chosen on validation by the policy (largest premium share
    with bad rate <= target) and judged on test.
    """
    columns = list(features.FEATURE_COLUMNS)
    train_x, train_y = split.train[columns], split.train["bad"].to_numpy()
    test_bad = split.test["bad"].to_numpy()

    def test_figures(predict: Callable[[pd.DataFrame], np.ndarray]) -> dict[str, float]:
        scores = predict(split.test)
        valid_bad = split.valid["bad"].to_numpy()
        cut = choose_threshold(predict(split.valid), valid_bad, config.target_bad_rate)
        return score_metrics(test_bad, scores, cut.threshold)

    selection = search(
        train_x,
        train_y,
        split.valid[columns],
        split.valid["bad"].to_numpy(),
        config.model,
        config.search,
        columns,
        report=test_figures,
    )
    hand_rule = HandRule().fit(train_x, train_y)
    scorers: dict[str, Callable[[pd.DataFrame], np.ndarray]] = {
        MODEL: BoosterScorer(selection.booster).predict,
        HAND_RULE: hand_rule.predict,
        LOGISTIC: selection.logistic.predict,
    }
    if oracle is not None:
        scorers[ORACLE] = oracle
    results = {
        name: _result(predict, split, config.target_bad_rate) for name, predict in scorers.items()
    }
    return Evaluation(
        selection.booster,
        columns,
        results,
        config.target_bad_rate,
        selection,
        selection.family,
        hand_rule,
    )


def _input_example(split: Split, columns: list[str]) -> pd.DataFrame:
    """Five test rows, and for each feature that can be missing a training row where it is:
    the signature inferred from the example then marks exactly those features optional."""
    train = split.train[columns]
    missing = train.isna().to_numpy()
    first_missing = sorted({int(np.argmax(missing[:, j])) for j in np.flatnonzero(missing.any(0))})
    rows = [split.test[columns].head(5), train.iloc[first_missing]]
    return pd.concat(rows, ignore_index=True).astype(np.float64)


def _flat_params(config: TrainConfig) -> dict[str, object]:
    flat: dict[str, object] = {"target_bad_rate": config.target_bad_rate}
    for section in ("snapshots", "model", "search", "checks"):
        for key, value in getattr(config, section).model_dump().items():
            flat[f"{section}.{key}"] = value
    return flat


def _log_figures(evaluation: Evaluation, split: Split) -> None:
    test_bad = split.test["bad"].to_numpy()
    curves = {name: (test_bad, r.test_scores) for name, r in evaluation.results.items()}
    thresholds = {name: r.cut.threshold for name, r in evaluation.results.items()}
    mlflow.log_figure(roc_pr_figure(curves), "plots/roc_pr.png")
    mlflow.log_figure(calibration_figure(curves), "plots/calibration.png")
    mlflow.log_figure(
        coverage_figure(curves, thresholds, evaluation.target_bad_rate),
        "plots/coverage_vs_bad_rate.png",
    )
    sample = split.test.sample(min(_SHAP_ROWS, len(split.test)), random_state=0)
    contributions = shap_values(evaluation.booster, sample)
    mlflow.log_figure(shap_summary_figure(contributions, sample), "plots/shap_summary.png")
    importance = contributions.abs().mean().sort_values(ascending=False)
    mlflow.log_dict({k: float(v) for k, v in importance.items()}, "shap_mean_abs.json")


def _log_search(selection: Selection, registered: str) -> None:
    """Every candidate (validation and test figures, settings) and the chosen settings."""
    rows = []
    for step, candidate in enumerate(selection.candidates):
        figures = {
            "valid_log_loss": candidate.valid_log_loss,
            "valid_roc_auc": candidate.valid_roc_auc,
            **{f"test_{k}": v for k, v in candidate.test.items()},
        }
        finite = {k: float(v) for k, v in figures.items() if np.isfinite(v)}
        mlflow.log_metrics({f"search/{candidate.name}/{k}": v for k, v in finite.items()})
        mlflow.log_metric("search/valid_log_loss", candidate.valid_log_loss, step=step)
        rows.append(
            {
                "name": candidate.name,
                "family": candidate.family,
                "params": candidate.params,
                "seconds": round(candidate.seconds, 3),
                **finite,
            }
        )
    winner = selection.winner
    mlflow.log_dict(
        {
            "budget": selection.budget.model_dump(),
            "seconds": selection.seconds,
            "stopped_by": selection.stopped_by,
            "chosen": winner.name,
            "chosen_family": winner.family,
            "chosen_params": winner.params,
            "criterion": "validation log loss",
            "candidates": rows,
        },
        "search.json",
    )
    mlflow.log_metric("search/seconds", selection.seconds)
    mlflow.log_params(
        {
            "model_family": registered,
            "chosen_candidate": winner.name,
            "search_trials_run": sum(c.family == LIGHTGBM for c in selection.candidates),
            "search_stopped_by": selection.stopped_by,
            **{f"chosen.{k}": v for k, v in winner.params.items()},
        }
    )


def _log_baselines(evaluation: Evaluation) -> None:
    if evaluation.hand_rule is not None:
        mlflow.log_dict(evaluation.hand_rule.to_document(), BASELINE_ARTIFACTS[HAND_RULE])
    if evaluation.selection is not None:
        document = evaluation.selection.logistic.to_spec().model_dump_json()
        mlflow.log_text(document, BASELINE_ARTIFACTS[LOGISTIC])


def _log_linear(evaluation: Evaluation) -> str:
    """Log the logistic winner as its JSON document under `model` (modelcontract.linear);
    returns the URI to register. No pickle and no python_function flavour: only the
    document's numbers are read back."""
    assert evaluation.selection is not None
    document = evaluation.selection.logistic.to_spec().model_dump_json(indent=1)
    described = {
        "flavors": {LINEAR_FLAVOUR: {"data": LINEAR_DATA, "format": LINEAR_FORMAT}},
        "run_id": mlflow.active_run().info.run_id,  # type: ignore[union-attr]
    }
    with tempfile.TemporaryDirectory(prefix="fastrefund-linear-") as folder:
        Path(folder, LINEAR_DATA).write_text(document, encoding="utf-8")
        Path(folder, "MLmodel").write_text(json.dumps(described, indent=1), encoding="utf-8")
        mlflow.log_artifacts(folder, "model")
    return f"runs:/{described['run_id']}/model"


def _metrics(evaluation: Evaluation) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for name, result in evaluation.results.items():
        for key, value in result.metrics.items():
            metrics[f"{name}/test_{key}"] = value
        metrics[f"{name}/threshold"] = result.cut.threshold
        metrics[f"{name}/valid_premium_coverage"] = result.cut.coverage
        metrics[f"{name}/valid_premium_bad_rate"] = result.cut.bad_rate
    return {k: v for k, v in metrics.items() if np.isfinite(v)}


def log_and_register(
    client: MlflowClient,
    data: TrainingData,
    evaluation: Evaluation,
    config: TrainConfig,
    parent_run_id: str | None = None,
) -> TrainResult:
    """Log the run (params, fingerprint, metrics, plots, Booster) and register `challenger`.

    If anything fails after the version is created, the version is deleted again, so a
    failed run never leaves a registered version or a moved alias behind.
    """
    split = data.split
    window = split.window()
    experiment_id = registry.ensure_experiment(client, config.experiment_name)
    tags = {"job": "train", "data_fingerprint": data.fingerprint}
    with mlflow.start_run(
        experiment_id=experiment_id, run_name="train", parent_run_id=parent_run_id, tags=tags
    ) as run:
        mlflow.log_params(
            {
                **_flat_params(config),
                "data_dir": str(data.data_dir),
                "data_fingerprint": data.fingerprint,
                "data_window": window,
                "train_dates": ",".join(d.date().isoformat() for d in split.train_dates),
                "valid_dates": ",".join(d.date().isoformat() for d in split.valid_dates),
                "test_dates": ",".join(d.date().isoformat() for d in split.test_dates),
                # Between validation and test: labels not yet known on the first test date.
                "purged_dates": ",".join(d.date().isoformat() for d in split.purged),
                "feature_set_version": features.FEATURE_SET_VERSION,
                "n_features": len(evaluation.feature_columns),
                "best_iteration": evaluation.booster.current_iteration(),  # best LightGBM
                "oracle": data.oracle is not None,
            }
        )
        for name, frame in (("train", split.train), ("valid", split.valid), ("test", split.test)):
            mlflow.log_metric(f"rows_{name}", len(frame))
            mlflow.log_metric(f"bad_rate_{name}", float(frame["bad"].mean()))
        mlflow.log_metrics(_metrics(evaluation))
        if evaluation.selection is not None:
            _log_search(evaluation.selection, evaluation.chosen)
        _log_baselines(evaluation)
        mlflow.log_text(evaluation.table().to_string(float_format="%.4f"), "summary.txt")
        _log_figures(evaluation, split)

        if evaluation.chosen == LOGISTIC:
            model_uri = _log_linear(evaluation)
        else:
            example = _input_example(split, evaluation.feature_columns)
            signature = infer_signature(example, evaluation.booster.predict(example.to_numpy()))
            model_uri = mlflow.lightgbm.log_model(
                evaluation.booster,
                name="model",
                signature=signature,
                input_example=example,
                pip_requirements=[f"lightgbm=={lgb.__version__}", f"numpy=={np.__version__}"],
            ).model_uri
        # The training population, for serving's factors in words and its drift reference.
        profile = reference_profile(
            split.train, evaluation.feature_columns, evaluation.predict(split.train)
        )
        mlflow.log_dict(profile.model_dump(mode="json"), PROFILE_ARTIFACT)
        version_tags = ModelVersionTags(
            threshold=evaluation.model.cut.threshold,
            feature_columns=tuple(evaluation.feature_columns),
            feature_set_version=features.FEATURE_SET_VERSION,
            data_window=window,
            target_bad_rate=config.target_bad_rate,
            data_fingerprint=data.fingerprint,
            label_horizon_days=config.snapshots.horizon_days,
            label_maturity_days=config.snapshots.maturity_days,
            reference_profile=PROFILE_ARTIFACT,
            model_family=LOGISTIC if evaluation.chosen == LOGISTIC else LIGHTGBM,
        )
        version = mlflow.register_model(model_uri, config.model_name, tags=version_tags.to_tags())
        try:
            client.set_registered_model_alias(config.model_name, CHALLENGER, str(version.version))
            mlflow.set_tag("model_version", str(version.version))
        except Exception:
            client.delete_model_version(config.model_name, str(version.version))
            raise
    return TrainResult(run.info.run_id, str(version.version), evaluation, window, data.fingerprint)


def train(
    config: TrainConfig,
    client: MlflowClient | None = None,
    parent_run_id: str | None = None,
) -> TrainResult:
    """The whole `python -m training train`: data -> models -> MLflow -> `challenger`.

    The tracking store is checked first, so an unreachable server fails before any work.
    """
    client = client or registry.connect()
    data = load_training_data(config)
    evaluation = fit_and_evaluate(data.split, config, data.oracle)
    return log_and_register(client, data, evaluation, config, parent_run_id)
