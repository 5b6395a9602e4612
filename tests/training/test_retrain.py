"""The scheduled job skips a run only when it would redo the last one: same data, same settings."""

from __future__ import annotations

import json
from pathlib import Path

import features
from training.config import GateParams, ModelParams, RetrainConfig, SnapshotParams, TrainConfig
from training.retrain import job_fingerprint


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
