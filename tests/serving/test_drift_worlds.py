"""`python -m serving drift` on simulated worlds: a model trained on months 6-10 of a small
world, a store materialized as of a later month and that month's decisions made by the
service; the command reads them back from the audit log. On the `drifting` world (abuse grows
and moves to the pre-shipment exploit) it exits 1 on a late month; on the default world, and
on the drifting world's first month after training, it exits 0.

The decisions are for buyers drawn uniformly from the store (the reference is the training
population, every buyer as of each date); docs/operations.md says why requesters alone would
not compare with it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

import features
from features.simulate import simulate, write_world
from modelcontract import MODEL_NAME, PROFILE_ARTIFACT, ReferenceProfile
from serving.__main__ import app as cli
from serving.config import Settings
from serving.materialize import materialize
from serving.metrics import Metrics
from serving.model import Champion
from serving.policy import load_policy
from serving.schemas import DecisionRequest
from serving.service import Service
from training.reference import reference_profile

pytestmark = pytest.mark.slow

TRAIN_MONTHS = (6, 8, 10)
LIVE_MONTHS = (12, 16)
COLUMNS = list(features.FEATURE_COLUMNS)


def _month(log: features.TransactionLog, months: int) -> str:
    return (log.start + pd.DateOffset(months=months)).date().isoformat()


def _train(log: features.TransactionLog) -> tuple[lgb.Booster, pd.DataFrame, float]:
    frames = []
    for months in TRAIN_MONTHS:
        as_of = _month(log, months)
        frame = features.build_features(log, [as_of])
        label = features.labels(log, as_of, horizon_days=60, maturity_days=20)
        frames.append(frame.merge(label[["buyer_id", "bad"]], on="buyer_id", how="left"))
    rows = pd.concat(frames, ignore_index=True)
    x = rows[COLUMNS].to_numpy(np.float64)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 8, "num_threads": 1, "seed": 0},
        lgb.Dataset(x, label=rows["bad"].fillna(0).astype(int).to_numpy()),
        num_boost_round=30,
    )
    return booster, rows, float(np.quantile(booster.predict(x), 0.5))


def _decide_month(
    workdir: Path, log_dir: Path, log: features.TransactionLog, champion: Champion, months: int
) -> None:
    """Materialize the store as of the month and decide 600 requests during its first day."""
    as_of = _month(log, months)
    store = workdir / f"store-{months}.db"
    materialize(log_dir, as_of=as_of, store_path=store, policy=load_policy())
    now = pd.Timestamp(as_of, tz="UTC").timestamp() + 3600
    settings = Settings(store_path=store, audit_path=workdir / "audit.db", model_check_seconds=0)
    service = Service(settings, load_policy(), Metrics(), clock=lambda: now)
    service.champion = champion
    buyers = pd.read_sql("SELECT buyer_id FROM buyers", f"sqlite:///{store}")["buyer_id"]
    chosen = buyers.sample(600, replace=True, random_state=months).tolist()
    requests = [
        DecisionRequest.model_validate(
            {
                "refund_id": f"R{months}-{i}",
                "requested_at": pd.Timestamp(now, unit="s", tz="UTC").isoformat(),
                "kind": "refund_only",
                "order": {
                    "order_id": f"O{months}-{i}",
                    "buyer_id": buyer,
                    "shop_id": "S0",
                    "category": "apparel",
                    "is_virtual": False,
                    "is_custom": False,
                    "paid_amount": "99.00",
                    "currency": "CNY",
                    "status": "paid_unshipped",
                    "tracking_number": None,
                },
            }
        )
        for i, buyer in enumerate(chosen)
    ]
    for start in range(0, len(requests), 100):
        service.decide(requests[start : start + 100])
    service.close()


def _register(uri: str, workdir: Path, profile: ReferenceProfile | None) -> str:
    """Register a version whose run holds the reference profile when given one (the drift
    command reads only the version's tag and run: no model file is logged, to keep it quick)."""
    client = MlflowClient(uri, uri)
    experiment = client.get_experiment_by_name("drift")
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment("drift", (workdir / "artifacts").as_uri())
    )
    run = client.create_run(experiment_id)
    tags = {}
    if profile is not None:
        client.log_dict(run.info.run_id, profile.model_dump(mode="json"), PROFILE_ARTIFACT)
        tags["reference_profile"] = PROFILE_ARTIFACT
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(f"name = '{MODEL_NAME}'"):
        client.create_registered_model(MODEL_NAME)
    version = client.create_model_version(
        MODEL_NAME, f"{run.info.artifact_uri}/model", run.info.run_id, tags=tags
    )
    return str(version.version)


def _world(tmp: Path, profile: str) -> tuple[Path, dict]:
    """A small world of `profile`, its model, and the decisions of the live months."""
    world = simulate(buyers=3000, shops=60, seed=3, profile=profile)
    write_world(world, tmp / "log")
    booster, rows, threshold = _train(world.log)
    reference = reference_profile(rows, COLUMNS, booster.predict(rows[COLUMNS].to_numpy()))
    champion = Champion(
        "buyer-quality", "1", booster, threshold, tuple(COLUMNS), features.FEATURE_SET_VERSION
    )
    for months in LIVE_MONTHS:
        _decide_month(tmp, tmp / "log", world.log, champion, months)
    return tmp / "audit.db", {
        "booster": booster,
        "reference": reference,
        "days": {m: _month(world.log, m) for m in LIVE_MONTHS},
    }


def _drift(audit: Path, day: str, *extra: str) -> tuple[int, str]:
    args = ["drift", "--audit", str(audit), "--since", day, "--until", day, *extra]
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.output


def test_drift_alerts_on_the_drifting_worlds_late_month_from_the_registrys_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_mlflow_db: Path
) -> None:
    audit, world = _world(tmp_path, "drifting")
    shutil.copy(empty_mlflow_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("FASTREFUND_MLFLOW_TRACKING_URI", uri)
    assert _register(uri, tmp_path, world["reference"]) == "1"
    early, late = (world["days"][m] for m in LIVE_MONTHS)
    plot = tmp_path / "worst.png"
    code, output = _drift(audit, early, "--plot", str(plot))
    assert code == 0, output
    assert "drift of version 1: ok (600 scored rows" in output and plot.stat().st_size > 0
    code, output = _drift(audit, late, "--plot", str(plot))
    assert code == 1, output
    assert "drift of version 1: alert" in output
    table = {line.split()[0]: line for line in output.splitlines()[2:] if line.strip()}
    assert "ALERT" in table["score"]  # more abusers: the model's scores moved up
    assert "(exempt)" in table.get("days_since_first_order", "(exempt)")
    # A version registered without a profile: "no reference", exit 3, never a crash.
    assert _register(uri, tmp_path, None) == "2"
    code, output = _drift(audit, late, "--model-version", "2", "--plot", str(plot))
    assert code == 3, output
    assert "no reference" in output


def test_drift_stays_quiet_on_a_world_that_does_not_drift(tmp_path: Path) -> None:
    audit, world = _world(tmp_path, "default")
    reference = tmp_path / "profile.json"
    reference.write_text(json.dumps(world["reference"].model_dump(mode="json")))
    for months in LIVE_MONTHS:
        code, output = _drift(
            audit,
            world["days"][months],
            "--reference",
            str(reference),
            "--plot",
            str(tmp_path / "p.png"),
        )
        assert code == 0, output
        assert "drift of version 1: ok (600 scored rows" in output
