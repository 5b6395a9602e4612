"""`python -m training promote`: judge `challenger` against `champion`, move the aliases.

Both models are scored on the same rows: the newest matured as-of date of the data.
A refusal is a normal outcome; only a broken registry, store or data is an error.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

import features
from modelcontract import CHALLENGER, CHAMPION, GateTags
from modelcontract.linear import LinearModel
from training import registry
from training.bootstrap import Comparison, paired_bootstrap
from training.config import PromoteConfig, SnapshotParams
from training.errors import RegistryError, TrainingDataError
from training.gate import GateFigures, Verdict, decide, measure, sanity_problems
from training.models import BASELINE_ARTIFACTS, FrozenHandRule
from training.snapshots import build_snapshots, snapshot_dates

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromoteResult:
    """The gate's outcome."""

    verdict: Verdict
    challenger: GateFigures | None
    champion: GateFigures | None
    champion_version: str | None
    previous_version: str | None
    gate_as_of: str | None
    run_id: str | None
    note: str = ""
    # The paired bootstrap: the challenger against the champion and the run's baselines.
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    confidence: float = 0.95
    bootstrap_rounds: int = 0


# What a challenger is held to when a champion serves but its figures cannot be compared.
_NOT_COMPARED = "not compared: the challenger must pass the sanity checks and the calibration bound"


def _snapshot_params(client: MlflowClient, version: registry.ModelVersion) -> SnapshotParams:
    """The challenger's own label horizon, maturity and dates, read from its training run."""
    params = client.get_run(version.run_id).data.params if version.run_id else {}
    return _snapshot_params_from(params)


def _snapshot_params_from(params: dict[str, str]) -> SnapshotParams:
    known = SnapshotParams.model_fields
    values = {
        key.removeprefix("snapshots."): value
        for key, value in params.items()
        if key.startswith("snapshots.") and key.removeprefix("snapshots.") in known
    }
    return SnapshotParams.model_validate(values)


def _data_dir(client: MlflowClient, version: registry.ModelVersion, given: Path | None) -> Path:
    if given is not None:
        return Path(given)
    params = client.get_run(version.run_id).data.params if version.run_id else {}
    if "data_dir" not in params:
        raise RegistryError("the challenger's run records no data_dir; pass --data")
    return Path(params["data_dir"])


def labels_complete_at(params: dict[str, str]) -> pd.Timestamp | None:
    """When the newest label a model was fit or tuned on was complete, from its training
    run's params: its newest training or validation as-of date + horizon + maturity (None
    when the run does not record its dates)."""
    dates = [
        date
        for key in ("train_dates", "valid_dates")
        for date in params.get(key, "").split(",")
        if date
    ]
    if not dates:
        return None
    snapshot = _snapshot_params_from(params)
    lead = pd.Timedelta(days=snapshot.horizon_days + snapshot.maturity_days)
    return pd.Timestamp(max(dates), tz="UTC") + lead


def in_sample(params: dict[str, str], gate_date: pd.Timestamp) -> str | None:
    """Why a model's figures on the gate date are in-sample, or None when they are not.

    A model fit or tuned on a label not complete by the gate date learned from outcomes
    inside the gate's own window, so its figures there flatter it (see split_by_time).
    """
    complete = labels_complete_at(params)
    if complete is None or complete <= gate_date:
        return None
    return (
        f"it was fit on labels complete only at {complete.date()}, after the gate date "
        f"{gate_date.date()}: its figures there are in-sample"
    )


# What a premium verdict means: the labels a model learns (horizon, maturity) and the bad
# rate its threshold is set for. A challenger that changes one of them is not "the same
# model, better": it changes the policy, which only a forced promotion may do.
_DEFINITION = ("snapshots.horizon_days", "snapshots.maturity_days", "target_bad_rate")


def changed_definition(challenger: dict[str, str], champion: dict[str, str]) -> list[str]:
    """How the challenger's label or threshold definition differs from the champion's, from
    their training runs' params (a setting either run does not record is not compared)."""
    return [
        f"its {key.removeprefix('snapshots.')} is {challenger[key]}, the champion's "
        f"{champion[key]}: it changes what premium means (promote with --force to do that)"
        for key in _DEFINITION
        if key in challenger and key in champion and challenger[key] != champion[key]
    ]


def _run_params(client: MlflowClient, version: registry.ModelVersion) -> dict[str, str]:
    """A version's training-run params ({} when the run is gone or unreadable)."""
    try:
        return dict(client.get_run(version.run_id).data.params) if version.run_id else {}
    except mlflow.exceptions.MlflowException:
        return {}


def gate_rows(data_dir: Path, params: SnapshotParams) -> pd.DataFrame:
    """Labelled features of every buyer at the newest matured as-of date."""
    log = features.load_log(data_dir)
    dates = snapshot_dates(log, params)
    if not dates:
        raise TrainingDataError(f"{data_dir}: no matured as-of date to judge the models on")
    rows = build_snapshots(log, dates[-1:], params)
    if rows["bad"].nunique() < 2:
        raise TrainingDataError(
            f"{data_dir}: the newest matured date {dates[-1].date()} has only one label class"
        )
    return rows


