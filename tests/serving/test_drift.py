"""Drift: PSI against the training population, the rolling window's gauges on /metrics, and
`python -m serving drift` on small worlds (one whose late months change buyer behaviour, one
that does not)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from modelcontract import BinnedProfile, ReferenceProfile
from serving.__main__ import app as cli
from serving.config import Settings
from serving.drift import (
    ALERT,
    NO_REFERENCE,
    NOT_ENOUGH_DATA,
    OK,
    SHARE_FLOOR,
    bin_shares,
    drift_report,
    psi,
)
from serving.drift_window import DriftWindow
from serving.model import Champion
from tests.serving.conftest import COLUMNS, DECIDER, THRESHOLD, HintBooster, body

# Deciles of 0..1 (edges 0.1 .. 0.9), no missing.
UNIFORM = BinnedProfile(edges=tuple(k / 10 for k in range(1, 10)), shares=(0.1,) * 10 + (0.0,))


def test_values_fall_in_the_profiles_bins_and_missing_in_the_last() -> None:
    profile = BinnedProfile(edges=(1.0, 2.0), shares=(0.25, 0.25, 0.25, 0.25))
    # bin i holds edges[i-1] <= x < edges[i]: 1.0 is in the second bin, 2.0 in the third.
    shares = bin_shares(np.array([0.0, 1.0, 1.5, 2.0, 9.0, math.nan, math.nan, -math.inf]), profile)
    np.testing.assert_allclose(shares, [1 / 8, 2 / 8, 2 / 8, 3 / 8])


def test_psi_is_the_formula_with_empty_bins_floored() -> None:
    live = np.array([0.5, 0.3, 0.2, 0.0])
    reference = [0.25, 0.25, 0.25, 0.25]
    a = np.array([0.5, 0.3, 0.2, SHARE_FLOOR])
    by_hand = sum((x - 0.25) * math.log(x / 0.25) for x in a)
    assert psi(live, reference) == pytest.approx(by_hand)
    assert psi(np.array(reference), reference) == 0.0
    with pytest.raises(ValueError, match="3 live bins against 4"):
        psi(np.ones(3) / 3, reference)


def _profile(columns: tuple[str, ...] = COLUMNS) -> ReferenceProfile:
    return ReferenceProfile(rows=1000, features=dict.fromkeys(columns, UNIFORM), score=UNIFORM)


def test_the_report_alerts_on_any_series_but_the_exempt_and_says_why_it_cannot_judge() -> None:
    rng = np.random.default_rng(0)
    rows = rng.random((2000, 2))
    scores = rng.random(2000)
    steady = drift_report(rows, COLUMNS, scores, _profile(), 0.25, threshold=0.3)
    assert steady.status == OK and max(steady.features.values()) < 0.01
    assert steady.premium_rate == pytest.approx(0.3, abs=0.03)
    shifted = rows.copy()
    shifted[:, 1] = rng.random(2000) ** 4  # orders_total piles up in the low bins
    alert = drift_report(shifted, COLUMNS, scores, _profile(), 0.25)
    assert alert.status == ALERT and alert.worst[0][0] == "orders_total"
    assert alert.features["orders_total"] > 0.25 > alert.features["score_hint"]
    exempt = drift_report(shifted, COLUMNS, scores, _profile(), 0.25, exempt={"orders_total"})
    assert exempt.status == OK and exempt.features["orders_total"] > 0.25
    # A series judged on the score alone, whatever the features.
    assert drift_report(rows, COLUMNS, scores**4, _profile(), 0.25).status == ALERT
    assert drift_report(rows, COLUMNS, scores, None, 0.25).status == NO_REFERENCE
    assert drift_report(rows[:0], COLUMNS, scores[:0], _profile(), 0.25).status == NOT_ENOUGH_DATA
    assert drift_report(rows[:99], COLUMNS, scores[:99], _profile(), 0.25).status == NOT_ENOUGH_DATA
    # A feature of the profile the rows lack is named, not judged.
    lacking = drift_report(rows[:, :1], COLUMNS[:1], scores, _profile(), 0.25)
    assert lacking.missing == ("orders_total",) and set(lacking.features) == {"score_hint"}


def test_the_window_keeps_the_last_rows_and_starts_again_for_another_version() -> None:
    window = DriftWindow(size=3)
    window.record("1", COLUMNS, [(np.array([float(i), 0.0]), i / 10) for i in range(5)])
    rows, scores = window.contents()
    assert sorted(rows[:, 0]) == [2.0, 3.0, 4.0] and sorted(scores) == [0.2, 0.3, 0.4]
    window.record("2", COLUMNS, [(np.array([9.0, 0.0]), 0.9)])
    rows, scores = window.contents()
    assert rows.tolist() == [[9.0, 0.0]] and window.version == "2"
    window.record("2", ("other", "layout"), [(np.array([1.0, 1.0]), 0.1)])
    assert window.count == 1 and window.columns == ("other", "layout")


def _gauges(client: TestClient) -> dict[str, float]:
    text = client.get("/metrics").text
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(("fastrefund_feature_psi", "fastrefund_score_psi", "fastrefund_drift"))
        or line.startswith("fastrefund_premium_rate")
    }


def test_metrics_show_psi_by_feature_and_the_premium_rate_of_what_was_scored(
    champion_loader: Callable, make_client: Callable[..., TestClient]
) -> None:
    champion = Champion(
        "buyer-quality", "7", HintBooster(), THRESHOLD, COLUMNS, "test-v1", profile=_profile()
    )
    champion_loader(champion)
    client = make_client()
    gauges = _gauges(client)
    assert gauges['fastrefund_drift_status{status="not enough data"}'] == 1.0
    assert not any(k.startswith("fastrefund_feature_psi") for k in gauges)
    # B_GOOD (score 0.01, 10 orders) over and over: everything in one decile of each series.
    requests = [body(f"DR{i}", buyer_id="B_GOOD") for i in range(120)]
    answer = client.post("/v1/refund-decisions/batch", json={"requests": requests}, headers=DECIDER)
    assert answer.status_code == 200
    client.post(
        "/v1/refund-decisions", json=body("DR-UNKNOWN", buyer_id="B_NOBODY"), headers=DECIDER
    )
    gauges = _gauges(client)
    assert gauges["fastrefund_drift_window_rows"] == 120.0  # the unknown buyer was not scored
    assert gauges['fastrefund_drift_status{status="alert"}'] == 1.0
    assert gauges["fastrefund_premium_rate"] == 1.0
    # One decile of ten: (1 - 0.1) ln(1 / 0.1) + 9 (1e-4 - 0.1) ln(1e-4 / 0.1).
    one_bin = 0.9 * math.log(10) + 9 * (SHARE_FLOOR - 0.1) * math.log(SHARE_FLOOR / 0.1)
    assert gauges['fastrefund_feature_psi{feature="score_hint"}'] == pytest.approx(one_bin)
    assert gauges["fastrefund_score_psi"] == pytest.approx(one_bin)
    # Refreshed off the event loop, a scrape shows the last refresh (computed in a thread).
    client.app.state.service.drift_gauges.refresh()  # type: ignore[attr-defined]
    more = [body(f"DM{i}", buyer_id="B_BAD") for i in range(10)]
    client.post("/v1/refund-decisions/batch", json={"requests": more}, headers=DECIDER)
    assert _gauges(client)["fastrefund_drift_window_rows"] == 120.0
    client.app.state.service.drift_gauges.refresh()  # type: ignore[attr-defined]
    assert _gauges(client)["fastrefund_drift_window_rows"] == 130.0


def test_a_champion_without_a_reference_shows_no_psi(
    champion_loader: Callable, make_client: Callable[..., TestClient]
) -> None:
    champion_loader(Champion("buyer-quality", "7", HintBooster(), THRESHOLD, COLUMNS, "test-v1"))
    client = make_client()
    requests = [body(f"NR{i}", buyer_id="B_GOOD") for i in range(5)]
    client.post("/v1/refund-decisions/batch", json={"requests": requests}, headers=DECIDER)
    gauges = _gauges(client)
    assert gauges['fastrefund_drift_status{status="no reference"}'] == 1.0
    assert gauges["fastrefund_premium_rate"] == 1.0
    assert not any(k.startswith(("fastrefund_feature_psi", "fastrefund_score_psi")) for k in gauges)


def test_the_command_on_an_empty_range_is_not_enough_data_and_bad_input_exits_2(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    client.post("/v1/refund-decisions", json=body("E1"), headers=DECIDER)
    reference = tmp_path / "profile.json"
    reference.write_text(_profile().model_dump_json())
    args = ["drift", "--audit", str(settings.audit_path), "--reference", str(reference)]
    result = CliRunner().invoke(cli, [*args, "--since", "2099-01-01"])
    assert result.exit_code == 3, result.output
    assert "not enough data (0 scored rows" in result.output
    result = CliRunner().invoke(cli, args)  # one decision: still too few
    assert result.exit_code == 3 and "not enough data (1 scored rows" in result.output
    bad = {
        "no audit log at": ["drift", "--audit", str(tmp_path / "none.db")],
        "is not a date": [*args, "--until", "June"],
        "must end in .png or .svg": [*args, "--plot", str(tmp_path / "p.jpg")],
        "--reference": ["drift", "--audit", str(settings.audit_path), "--reference", str(tmp_path)],
    }
    for message, extra in bad.items():
        result = CliRunner().invoke(cli, extra)
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize("command", ["drift", "shadow-report"])
def test_the_reports_refuse_to_guess_a_sqlite_log_when_the_log_is_in_postgresql(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTREFUND_DATABASE_URL", "postgresql://ops:s3cret-pw@127.0.0.1/refunds")
    result = CliRunner().invoke(cli, [command])
    assert result.exit_code == 2, result.output
    assert "keeps its log in PostgreSQL" in result.output and "s3cret-pw" not in result.output
