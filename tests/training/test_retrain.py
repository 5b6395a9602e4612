"""The scheduled job skips a run only when it would redo the last one (same data, same
settings), and resumes one that stopped short of the online store."""

from __future__ import annotations

import json
from pathlib import Path

import features
from training import registry
from training.config import GateParams, ModelParams, RetrainConfig, SnapshotParams, TrainConfig
from training.retrain import (
    STATUS_TAG,
    job_fingerprint,
    last_completed_fingerprint,
    unfinished_run,
)


def _config(data: Path, **train: object) -> RetrainConfig:
    return RetrainConfig(train=TrainConfig(data_dir=data, **train))


def test_the_job_fingerprint_follows_data_and_settings_not_how_the_run_is_driven(
    tmp_path: Path,
) -> None:
    data = tmp_path / "log"
    data.mkdir()
    (data / "meta.json").write_text(json.dumps({"start": "2025-01-01", "end": "2026-06-24"}))
    base = job_fingerprint(_config(data), "tables-1")
    assert job_fingerprint(_config(data), "tables-1") == base
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (moved / "meta.json").write_text((data / "meta.json").read_text())
    same_run = [
        _config(moved),
        _config(data, progress=False),
        RetrainConfig(train=TrainConfig(data_dir=data), force=True, lock_path=tmp_path / "l"),
    ]
    assert {job_fingerprint(config, "tables-1") for config in same_run} == {base}

    different = [
        job_fingerprint(_config(data), "tables-2"),
        job_fingerprint(_config(data, target_bad_rate=0.005), "tables-1"),
        job_fingerprint(_config(data, snapshots=SnapshotParams(horizon_days=60)), "tables-1"),
        job_fingerprint(_config(data, model=ModelParams(learning_rate=0.1)), "tables-1"),
        job_fingerprint(
            RetrainConfig(train=TrainConfig(data_dir=data), gate=GateParams(max_auc_drop=0.0)),
            "tables-1",
        ),
        job_fingerprint(
            RetrainConfig(train=TrainConfig(data_dir=data), materialize=False), "tables-1"
        ),
    ]
    assert base not in different and len(set(different)) == len(different)
    (data / "meta.json").write_text(json.dumps({"start": "2025-01-01", "end": "2026-07-24"}))
    assert job_fingerprint(_config(data), "tables-1") != base


def test_new_feature_code_is_a_new_job(tmp_path: Path, monkeypatch) -> None:
    before = job_fingerprint(_config(tmp_path), "tables-1")
    monkeypatch.setattr(features, "FEATURE_SET_VERSION", features.FEATURE_SET_VERSION + "-next")
    assert job_fingerprint(_config(tmp_path), "tables-1") != before


def test_how_a_run_ended_is_read_from_its_status_tag_or_the_old_one(tracking: str) -> None:
    """Runs recorded when the tag was `retrain_outcome` still count as completed or finished."""
    client = registry.connect(tracking)
    experiment = registry.ensure_experiment(client, "retrain-status")

    def recorded(**tags: str) -> str:
        return client.create_run(experiment, tags={"job": "retrain", **tags}).info.run_id

    assert last_completed_fingerprint(client, experiment) is None
    recorded(retrain_outcome="completed", job_fingerprint="before-the-rename")
    recorded(retrain_outcome="failed", job_fingerprint="failed-later")
    assert last_completed_fingerprint(client, experiment) == "before-the-rename"
    recorded(**{STATUS_TAG: "completed", "job_fingerprint": "after-the-rename"})
    assert last_completed_fingerprint(client, experiment) == "after-the-rename"

    # Promoted, then stopped short of the store: resumed; finished under either tag: not.
    stopped = recorded(job_fingerprint="job-1", **{"step.promote": "promoted"})
    assert unfinished_run(client, experiment, "job-1") == stopped
    client.set_tag(stopped, "retrain_outcome", "completed")
    assert unfinished_run(client, experiment, "job-1") is None
    stopped = recorded(job_fingerprint="job-2", **{"step.promote": "refused"})
    client.set_tag(stopped, STATUS_TAG, "skipped")
    assert unfinished_run(client, experiment, "job-2") is None