def _judge(
    model: registry.RegisteredModel,
    rows: pd.DataFrame,
    target_bad_rate: float,
    config: PromoteConfig,
) -> tuple[GateFigures, np.ndarray | None]:
    """A registered model's figures on the gate rows, and its scores (None when it cannot
    score them)."""
    booster = registry.load_model(config.model_name, model.number)
    booster_columns = booster.feature_name()
    missing = [c for c in booster_columns if c not in rows.columns]
    if missing:
        problems = [f"serving cannot compute feature(s) {', '.join(missing)}"]
        nan = float("nan")
        return GateFigures(model.number, nan, 0.0, nan, nan, nan, tuple(problems)), None
    scores = np.asarray(booster.predict(rows[booster_columns].to_numpy(np.float64)))
    problems = sanity_problems(
        scores,
        model.threshold,
        model.feature_columns,
        booster_columns,
        list(features.FEATURE_COLUMNS),
        config.gate,
    )
    bad = rows["bad"].to_numpy()
    figures = measure(model.number, bad, scores, model.threshold, target_bad_rate, problems)
    return figures, scores


def baseline_scores(
    client: MlflowClient, version: registry.ModelVersion, rows: pd.DataFrame, family: str | None
) -> tuple[dict[str, np.ndarray], str]:
    """The challenger run's own baselines (fitted on its training rows, logged as plain
    numbers) scored on the gate rows, and a note on any it did not log or that cannot be read.
    The logistic baseline is left out when it is the challenger itself."""
    scores: dict[str, np.ndarray] = {}
    missing = []
    for name, artifact in BASELINE_ARTIFACTS.items():
        if name == family:
            continue
        try:
            with tempfile.TemporaryDirectory(prefix="fastrefund-baseline-") as folder:
                local = mlflow.artifacts.download_artifacts(
                    run_id=version.run_id, artifact_path=artifact, dst_path=folder
                )
                text = Path(local).read_text(encoding="utf-8")
            if name == "logistic":
                model = LinearModel.from_json(text)
                matrix = rows[model.feature_name()].to_numpy(np.float64)
                scores[name] = model.predict(matrix)
            else:
                scores[name] = FrozenHandRule.from_document(json.loads(text)).predict(rows)
        except Exception as exc:  # noqa: BLE001 - an old run logged none: not compared
            logger.info("baseline %s not compared: %s", name, exc)
            missing.append(name)
    note = (
        f"the challenger's run has no readable baseline(s) {', '.join(missing)}: not compared"
        if missing
        else ""
    )
    return scores, note


