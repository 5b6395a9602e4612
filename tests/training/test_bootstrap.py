"""The gate's paired bootstrap: exact point estimates, seeded intervals, noise told from loss."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from training.bootstrap import paired_bootstrap
from training.config import GateParams
from training.evaluate import choose_threshold
from training.gate import GateFigures, decide

RNG = np.random.default_rng(11)
N = 4000
BAD = (RNG.random(N) < 0.05).astype(int)


def _model(signal: float, seed: int, decimals: int = 3) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, 0.03, N)
    return np.clip(0.04 + signal * BAD + noise, 0, 1).round(decimals)  # rounded: ties


def test_the_point_estimates_are_the_metrics_of_the_rows_as_they_are() -> None:
    strong, weak = _model(0.06, 1), _model(0.02, 2, decimals=2)
    result = paired_bootstrap(BAD, strong, {"weak": weak}, 0.01, rounds=100)["weak"]
    auc = roc_auc_score(BAD, strong) - roc_auc_score(BAD, weak)
    assert result.auc_difference.estimate == pytest.approx(auc, abs=1e-12)
    coverage = choose_threshold(strong, BAD, 0.01).coverage
    assert result.challenger_coverage.estimate == pytest.approx(coverage, abs=1e-12)
    assert result.other_coverage.estimate == pytest.approx(
        choose_threshold(weak, BAD, 0.01).coverage, abs=1e-12
    )
    assert result.auc_difference.low <= auc <= result.auc_difference.high


def test_the_intervals_are_seeded_and_tell_noise_from_a_real_loss() -> None:
    one, twin, weak = _model(0.05, 1), _model(0.05, 2), _model(0.015, 3)
    others = {"twin": twin, "weak": weak, "itself": one}
    first = paired_bootstrap(BAD, one, others, 0.02, rounds=300, seed=4)
    assert first == paired_bootstrap(BAD, one, others, 0.02, rounds=300, seed=4)
    assert first != paired_bootstrap(BAD, one, others, 0.02, rounds=300, seed=5)
    # A model of the same quality with other noise: its small difference is noise.
    assert first["twin"].auc_difference.low < 0 < first["twin"].auc_difference.high
    assert not first["twin"].significantly_worse
    assert first["itself"].auc_difference.as_list() == [0.0, 0.0, 0.0]
    # The weak model is far worse; the other way round, the challenger is refused.
    assert first["weak"].auc_difference.low > 0
    reversed_ = paired_bootstrap(BAD, weak, {"champion": one}, 0.02, rounds=300)["champion"]
    assert reversed_.significantly_worse
    reason = reversed_.reason(0.95)
    assert reason is not None and reason.startswith("significantly worse than champion (95%")


def test_the_gate_refuses_a_challenger_significantly_worse_than_a_baseline() -> None:
    weak, baseline = _model(0.015, 3), _model(0.05, 1)
    comparisons = paired_bootstrap(BAD, weak, {"logistic": baseline}, 0.02, rounds=200)
    figures = GateFigures("2", 0.8, 0.5, 0.01, 0.5, 0.01)
    verdict = decide(figures, None, GateParams(), comparisons=comparisons)
    assert verdict.label == "refused"
    assert verdict.reasons[0].startswith("significantly worse than logistic")
    assert decide(figures, None, GateParams(), force=True, comparisons=comparisons).forced
    fine = paired_bootstrap(BAD, baseline, {"logistic": _model(0.05, 2)}, 0.02, rounds=200)
    assert decide(figures, None, GateParams(), comparisons=fine).label == "promoted"
