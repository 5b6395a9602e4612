"""The challenger in shadow: scored on every decision's row, recorded with the decision it
would have made, never changing the answer; one that fails is skipped; loading it from the
registry asks no gate verdict but reads no pickle and checks a recorded sha256."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from mlflow.models import infer_signature
from typer.testing import CliRunner

from modelcontract import CHALLENGER, MODEL_NAME
from serving.__main__ import app as cli
from serving.background import refresh_challenger
from serving.config import Settings
from serving.metrics import Metrics
from serving.model import Champion, ModelUnavailable
from serving.policy import load_policy
from serving.service import Service
from serving.shadow import load_challenger
from serving.shadow_report import bad_rate_lines, bad_rates, with_labels
from tests.factories import make_refunds
from tests.serving.conftest import (
    COLUMNS,
    DECIDER,
    THRESHOLD,
    BrokenBooster,
    HintBooster,
    body,
    decide,
    stub_champion,
)

BATCH = "/v1/refund-decisions/batch"


class ScaledBooster(HintBooster):
    """Scores `factor` times the hint: a stricter (factor > 1) or laxer model."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def predict(self, rows: np.ndarray, **_: object) -> np.ndarray:
        self.calls += 1
        return np.minimum(rows[:, 0] * self.factor, 1.0)


def _challenger(booster: object, version: str = "8", feature_set: str = "test-v1") -> Champion:
    return Champion("buyer-quality", version, booster, THRESHOLD, COLUMNS, feature_set)


def _stable(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k not in ("refund_id", "decided_at")}