def promote(
    config: PromoteConfig,
    client: MlflowClient | None = None,
    parent_run_id: str | None = None,
) -> PromoteResult:
    """Compare challenger and champion on the newest matured data and move `champion`.

    Raises:
        RegistryError: There is no challenger, or its tags are unreadable.
        TrackingUnavailableError: The tracking store cannot be reached.
        TrainingDataError: No data to judge on.
    """
    client = client or registry.connect()
    name = config.model_name
    challenger_version = registry.version_by_alias(client, name, CHALLENGER)
    if challenger_version is None:
        raise RegistryError(f"{name} has no '{CHALLENGER}' version: run train first")
    expected = config.expected_challenger
    if expected is not None and str(challenger_version.version) != expected:
        raise RegistryError(
            f"@{CHALLENGER} moved to version {challenger_version.version} while this "
            f"run trained version {expected} (another training ran meanwhile): nothing judged"
        )
    champion_version = registry.version_by_alias(client, name, CHAMPION)
    if champion_version is not None and champion_version.version == challenger_version.version:
        note = f"version {challenger_version.version} is already {CHAMPION}"
        verdict = Verdict(promote=False, unchanged=True)
        return PromoteResult(
            verdict, None, None, str(champion_version.version), None, None, None, note
        )

    challenger = registry.read_registered(challenger_version)
    target = config.target_bad_rate or challenger.target_bad_rate or 0.01
    snapshot_params = _snapshot_params(client, challenger_version)
    data_dir = _data_dir(client, challenger_version, config.data_dir)
    rows = gate_rows(data_dir, snapshot_params)
    gate_date = pd.Timestamp(rows["as_of"].iloc[0])
    gate_as_of = gate_date.date().isoformat()
    challenger_figures, challenger_scores = _judge(challenger, rows, target, config)
    seen = in_sample(_run_params(client, challenger_version), gate_date)
    if seen is not None:  # refused (a sanity problem) unless forced
        problems = (*challenger_figures.problems, seen)
        challenger_figures = dataclasses.replace(challenger_figures, problems=problems)
    champion_figures = None
    champion_scores = None
    set_aside = None  # a champion's figures that cannot be compared (logged, not used)
    note = ""
    if champion_version is not None:
        try:
            champion = registry.read_registered(champion_version)
            champion_figures, champion_scores = _judge(champion, rows, target, config)
        except RegistryError as exc:
            note = f"champion cannot be judged ({exc}); {_NOT_COMPARED}"
        if champion_figures is not None and champion_figures.problems:
            failed = "; ".join(champion_figures.problems)
            note = f"champion fails its own sanity checks: {failed}; {_NOT_COMPARED}"
            champion_figures = None
        champion_params = _run_params(client, champion_version)
        changed = changed_definition(_run_params(client, challenger_version), champion_params)
        if changed:  # refused (a sanity problem) unless forced
            problems = (*challenger_figures.problems, *changed)
            challenger_figures = dataclasses.replace(challenger_figures, problems=problems)
        seen = in_sample(champion_params, gate_date)
        if champion_figures is not None and seen is not None:
            # E.g. a champion trained before the split was purged: no fair comparison here.
            note = f"champion version {champion_version.version}: {seen}; {_NOT_COMPARED}"
            set_aside, champion_figures = champion_figures, None
    elif not note:
        note = (
            "no champion yet: the challenger must pass the sanity checks and not be "
            "significantly worse than its run's baselines"
        )
    others, baseline_note = baseline_scores(
        client, challenger_version, rows, challenger.tags.model_family
    )
    note = "; ".join(n for n in (note, baseline_note) if n)
    if champion_figures is not None and champion_scores is not None:
        others = {"champion": champion_scores, **others}
    comparisons: dict[str, Comparison] = {}
    if challenger_scores is not None and np.isfinite(challenger_scores).all() and others:
        gate = config.gate
        comparisons = paired_bootstrap(
            rows["bad"].to_numpy(),
            challenger_scores,
            others,
            target,
            gate.bootstrap_rounds,
            gate.confidence,
            gate.bootstrap_seed,
        )
    verdict = decide(
        challenger_figures,
        champion_figures,
        config.gate,
        force=config.force,
        replacing=champion_version is not None,
        comparisons=comparisons,
    )
    intervals = {
        name: {
            "auc_difference": c.auc_difference.as_list(),
            "coverage_difference": c.coverage_difference.as_list(),
        }
        for name, c in comparisons.items()
    }

    experiment_id = registry.ensure_experiment(client, config.experiment_name)
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name="promote",
        parent_run_id=parent_run_id,
        tags={
            "job": "promote",
            "verdict": verdict.label,
            "forced": str(verdict.forced).lower(),
            **({"reason": config.reason} if config.reason else {}),
        },
    ) as run:
        mlflow.log_params(
            {
                "challenger_version": challenger.number,
                "champion_version": champion_version.version if champion_version else "none",
                "data_dir": str(data_dir.resolve()),
                "gate_as_of": gate_as_of,
                "gate_rows": len(rows),
                "target_bad_rate": target,
                "force": config.force,
                **{f"gate.{k}": v for k, v in config.gate.model_dump().items()},
            }
        )
        judged = (
            ("challenger", challenger_figures),
            ("champion", champion_figures),
            ("champion_in_sample", set_aside),
        )
        for label, figures in judged:
            if figures is not None:
                mlflow.log_metrics({f"{label}/{k}": v for k, v in figures.as_metrics().items()})
        for comparison in comparisons.values():
            mlflow.log_metrics(comparison.as_metrics())
        mlflow.log_dict(
            {
                "verdict": verdict.label,
                "reasons": verdict.reasons,
                "note": note,
                "bootstrap": {
                    "rounds": config.gate.bootstrap_rounds,
                    "confidence": config.gate.confidence,
                    "seed": config.gate.bootstrap_seed,
                    "challenger_minus": intervals,
                },
            },
            "gate.json",
        )
        gate_tags = GateTags.model_validate(
            {
                "gate_verdict": verdict.label,
                "gate_run_id": run.info.run_id,
                # The file judged: serving loads a champion only when its file still has it.
                "model_sha256": registry.model_sha256(name, challenger.number),
            }
            | ({"gate_reason": config.reason} if config.reason else {})
            | ({"gate_intervals": json.dumps(intervals)} if intervals else {})
        )
        for key, value in gate_tags.to_tags().items():
            client.set_model_version_tag(name, challenger.number, key, value)
        previous = None
        if verdict.promote:  # after the tags: serving refuses a champion without them
            previous = registry.move_champion(client, name, challenger.number)
    champion_now = (
        challenger.number
        if verdict.promote
        else (str(champion_version.version) if champion_version else None)
    )
    return PromoteResult(
        verdict,
        challenger_figures,
        champion_figures,
        champion_now,
        previous,
        gate_as_of,
        run.info.run_id,
        note,
        comparisons,
        config.gate.confidence,
        config.gate.bootstrap_rounds,
    )
