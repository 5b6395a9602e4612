"""`python -m training retrain`: the scheduled job. Train, promote, refresh the online store.

Safe under cron: a file lock keeps two runs from overlapping, a run that would redo the
last completed one (same data, same settings: `job_fingerprint`) is skipped unless forced,
and every step is a child run of one MLflow run.

The one module of training that reaches into serving, and it says so in its imports: the
job refreshes serving's online store (`serving.materialize`) and checks serving's settings
and policy before it trains. Serving never imports training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout
from mlflow import MlflowClient

import features
from serving.config import Settings
from serving.materialize import materialize
from serving.policy import load_policy
from training import registry
from training.config import PromoteConfig, RetrainConfig
from training.errors import JobLockedError, StoreRefreshError
from training.promote import PromoteResult, promote
from training.train import TrainResult, train

logger = logging.getLogger(__name__)

# How a retraining run ended, on the run: "completed", "skipped" or "failed".
STATUS_TAG = "retrain_status"
# Runs recorded before the tag had that name (read, never written).
_LEGACY_STATUS_TAG = "retrain_outcome"


@dataclass(frozen=True)
class RetrainResult:
    """What the job did."""

    status: str  # "completed", "skipped" or "resumed" (only the store was left to do)
    run_id: str
    fingerprint: str
    train: TrainResult | None = None
    promotion: PromoteResult | None = None
    store_note: str = ""


def job_fingerprint(config: RetrainConfig, data_fingerprint: str) -> str:
    """What a run would do: the data (its tables and meta.json), the feature set's version and
    every setting that changes the model. Two runs with the same one would train the same
    model; how the run is driven (forcing, the lock file, the progress bar, where the data
    folder is) is left out.
    """
    settings = config.model_dump(
        mode="json",
        exclude={
            "force": True,
            "force_promote": True,
            "lock_path": True,
            "train": {"data_dir": True, "progress": True},
        },
    )
    meta = Path(config.train.data_dir) / "meta.json"
    digest = hashlib.sha256(data_fingerprint.encode())
    digest.update(features.FEATURE_SET_VERSION.encode())  # new feature code: a new model
    digest.update(meta.read_bytes() if meta.is_file() else b"")
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def _status(tags: dict[str, str]) -> str | None:
    return tags.get(STATUS_TAG, tags.get(_LEGACY_STATUS_TAG))


def last_completed_fingerprint(client: MlflowClient, experiment_id: str) -> str | None:
    """The job fingerprint of the newest retraining run that completed."""
    for tag in (STATUS_TAG, _LEGACY_STATUS_TAG):  # a run under the new tag is the newer
        runs = client.search_runs(
            [experiment_id],
            filter_string=f"tags.job = 'retrain' and tags.{tag} = 'completed'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if runs:
            return runs[0].data.tags.get("job_fingerprint")
    return None


def unfinished_run(client: MlflowClient, experiment_id: str, job: str) -> str | None:
    """The newest run of this same job, if it promoted (or refused) and then stopped short
    of the online store (a refresh that failed, a kill): its run id. Training and judging
    again would register a copy of the model and push the real rollback target out of
    `previous`."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.job = 'retrain' and tags.job_fingerprint = '{job}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    tags = runs[0].data.tags
    finished = _status(tags) in ("completed", "skipped")
    return runs[0].info.run_id if "step.promote" in tags and not finished else None


def check_store_settings() -> None:
    """Fail before training, not after promoting, when serving's settings are unusable.

    Raises:
        StoreRefreshError: They are.
    """
    try:
        load_policy(Settings.load().policy_path)
    except (ValueError, OSError) as exc:
        raise StoreRefreshError(
            f"serving's settings are unusable, so the online store could not be refreshed "
            f"(nothing was trained): {exc}"
        ) from exc


def refresh_store(data_dir: Path) -> str:
    """Materialize the newest snapshot for serving.

    Raises:
        StoreRefreshError: It failed; the registry is already up to date.
    """
    try:
        materialize(data_dir)
    except (ValueError, OSError, sqlite3.Error) as exc:
        raise StoreRefreshError(
            f"the online store was not refreshed: {exc}. The registry is up to date: run "
            "retrain again to refresh only the store"
        ) from exc
    return "refreshed"


