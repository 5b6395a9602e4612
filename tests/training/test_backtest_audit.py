"""Replaying a served period's audit log reproduces the served decisions exactly.

A period is served for real: a simulated world materialized into an online store, a LightGBM
champion registered and stamped as the gate does, the service started in process with a
policy that has a loss budget, and a stream of requests (single and batched) with repeats of
buyers (velocity), buyers above the threshold, an unknown buyer, ineligible goods and shops.
Then its audit log is replayed by `training.backtest_audit` through the backtest's decision.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime
from importlib import resources
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import features
from features.simulate import simulate, write_world
from serving.app import create_app
from serving.config import Settings
from serving.materialize import materialize
from serving.policy import load_policy
from tests.serving.champions import MODEL, register_champion, training_frame
from tests.serving.conftest import ADMIN, DECIDER, Clock, body
from training import backtest as bt
from training import backtest_audit as audit_replay
from training.__main__ import app
from training.backtest_run import load_version

pytestmark = pytest.mark.slow  # trains and registers a model, starts the service

URL = "/v1/refund-decisions"
HOUR = 3600.0


def _policy_file(path: Path) -> Path:
    """The packaged policy with a per-shop daily loss budget that the stream runs into."""
    packaged = resources.files("serving").joinpath("policy.yaml")
    text = yaml.safe_load(packaged.read_text(encoding="utf-8"))
    text["version"] = "audit-replay-test.1"
    text["loss_budget"] = {"max_per_shop_day_fen": 600.0, "max_per_buyer_30_days_fen": None}
    path.write_text(yaml.safe_dump(text), encoding="utf-8")
    return path


def _request(refund_id: str, buyer: str, shop: str, **order: object) -> dict:
    return body(refund_id, buyer_id=buyer, shop_id=shop, **{"paid_amount": "99.00", **order})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("served")
    world = simulate(buyers=800, shops=10, days=200, seed=11)
    write_world(world, root / "log")
    policy_path = _policy_file(root / "policy.yaml")
    policy = load_policy(policy_path)
    store = root / "online.db"
    report = materialize(root / "log", store_path=store, policy=policy)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    frame, y = training_frame(world.log, "2025-03-01")
    version, booster, threshold = register_champion(uri, root / "artifacts", frame, y, 0.4)
    # Another model, for the what-if (in memory: replay_audit takes any ReplayModel).
    columns = list(features.FEATURE_COLUMNS)
    other = bt.ReplayModel(
        "other",
        lgb.train(
            {"objective": "binary", "verbose": -1, "num_leaves": 4, "seed": 1, "num_threads": 1},
            lgb.Dataset(frame[columns].to_numpy(np.float64), label=y),
            num_boost_round=10,
        ),
        threshold,
        tuple(columns),
        features.FEATURE_SET_VERSION,
    )

    with sqlite3.connect(store) as conn:
        rows = conn.execute(
            "SELECT buyer_id, order_count, features, revoked FROM buyers ORDER BY buyer_id"
        ).fetchall()
        shops = conn.execute("SELECT shop_id, eligible FROM shops ORDER BY shop_id").fetchall()
    vectors = np.stack([np.frombuffer(r[2], dtype="<f8") for r in rows])
    scores = booster.predict(vectors)
    usable = [r[1] >= 3 and not r[3] for r in rows]
    premium = [r[0] for r, s, ok in zip(rows, scores, usable, strict=True) if ok and s <= threshold]
    above = [r[0] for r, s, ok in zip(rows, scores, usable, strict=True) if ok and s > threshold]
    eligible = [s for s, ok in shops if ok]
    ineligible = [s for s, ok in shops if not ok] or ["S-NOT-IN-STORE"]
    assert len(premium) >= 12 and len(above) >= 4 and len(eligible) >= 2

    # The period: the snapshot's day from 09:00 UTC on (the store is as of its 00:00).
    clock = Clock(datetime.fromisoformat(f"{report.as_of}T09:00:00+00:00").timestamp())
    settings = Settings(
        environment="development",  # the built-in tokens (module scope: before the autouse)
        store_path=store,
        audit_path=root / "audit.db",
        mlflow_tracking_uri=uri,
        policy_path=policy_path,
        store_check_seconds=0,
        model_check_seconds=0,
    )
    n = 0

    def one(client: TestClient, buyer: str, shop: str, **order: object) -> dict:
        nonlocal n
        n += 1
        clock.now += 0.25 * HOUR
        response = client.post(URL, json=_request(f"AR{n}", buyer, shop, **order), headers=DECIDER)
        assert response.status_code == 200, response.text
        return response.json()

    answers = []
    with TestClient(create_app(settings, clock=clock)) as client:
        for day in range(4):  # a repeat buyer: 2 a day, then 6 in 30 days (velocity)
            for _ in range(3):
                answers.append(one(client, premium[0], eligible[0]))
            for buyer in premium[1 + 3 * day : 4 + 3 * day]:  # the shop's loss budget
                answers.append(one(client, buyer, eligible[1]))
            answers.append(one(client, above[day], eligible[0]))
            clock.now += 20 * HOUR
        answers.append(one(client, "B-NOBODY", eligible[0]))
        answers.append(one(client, premium[-1], ineligible[0]))
        answers.append(one(client, premium[-1], eligible[0], category="gift_cards"))
        answers.append(one(client, premium[-1], eligible[0], paid_amount="300.00"))
        answers.append(one(client, premium[-1], eligible[0], kind="return_and_refund"))
        answers.append(one(client, premium[-2], eligible[0], is_virtual=True))
        clock.now += HOUR  # one batch, one instant: a buyer three times within it
        items = [_request(f"ARB{i}", premium[-3], eligible[0]) for i in range(3)]
        items += [_request("ARB3", above[-1], eligible[0]), _request("AR1", premium[0], "x")]
        batch = client.post(f"{URL}/batch", json={"requests": items}, headers=DECIDER)
        assert batch.status_code == 200, batch.text
        # A refund decided again is answered from the log, not recorded twice.
        again = client.post(URL, json=_request("AR2", premium[0], eligible[0]), headers=DECIDER)
        assert again.json()["replayed"] is True
        # Afterwards an admin revokes a buyer seen in the period: the store holds that now.
        clock.now += HOUR
        revoke = client.post(
            f"/v1/admin/buyers/{premium[-1]}/revoke", json={"reason": "chargeback"}, headers=ADMIN
        )
        assert revoke.status_code == 200, revoke.text

    return {
        "root": root,
        "store": store,
        "audit": root / "audit.db",
        "uri": uri,
        "policy": policy,
        "version": version,
        "other": other,
        "answers": answers,
        "revoked": premium[-1],
    }


def _replay(served: dict, monkeypatch: pytest.MonkeyPatch, **kw: object):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", served["uri"])
    policy = kw.pop("policy", served["policy"])
    return audit_replay.replay_audit(
        served["audit"], served["store"], policy, lambda v: load_version(v, MODEL), **kw
    )


def test_replaying_the_audit_log_reproduces_every_served_decision(
    served: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _replay(served, monkeypatch)
    table = result.table
    assert len(table) == len(served["answers"]) + 4  # the batch's new refunds; no repeats
    # Every decision as served, but for the buyer an admin revoked after the period (the
    # store holds the revocation now): those, and only those, differ, and are marked so.
    assert result.unexplained.empty, result.unexplained.to_string()
    later = table["overridden_later"]
    assert set(table.loc[later, "buyer_id"]) == {served["revoked"]} and later.sum() >= 4
    assert table.loc[~later, "reproduced"].all()
    assert (~table.loc[later, "reproduced"]).all()
    assert table.loc[later, "reasons_replayed"].str.contains("BUYER_REVOKED").all()
    assert table["vector_matches_store"].all()
    assert (table["score_difference"].dropna() == 0).all()  # LightGBM: the very same bits
    # The period exercised what makes a replay hard: approvals counted for velocity and the
    # loss budget, scores on both sides of the threshold, rules failing for other reasons.
    reasons = set("; ".join(table["reasons_replayed"]).split("; "))
    assert {"VELOCITY_LIMIT", "LOSS_BUDGET_EXCEEDED", "BUYER_NOT_PREMIUM"} <= reasons
    assert {"SHOP_NOT_ELIGIBLE", "CATEGORY_EXCLUDED", "AMOUNT_NOT_BELOW_LIMIT"} <= reasons
    assert {"KIND_NOT_REFUND_ONLY", "BUYER_NO_HISTORY"} <= reasons
    assert (table["decision_served"] == "auto_approve").sum() >= 8
    assert table["score_served"].notna().sum() >= len(table) - 2


def test_another_policy_or_model_does_not_reproduce_them(
    served: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = served["policy"]
    stricter = base.model_copy(
        update={
            "version": "stricter",
            "velocity": base.velocity.model_copy(update={"max_auto_approvals_per_day": 1}),
        }
    )
    differ = _replay(served, monkeypatch, policy=stricter).differences
    # Served approvals that one a day turns down; and what the fewer approvals then change.
    refused = differ.loc[differ["decision_served"] == "auto_approve"]
    assert len(refused) >= 2
    assert (refused["reasons_replayed"] == "VELOCITY_LIMIT").all()
    assert (differ["decision_replayed"] == "manual_review").all()
    by_other = _replay(served, monkeypatch, model=served["other"])
    assert not by_other.reproduced
    assert (by_other.table["model_replayed"] == "other").all()
    assert (by_other.table["score_replayed"] != by_other.table["score_served"]).mean() > 0.9


def test_a_bad_audit_file_or_another_snapshot_is_refused_naming_it(
    served: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = served["policy"]
    with pytest.raises(audit_replay.AuditReplayError, match="no such file"):
        audit_replay.replay_audit(tmp_path / "none.db", served["store"], policy, {})
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(audit_replay.AuditReplayError, match="junk.db"):
        audit_replay.replay_audit(junk, served["store"], policy, {})
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(audit_replay.AuditReplayError, match="not an audit log"):
        audit_replay.replay_audit(empty, served["store"], policy, {})
    # The store re-materialized (a new snapshot): the period's decisions are not its.
    fresh = tmp_path / "fresh.db"
    materialize(served["root"] / "log", store_path=fresh, policy=policy)
    with pytest.raises(audit_replay.AuditReplayError, match="snapshot"):
        audit_replay.replay_audit(served["audit"], fresh, policy, {})


def test_the_command_checks_a_period_and_exits_2_on_a_bad_file(
    served: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", served["uri"])
    runner = CliRunner()
    args = ["replay-audit", "--audit", str(served["audit"]), "--store", str(served["store"])]
    policy = served["root"] / "policy.yaml"
    result = runner.invoke(app, [*args, "--policy", str(policy), "--out", str(tmp_path / "r.csv")])
    assert result.exit_code == 0, result.output
    # Only the revoked buyer's decisions differ, each explained by the later override.
    assert re.search(r" (\d+) different \(\1 on a buyer or shop an admin overrode", result.output)
    assert len(pd.read_csv(tmp_path / "r.csv")) == len(served["answers"]) + 4
    # The served version with other values (one approval a day): the check fails, exit 1.
    changed = tmp_path / "changed.yaml"
    text = policy.read_text(encoding="utf-8")
    changed.write_text(
        text.replace("max_auto_approvals_per_day: 2", "max_auto_approvals_per_day: 1")
    )
    result = runner.invoke(app, [*args, "--policy", str(changed)])
    assert result.exit_code == 1, result.output
    assert "VELOCITY_LIMIT" in result.output
    junk = tmp_path / "junk.db"
    junk.write_text("no audit here")
    result = runner.invoke(
        app,
        [
            "replay-audit",
            "--audit",
            str(junk),
            "--store",
            str(served["store"]),
            "--policy",
            str(policy),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "junk.db" in result.output
