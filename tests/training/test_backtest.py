"""The backtest's consistency checks, on a small world with a stand-in model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from features.simulate import simulate
from serving.policy import load_policy
from training import backtest as bt
from training.backtest_run import BacktestInputError, read_policies


class Booster:
    """A stand-in with LightGBM's predict: P(bad) rising with past refunds."""

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(3 - 0.2 * np.nan_to_num(rows[:, 0])))


@pytest.fixture(scope="module")
def prepared() -> bt.Prepared:
    log = simulate(buyers=600, shops=12, days=150, seed=3).log
    model = bt.ReplayModel("1", Booster(), 0.5, ("refunds_365d",))
    return bt.prepare(log, bt.ModelSchedule.single(model))


def test_an_amount_limit_of_one_fen_approves_nothing(prepared: bt.Prepared) -> None:
    policy = load_policy().model_copy(update={"amount_limit_fen": 1})
    assert (bt.replay(prepared, policy)["decision"] != "auto_approve").all()
    assert (bt.replay(prepared, load_policy())["decision"] == "auto_approve").any()


def test_threshold_one_with_every_rule_off_approves_every_candidate(prepared) -> None:
    base = load_policy()
    off = base.model_copy(
        update={
            "amount_limit_fen": 10**12,
            "excluded_categories": frozenset(),
            "min_history": base.min_history.model_copy(update={"orders": 0, "account_age_days": 0}),
            "velocity": base.velocity.model_copy(
                update={
                    "max_auto_approvals_per_day": 10**9,
                    "max_auto_approvals_per_30_days": 10**9,
                }
            ),
            "shop_eligibility": base.shop_eligibility.model_copy(
                update={
                    "min_shop_age_days": 0,
                    "max_late_shipment_rate": 1.0,
                    "max_tracking_after_refund_rate": 1.0,
                    "max_dispute_rate": 1.0,
                }
            ),
            "revoke_on_confirmed_abuse": False,
            "max_premium_threshold": 1.0,
        }
    )
    decided = bt.replay(prepared, off, threshold=1.0)
    requests = prepared.requests
    # Candidates: goods neither virtual nor custom, order not cancelled, buyer and shop known.
    candidate = (
        ~requests["is_virtual"].to_numpy()
        & ~requests["is_custom"].to_numpy()
        & (requests["status"] == "paid_unshipped").to_numpy()
        & prepared.buyer_known
    )
    approved = (decided["decision"] == "auto_approve").to_numpy()
    assert candidate.sum() > 100
    assert (approved == candidate).mean() > 0.99  # the rest: shops opened on the day
    assert approved[candidate].all() or (approved <= candidate).all()


def test_a_loss_budget_costs_coverage_and_saves_loss(prepared: bt.Prepared) -> None:
    base = load_policy()
    capped = base.model_copy(
        update={"loss_budget": type(base.loss_budget)(max_per_shop_day_fen=300.0)}
    )
    free = bt.decisions_table(prepared, bt.replay(prepared, base))
    budget = bt.decisions_table(prepared, bt.replay(prepared, capped))
    a, b = bt.figures(free).iloc[0], bt.figures(budget).iloc[0]
    assert b["auto_approved"] < a["auto_approved"]
    assert b["cny_at_risk"] < a["cny_at_risk"]
    assert budget["reasons"].str.contains("LOSS_BUDGET_EXCEEDED").any()


def test_policy_files_are_refused_naming_the_key(tmp_path) -> None:
    text = open("serving/policy.yaml", encoding="utf-8").read()
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(text + "\nsurprise: 1\n")
    with pytest.raises(BacktestInputError, match="surprise"):
        read_policies(unknown, None)
    negative = tmp_path / "negative.yaml"
    negative.write_text(text.replace("amount_limit_fen: 30000", "amount_limit_fen: -5"))
    with pytest.raises(BacktestInputError, match="amount_limit_fen"):
        read_policies(negative, None)
    same_version = tmp_path / "same.yaml"
    same_version.write_text(text.replace("amount_limit_fen: 30000", "amount_limit_fen: 20000"))
    with pytest.raises(BacktestInputError, match="amount_limit_fen"):
        read_policies(Path("serving/policy.yaml"), same_version)