def retrain(config: RetrainConfig, client: MlflowClient | None = None) -> RetrainResult:
    """Run the job once, under the lock.

    Raises:
        JobLockedError: Another run holds the lock.
        TrackingUnavailableError, TrainingDataError, RegistryError, features.LogFileError,
        features.LogValidationError: The job failed; the parent run is marked FAILED.
    """
    lock_path = Path(config.lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout as exc:
        raise JobLockedError(f"another retraining run holds {lock_path}; not starting") from exc
    try:
        return _retrain_locked(config, client)
    finally:
        lock.release()


def _retrain_locked(config: RetrainConfig, client: MlflowClient | None) -> RetrainResult:
    client = client or registry.connect()
    data_dir = Path(config.train.data_dir)
    if not data_dir.is_dir():
        raise features.LogFileError(f"{data_dir}: not a directory")
    if config.materialize:
        check_store_settings()
    fingerprint = features.fingerprint(data_dir)
    job = job_fingerprint(config, fingerprint)
    experiment_id = registry.ensure_experiment(client, config.train.experiment_name)
    last = last_completed_fingerprint(client, experiment_id)
    resume = (
        None if config.force or config.force_promote else unfinished_run(client, experiment_id, job)
    )
    parent = client.create_run(
        experiment_id,
        run_name="retrain",
        tags={
            "job": "retrain",
            "data_fingerprint": fingerprint,
            "job_fingerprint": job,
            "forced": str(config.force),
        },
    )
    run_id = parent.info.run_id
    client.log_param(run_id, "data_dir", str(data_dir.resolve()))
    try:
        if last == job and not config.force and not config.force_promote:
            client.set_tag(run_id, STATUS_TAG, "skipped")
            client.set_tag(
                run_id, "note", "data and settings unchanged since the last completed retrain"
            )
            client.set_terminated(run_id, "FINISHED")
            return RetrainResult("skipped", run_id, fingerprint)
        trained, promotion = None, None
        if resume is not None:  # trained and judged already: only the store is left to do
            client.set_tag(run_id, "resumed_from", resume)
        else:
            trained, promotion = _train_and_promote(config, client, run_id)
        store_note = "skipped: --no-materialize"
        if config.materialize:
            store_note = refresh_store(data_dir)
        client.set_tag(run_id, "step.materialize", store_note)
        client.set_tag(run_id, STATUS_TAG, "completed")
        client.set_terminated(run_id, "FINISHED")
        status = "resumed" if resume is not None else "completed"
        return RetrainResult(status, run_id, fingerprint, trained, promotion, store_note)
    except BaseException as exc:
        client.set_tag(run_id, STATUS_TAG, "failed")
        client.set_tag(run_id, "error", f"{type(exc).__name__}: {exc}"[:5000])
        client.set_terminated(run_id, "FAILED")
        raise


def _train_and_promote(
    config: RetrainConfig, client: MlflowClient, run_id: str
) -> tuple[TrainResult, PromoteResult]:
    """Train a challenger and judge exactly that version, as steps of the run `run_id`."""
    trained = train(config.train, client=client, parent_run_id=run_id)
    client.set_tag(run_id, "step.train", f"version {trained.model_version}")
    client.set_tag(run_id, "train_run_id", trained.run_id)
    promotion = promote(
        PromoteConfig(
            data_dir=Path(config.train.data_dir),
            force=config.force_promote,
            gate=config.gate,
            model_name=config.train.model_name,
            experiment_name=config.train.experiment_name,
            target_bad_rate=config.train.target_bad_rate,
            expected_challenger=str(trained.model_version),
        ),
        client=client,
        parent_run_id=run_id,
    )
    client.set_tag(run_id, "step.promote", promotion.verdict.label)
    if promotion.run_id:
        client.set_tag(run_id, "promote_run_id", promotion.run_id)
    return trained, promotion