def _unavailable(client: TestClient, component: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'fastrefund_unavailable_total{{component="{component}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_the_challenger_is_recorded_beside_the_champion_and_never_changes_the_answer(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    service = client.app.state.service  # type: ignore[attr-defined]
    plain = {b: decide(client, body(f"P-{b}", buyer_id=b)) for b in ("B_GOOD", "B_BAD")}
    service.challenger = _challenger(ScaledBooster(20.0))  # 0.01 -> 0.2: not premium
    strict = decide(client, body("S-B_GOOD"))
    service.challenger = _challenger(ScaledBooster(0.01), version="9")  # 0.9 -> 0.009
    lax = decide(client, body("L-B_BAD", buyer_id="B_BAD"))
    assert _stable(strict) == _stable(plain["B_GOOD"]) and strict["decision"] == "auto_approve"
    assert _stable(lax) == _stable(plain["B_BAD"]) and lax["decision"] == "manual_review"
    batch = [
        body("BT-1", buyer_id="B_GOOD2"),
        body("BT-2", buyer_id="B_BAD"),
        body("BT-3", buyer_id="B_NOBODY"),
    ]
    results = client.post(BATCH, json={"requests": batch}, headers=DECIDER).json()["results"]
    decisions = [r["decision"]["decision"] for r in results]
    assert decisions == ["auto_approve", "manual_review", "manual_review"]

    audit = service.audit
    shadow = {
        rid: (r.challenger_version, r.challenger_score, r.challenger_decision)
        for rid in ("P-B_GOOD", "S-B_GOOD", "L-B_BAD", "BT-1", "BT-2", "BT-3")
        if (r := audit.get(rid)) is not None
    }
    assert shadow["P-B_GOOD"] == (None, None, None)  # before any challenger
    assert shadow["S-B_GOOD"] == ("8", pytest.approx(0.2), "manual_review")
    assert shadow["L-B_BAD"] == ("9", pytest.approx(0.009), "auto_approve")
    assert shadow["BT-1"] == ("9", pytest.approx(0.0002), "auto_approve")
    assert shadow["BT-3"] == (None, None, None)  # an unknown buyer: nothing to score

    out = tmp_path / "d.csv"
    export = ["export-decisions", "--out", str(out), "--audit", str(settings.audit_path)]
    assert CliRunner().invoke(cli, export).exit_code == 0
    frame = pd.read_csv(out).set_index("refund_id")
    assert frame.loc["L-B_BAD", "challenger_decision"] == "auto_approve"
    assert frame.loc["S-B_GOOD", "challenger_score"] == pytest.approx(0.2)
    assert pd.isna(frame.loc["P-B_GOOD", "challenger_version"])

    page = tmp_path / "shadow.html"
    report = ["shadow-report", "--audit", str(settings.audit_path), "--html", str(page)]
    result = CliRunner().invoke(cli, report)
    assert result.exit_code == 0, result.output
    assert "4 of 7 decisions scored by a challenger in shadow" in result.output
    assert "champion 7 vs challenger 8: 1 decisions, agreement 0.0%" in result.output
    assert "champion 7 vs challenger 9: 3 decisions, agreement 33.3%" in result.output
    assert "by the challenger only 2" in result.output  # B_BAD, twice
    lines = [line for line in result.output.splitlines() if line.startswith(("S-", "L-", "BT-"))]
    assert [line.split()[0] for line in lines] == ["BT-2", "L-B_BAD", "S-B_GOOD"]
    assert "data:image/png;base64," in page.read_text()


def test_a_challenger_that_fails_is_skipped_and_counted(client: TestClient) -> None:
    service = client.app.state.service  # type: ignore[attr-defined]
    expected = decide(client, body("F0", buyer_id="B_BAD"))  # no approval: no velocity
    service.challenger = _challenger(BrokenBooster())
    assert _stable(decide(client, body("F1", buyer_id="B_BAD"))) == _stable(expected)
    service.challenger = _challenger(HintBooster(), feature_set="another-feature-set")
    assert _stable(decide(client, body("F2", buyer_id="B_BAD"))) == _stable(expected)
    for refund_id in ("F1", "F2"):
        assert service.audit.get(refund_id).challenger_version is None
    assert _unavailable(client, "shadow") == 2.0
    assert _unavailable(client, "scoring") == 0.0


def test_a_challenger_that_is_the_champion_is_not_scored(client: TestClient) -> None:
    service = client.app.state.service  # type: ignore[attr-defined]
    same = HintBooster()
    service.challenger = _challenger(same, version=service.champion.version)
    decide(client, body("SAME"))
    assert same.calls == 0 and service.audit.get("SAME").challenger_version is None


def test_the_shadow_report_without_a_challenger_says_so(
    client: TestClient, settings: Settings
) -> None:
    decide(client, body("N1"))
    result = CliRunner().invoke(cli, ["shadow-report", "--audit", str(settings.audit_path)])
    assert result.exit_code == 0
    assert "no decision of the 1 in the range was scored by a challenger" in result.output
    bad = CliRunner().invoke(
        cli, ["shadow-report", "--audit", str(settings.audit_path), "--html", "x.pdf"]
    )
    assert bad.exit_code == 2 and "must end in .html" in bad.output


def _register(uri: str, workdir: Path, threshold: float = 0.1) -> tuple[str, lgb.Booster]:
    """A Booster registered as training registers it, aliased @challenger, no gate tags."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, len(COLUMNS)))
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 4, "num_threads": 1},
        lgb.Dataset(x, label=(x[:, 0] > 0).astype(int)),
        num_boost_round=5,
    )
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        client = MlflowClient(uri, uri)
        experiment = client.get_experiment_by_name("shadow")
        experiment_id = (
            experiment.experiment_id
            if experiment
            else client.create_experiment("shadow", (workdir / "artifacts").as_uri())
        )
        example = pd.DataFrame(x[:2], columns=list(COLUMNS))
        with mlflow.start_run(experiment_id=experiment_id):
            info = mlflow.lightgbm.log_model(
                booster,
                name="model",
                signature=infer_signature(example, booster.predict(x[:2])),
                pip_requirements=["lightgbm"],  # no inference: quick
                registered_model_name=MODEL_NAME,
            )
        version = str(info.registered_model_version)
        tags = {
            "threshold": str(threshold),
            "feature_columns": json.dumps(list(COLUMNS)),
            "feature_set_version": "test-v1",
        }
        for key, value in tags.items():
            client.set_model_version_tag(MODEL_NAME, version, key, value)
        client.set_registered_model_alias(MODEL_NAME, CHALLENGER, version)
    finally:
        mlflow.set_tracking_uri(previous)
    return version, booster


@pytest.mark.slow
def test_the_challenger_loads_from_the_registry_without_a_verdict_but_never_unchecked(
    tmp_path: Path, empty_mlflow_db: Path
) -> None:
    shutil.copy(empty_mlflow_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    version, booster = _register(uri, tmp_path)
    challenger = load_challenger(uri)
    row = np.array([0.5, -1.0])
    assert challenger.version == version and challenger.threshold == 0.1
    assert challenger.score_one is not None  # LightGBM's fast single-row path, as the champion's
    assert challenger.score_rows([row])[0] == pytest.approx(booster.predict(row[None, :])[0])

    client = MlflowClient(uri, uri)
    client.set_model_version_tag(MODEL_NAME, version, "model_sha256", "0" * 64)
    with pytest.raises(ModelUnavailable, match="sha256"):
        load_challenger(uri)
    client.delete_model_version_tag(MODEL_NAME, version, "model_sha256")
    client.set_model_version_tag(MODEL_NAME, version, "threshold", "0.9")
    with pytest.raises(ModelUnavailable, match="outside"):
        load_challenger(uri, max_threshold=0.5)
    client.set_model_version_tag(MODEL_NAME, version, "threshold", "0.1")

    # The service follows the alias: a challenger while it differs from the champion.
    settings = Settings(
        store_path=tmp_path / "none.db",
        audit_path=tmp_path / "audit.db",
        mlflow_tracking_uri=uri,
        model_check_seconds=0,
    )
    service = Service(settings, load_policy(), Metrics())
    service.champion = stub_champion("1000")
    assert asyncio.run(refresh_challenger(service)) == version
    assert service.challenger is not None and service.challenger.version == version
    service.champion = stub_champion(version)  # promoted: no shadow of itself
    asyncio.run(refresh_challenger(service))
    assert service.challenger is None
    client.delete_registered_model_alias(MODEL_NAME, CHALLENGER)
    service.champion = stub_champion("1000")
    assert asyncio.run(refresh_challenger(service)) is None and service.challenger is None


def test_each_models_bad_rate_on_what_only_it_approves_counts_matured_windows_only() -> None:
    decided = pd.Timestamp("2025-06-01", tz="UTC")
    frame = pd.DataFrame(
        {
            "refund_id": ["A", "B", "C", "D", "E", "F"],
            "decided_at": [decided] * 5 + [decided + pd.Timedelta(days=20)],
            "model_version": ["7"] * 6,
            "challenger_version": ["8"] * 6,
            # A, B: only the champion approves; C, D, E, F: only the challenger.
            "decision": ["auto_approve"] * 2 + ["manual_review"] * 4,
            "challenger_decision": ["manual_review"] * 2 + ["auto_approve"] * 4,
        }
    )
    refunds = make_refunds(
        *(
            {"refund_id": r, "order_id": f"O{r}", "buyer_id": "B", "requested_at": "2025-06-01"}
            for r in "ABCE"
        )
    )
    confirmed = {"A": "2025-06-10", "C": "2025-06-20", "E": "2025-08-01"}  # E: too late
    refunds["abuse_confirmed_at"] = pd.to_datetime(refunds["refund_id"].map(confirmed), utc=True)
    labelled = with_labels(frame, refunds, end=pd.Timestamp("2025-07-15", tz="UTC"))
    # D is not in the log; F's 30 days have not passed by the log's end.
    assert labelled["abuse"].tolist() == [True, False, True, pd.NA, False, pd.NA]
    (row,) = bad_rates(labelled).to_dict("records")
    assert (row["champion_only_matured"], row["champion_only_bad_rate"]) == (2, 0.5)
    assert (row["challenger_only_matured"], row["challenger_only_bad_rate"]) == (2, 0.5)
    assert bad_rate_lines(labelled) == [
        "champion 7 vs challenger 8: approved by the champion only: 2 matured, 50.0% abuse; "
        "by the challenger only: 2 matured, 50.0% abuse"
    ]


def test_a_challenger_that_fails_to_load_is_retried_only_every_tenth_check(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import serving.background

    attempts: list[str] = []
    alias = {"challenger": "11"}

    def load(*_: object) -> Champion:
        attempts.append(alias["challenger"])
        if alias["challenger"] == "11":
            raise ModelUnavailable("models:/buyer-quality@challenger: broken")
        return _challenger(HintBooster(), version=alias["challenger"])

    asked: list[int] = []  # the alias read at each check

    def version(*_: object) -> str:
        asked.append(len(attempts))
        return alias["challenger"]

    monkeypatch.setattr(serving.background, "champion_version", version)
    monkeypatch.setattr(serving.background, "load_challenger", load)
    service = Service(settings, load_policy(), Metrics())
    service.champion = stub_champion("7")

    async def checks(n: int) -> None:
        task = asyncio.create_task(serving.background.follow_challenger(service, 0.001))
        while len(attempts) < n:
            await asyncio.sleep(0.001)
        task.cancel()

    async def run() -> None:
        await asyncio.wait_for(checks(3), timeout=10)
        assert attempts == ["11", "11", "11"] and service.challenger is None
        # After a failure, ten checks read the alias without loading before the next try.
        assert asked.count(1) >= 10 and asked.count(2) >= 10
        alias["challenger"] = "12"  # the alias moves on: loaded at the next check
        await asyncio.wait_for(checks(4), timeout=10)

    asyncio.run(run())
    assert service.challenger is not None and service.challenger.version == "12"
