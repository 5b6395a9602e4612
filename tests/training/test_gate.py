"""The promotion gate's rules, as a table of challengers against a champion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelcontract import GATE_VERDICTS
from training.config import GateParams
from training.gate import GateFigures, decide, sanity_problems
from training.promote import changed_definition, in_sample

PARAMS = GateParams()
CHAMPION = GateFigures(
    "1",
    roc_auc=0.850,
    coverage_at_target=0.60,
    calibration_error=0.01,
    premium_coverage=0.6,
    premium_bad_rate=0.009,
)


def challenger(**changes: float) -> GateFigures:
    values = {
        "roc_auc": 0.850,
        "coverage_at_target": 0.60,
        "calibration_error": 0.01,
        "premium_coverage": 0.6,
        "premium_bad_rate": 0.009,
        **changes,
    }
    return GateFigures("2", **values)


@pytest.mark.parametrize(
    ("changes", "promoted", "reason"),
    [
        ({}, True, None),
        ({"roc_auc": 0.846}, True, None),  # 0.004 below: within tolerance
        ({"roc_auc": 0.844}, False, "roc_auc"),  # 0.006 below
        ({"roc_auc": 0.90, "coverage_at_target": 0.599}, False, "coverage_at_target"),
        ({"coverage_at_target": 0.7}, True, None),
        ({"calibration_error": 0.05}, True, None),
        ({"calibration_error": 0.051}, False, "calibration_error"),
        ({"roc_auc": float("nan")}, False, "roc_auc"),
    ],
)
def test_challenger_is_promoted_only_when_not_worse(
    changes: dict, promoted: bool, reason: str | None
) -> None:
    verdict = decide(challenger(**changes), CHAMPION, PARAMS)
    assert verdict.promote is promoted
    assert verdict.label == ("promoted" if promoted else "refused")
    if reason:
        assert any(r.startswith(reason) for r in verdict.reasons)
    else:
        assert verdict.reasons == []


def test_first_model_needs_only_the_sanity_checks() -> None:
    poor = challenger(roc_auc=0.55, coverage_at_target=0.0, calibration_error=0.2)
    assert decide(poor, None, PARAMS).promote
    broken = GateFigures("2", 0.9, 0.6, 0.01, 0.6, 0.01, problems=("degenerate scores",))
    verdict = decide(broken, None, PARAMS)
    assert not verdict.promote
    assert verdict.reasons == ["sanity: degenerate scores"]


def test_a_champion_that_cannot_be_compared_still_leaves_the_calibration_bound() -> None:
    # A model serves, but its figures are set aside (in-sample, unreadable or not sane):
    # no comparison, and still no badly calibrated replacement.
    rough = challenger(roc_auc=0.55, coverage_at_target=0.0, calibration_error=0.2)
    verdict = decide(rough, None, PARAMS, replacing=True)
    assert not verdict.promote
    assert [r.split()[0] for r in verdict.reasons] == ["calibration_error"]
    assert decide(challenger(roc_auc=0.55), None, PARAMS, replacing=True).promote


@pytest.mark.parametrize(
    ("params", "gate", "expected"),
    [
        # Validation 2025-10-01 + 90 + 30 days = 2026-01-29.
        ({"train_dates": "2025-07-01,2025-08-01", "valid_dates": "2025-10-01"}, "2026-02-01", None),
        ({"train_dates": "2025-07-01", "valid_dates": "2025-10-01"}, "2026-01-28", "2026-01-29"),
        ({"train_dates": "2025-07-01", "valid_dates": "2025-10-01"}, "2026-01-29", None),
        # The run's own horizon and maturity count, not the defaults.
        (
            {
                "valid_dates": "2025-10-01",
                "snapshots.horizon_days": "30",
                "snapshots.maturity_days": "0",
            },
            "2025-11-01",
            None,
        ),
        ({"valid_dates": "2025-10-01", "snapshots.horizon_days": "30"}, "2025-11-29", "2025-11-30"),
        ({"valid_dates": "2025-10-01", "snapshots.horizon_days": "30"}, "2025-11-30", None),
        ({"train_dates": "2026-01-01", "valid_dates": ""}, "2026-02-01", "2026-05-01"),
        ({}, "2026-02-01", None),  # a run that does not record its dates: not judged in-sample
    ],
)
def test_a_model_is_in_sample_on_a_gate_date_its_labels_reach(
    params: dict, gate: str, expected: str | None
) -> None:
    reason = in_sample(params, pd.Timestamp(gate, tz="UTC"))
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and f"complete only at {expected}" in reason


def test_force_overrides_a_refusal_and_says_so() -> None:
    verdict = decide(challenger(roc_auc=0.70), CHAMPION, PARAMS, force=True)
    assert verdict.promote
    assert verdict.forced
    assert verdict.label == "forced"
    assert verdict.reasons  # the refusal is still recorded
    assert decide(challenger(), CHAMPION, PARAMS, force=True).label == "promoted"


def test_every_verdict_the_gate_records_on_a_version_is_one_the_contract_reads() -> None:
    labels = {
        decide(challenger(), CHAMPION, PARAMS).label,
        decide(challenger(roc_auc=0.70), CHAMPION, PARAMS).label,
        decide(challenger(roc_auc=0.70), CHAMPION, PARAMS, force=True).label,
    }
    assert labels == set(GATE_VERDICTS)


COLUMNS = ["a", "b", "c"]


def spread() -> np.ndarray:
    return np.linspace(0.001, 0.3, 200)


@pytest.mark.parametrize(
    ("scores", "threshold", "tagged", "booster", "expected"),
    [
        (spread(), 0.1, COLUMNS, COLUMNS, None),
        (np.full(200, 0.02), 0.1, COLUMNS, COLUMNS, "degenerate scores"),
        (np.r_[spread()[:-1], np.nan], 0.1, COLUMNS, COLUMNS, "finite probabilities"),
        (np.r_[spread()[:-1], 1.5], 0.1, COLUMNS, COLUMNS, "finite probabilities"),
        (spread(), 0.9, COLUMNS, COLUMNS, "flags every buyer"),
        (spread(), 0.0001, COLUMNS, COLUMNS, "flags no buyer"),
        (spread(), 0.1, ["a", "c", "b"], COLUMNS, "differs from the Booster"),
        (spread(), 0.1, [*COLUMNS, "zz"], [*COLUMNS, "zz"], "cannot compute feature(s) zz"),
        (spread(), 0.1, [], [], "feature list is empty"),
    ],
)
def test_sanity_checks(
    scores: np.ndarray, threshold: float, tagged: list, booster: list, expected: str | None
) -> None:
    problems = sanity_problems(scores, threshold, tagged, booster, COLUMNS, PARAMS)
    if expected is None:
        assert problems == []
    else:
        assert any(expected in p for p in problems), problems


def test_a_challenger_that_changes_what_premium_means_is_named() -> None:
    champion = {
        "snapshots.horizon_days": "90",
        "snapshots.maturity_days": "30",
        "target_bad_rate": "0.01",
        "model.learning_rate": "0.05",
    }
    same = {**champion, "model.learning_rate": "0.1"}  # a better model of the same thing
    assert changed_definition(same, champion) == []
    changed = changed_definition({**champion, "target_bad_rate": "0.03"}, champion)
    assert changed == [
        "its target_bad_rate is 0.03, the champion's 0.01: it changes what premium means "
        "(promote with --force to do that)"
    ]
    shorter = {**champion, "snapshots.horizon_days": "30", "snapshots.maturity_days": "0"}
    assert [c.split(" is ")[0] for c in changed_definition(shorter, champion)] == [
        "its horizon_days",
        "its maturity_days",
    ]
    # A champion whose run does not record a setting is not compared on it.
    assert changed_definition({**champion, "target_bad_rate": "0.03"}, {}) == []
