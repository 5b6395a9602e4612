"""The simulator's profiles: each writes a valid log, has the properties it claims, and
keeps an oracle that is right about it (calibrated, month by month where the world drifts)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from features import labels, load_log
from features.__main__ import app
from features.schema import validate_log
from features.simulate import (
    PROFILES,
    SimulatedWorld,
    UnknownProfileError,
    WorldParams,
    oracle_scores,
    simulate,
    write_world,
)

# Small worlds, long enough for a year of matured monthly labels.
SIZES = {"default": 4_000, "small-shop": 5_000, "weak-signal": 6_000, "drifting": 8_000}
SEED = 3


@pytest.fixture(scope="module")
def worlds() -> dict[str, SimulatedWorld]:
    return {
        name: simulate(
            buyers=buyers, shops=None if name == "small-shop" else 150, seed=SEED, profile=name
        )
        for name, buyers in SIZES.items()
    }


def monthly_dates(world: SimulatedWorld) -> list[str]:
    """Every first of a month whose label window (90 + 30 days) matures in the log."""
    first = world.log.start + pd.DateOffset(months=1)
    dates = pd.date_range(first, world.log.end - pd.Timedelta(days=120), freq="MS")
    return [d.date().isoformat() for d in dates]


def label_rates_and_oracle(world: SimulatedWorld, dates: list[str]) -> tuple[list[float], float]:
    """The label bad rate per date, and expected over observed bad labels on those dates."""
    rates, expected, observed = [], 0.0, 0
    for as_of in dates:
        label = labels(world.log, as_of)
        score = oracle_scores(world.truth, as_of).reindex(label["buyer_id"]).to_numpy()
        bad = label["bad"].astype(int).to_numpy()
        rates.append(float(bad.mean()))
        expected, observed = expected + float(score.sum()), observed + int(bad.sum())
    return rates, expected / observed


@pytest.mark.parametrize("name", list(SIZES))
def test_each_profile_writes_a_log_the_reader_accepts_and_an_oracle(
    worlds: dict[str, SimulatedWorld], name: str, tmp_path: Path
) -> None:
    world = worlds[name]
    write_world(world, tmp_path / name)
    loaded = load_log(tmp_path / name)
    assert len(loaded.buyers) == SIZES[name] and len(loaded.refunds) > 0
    truth = pd.read_parquet(tmp_path / name / "truth.parquet")
    score = oracle_scores(truth, monthly_dates(world)[-1])
    assert len(score) == SIZES[name] and score.between(0, 1).all() and score.notna().all()
    meta = json.loads((tmp_path / name / "meta.json").read_text())
    if name == "default":
        assert "profile" not in truth.columns and "profile" not in meta["parameters"]
    else:
        assert set(truth["profile"]) == {name} and meta["parameters"]["profile"] == name
        assert meta["parameters"]["changed"]  # what the profile changes is on record


@pytest.mark.parametrize("name", list(SIZES))
def test_the_oracle_stays_calibrated_on_each_profile(
    worlds: dict[str, SimulatedWorld], name: str
) -> None:
    world = worlds[name]
    _, ratio = label_rates_and_oracle(world, monthly_dates(world))
    assert 0.8 < ratio < 1.25


def test_the_oracle_of_a_profile_uses_its_laws_not_the_default_ones(
    worlds: dict[str, SimulatedWorld],
) -> None:
    # The pre-shipment exploit changes the confirmation law's outcome tilt, so the laws differ.
    world = worlds["drifting"]
    as_of = monthly_dates(world)[3]
    own = oracle_scores(world.truth, as_of)
    assert not np.allclose(own, oracle_scores(world.truth, as_of, params=WorldParams()))
    unnamed = world.truth.drop(columns="profile")
    pd.testing.assert_series_equal(
        oracle_scores(unnamed, as_of, params=PROFILES["drifting"].params), own
    )
    world.truth.loc[0, "profile"] = "gone"
    with pytest.raises(UnknownProfileError, match="gone"):
        oracle_scores(world.truth, as_of)
    world.truth.loc[0, "profile"] = "drifting"


def test_the_default_profile_is_the_world_without_a_profile() -> None:
    plain = simulate(buyers=500, shops=30, days=200, seed=1)
    named = simulate(buyers=500, shops=30, days=200, seed=1, profile="default")
    pd.testing.assert_frame_equal(plain.log.refunds, named.log.refunds)
    pd.testing.assert_frame_equal(plain.truth, named.truth)
    assert plain.meta == named.meta
    assert simulate(days=30, seed=1).meta["parameters"]["buyers"] == 20_000


def test_explicit_sizes_override_the_profile_and_the_profile_fills_the_rest() -> None:
    world = simulate(profile="small-shop", buyers=3_000, days=200, seed=1)
    assert len(world.log.buyers) == 3_000 and len(world.log.shops) == 1
    assert world.log.end - world.log.start == pd.Timedelta(days=200)


def test_an_unknown_profile_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownProfileError, match="small-shop, weak-signal, drifting"):
        simulate(profile="tiny")
    result = CliRunner().invoke(
        app, ["simulate", "--out", str(tmp_path / "w"), "--profile", "tiny"]
    )
    assert result.exit_code == 2
    assert "unknown profile 'tiny'" in result.output and "drifting" in result.output
    assert not (tmp_path / "w").exists()


def test_the_command_line_takes_a_profile_and_overrides(tmp_path: Path) -> None:
    out = tmp_path / "shop"
    result = CliRunner().invoke(
        app, ["simulate", "--out", str(out), "--profile", "small-shop", "--buyers", "3000"]
    )
    assert result.exit_code == 0, result.output
    log = load_log(out)
    assert len(log.buyers) == 3_000 and len(log.shops) == 1
    assert "(profile small-shop)" in result.output


def test_small_shop_is_one_shop_near_one_percent_bad_and_mostly_returns(
    worlds: dict[str, SimulatedWorld],
) -> None:
    world = worlds["small-shop"]
    assert PROFILES["small-shop"].shops == 1 and 3_000 <= PROFILES["small-shop"].buyers <= 8_000
    assert world.log.orders["shop_id"].nunique() == 1
    rates, _ = label_rates_and_oracle(world, monthly_dates(world))
    assert 0.005 <= np.mean(rates) <= 0.02
    assert (world.log.refunds["kind"] == "return_and_refund").mean() > 0.75
    # About seven orders and one and a half after-sales requests per buyer, as one shop's
    # export of a few thousand buyers has.
    assert 4 < len(world.log.orders) / len(world.log.buyers) < 11
    assert 0.15 < len(world.log.refunds) / len(world.log.orders) < 0.3


def simple_habits(world: SimulatedWorld) -> pd.DataFrame:
    """Per buyer with three or more requests: its type and model-free refund habits."""
    refunds = world.log.refunds.join(
        world.log.orders.set_index("order_id")[["shipped_at", "delivered_at"]], on="order_id"
    )
    refunds["pre_shipment"] = refunds["shipped_at"].isna() | (
        refunds["shipped_at"] > refunds["requested_at"]
    )
    refunds["refund_only_after_delivery"] = (refunds["kind"] == "refund_only") & (
        refunds["delivered_at"] <= refunds["requested_at"]
    )
    habits = refunds.groupby("buyer_id").agg(
        requests=("refund_id", "size"),
        pre_shipment=("pre_shipment", "mean"),
        refund_only_after_delivery=("refund_only_after_delivery", "mean"),
    )
    habits["orders"] = world.log.orders.groupby("buyer_id").size()
    habits["requests_per_order"] = habits["requests"] / habits["orders"]
    habits = habits.join(world.truth.set_index("buyer_id")["buyer_type"])
    return habits.loc[habits["requests"] >= 3]


def separation(habits: pd.DataFrame, column: str) -> float:
    """How well one habit tells abusers from heavy refunders (AUC, either direction)."""
    pair = habits.loc[habits["buyer_type"].isin(["abuser", "heavy_refunder"])]
    auc = roc_auc_score(pair["buyer_type"] == "abuser", pair[column])
    return max(auc, 1 - auc)


def test_weak_signal_abusers_overlap_with_heavy_refunders_on_simple_habits(
    worlds: dict[str, SimulatedWorld],
) -> None:
    weak, default = simple_habits(worlds["weak-signal"]), simple_habits(worlds["default"])
    columns = ["requests", "requests_per_order", "pre_shipment", "refund_only_after_delivery"]
    for column in columns:
        assert separation(weak, column) < 0.7, column
    # Where the default world's habits tell them apart almost perfectly.
    assert separation(default, "pre_shipment") > 0.9
    assert separation(default, "refund_only_after_delivery") > 0.9


def test_drifting_abuse_grows_and_moves_to_the_pre_shipment_exploit(
    worlds: dict[str, SimulatedWorld],
) -> None:
    world = worlds["drifting"]
    dates = monthly_dates(world)
    early, late = dates[:4], dates[-4:]
    early_rates, early_ratio = label_rates_and_oracle(world, early)
    late_rates, late_ratio = label_rates_and_oracle(world, late)
    assert np.mean(late_rates) > 1.25 * np.mean(early_rates)
    # The oracle follows the truth at each date, not an average over the span.
    assert 0.75 < early_ratio < 1.3 and 0.75 < late_ratio < 1.3

    refunds = world.log.refunds.join(
        world.log.orders.set_index("order_id")["shipped_at"], on="order_id"
    )
    confirmed = refunds.loc[refunds["abuse_confirmed_at"].notna()]
    before_tracking = confirmed["shipped_at"].isna() | (
        confirmed["shipped_at"] > confirmed["requested_at"]
    )
    middle = world.log.start + (world.log.end - world.log.start) / 2
    first_half = before_tracking[confirmed["requested_at"] < middle].mean()
    second_half = before_tracking[confirmed["requested_at"] >= middle].mean()
    assert second_half > first_half + 0.25
    # The exploit: the tracking number is entered after the approved refund.
    exploited = confirmed.loc[
        before_tracking & confirmed["outcome"].isin(["approved", "auto_approved"])
    ]
    assert exploited["shipped_at"].notna().mean() > 0.5


def test_abuser_share_of_new_accounts_rises_in_the_drifting_world(
    worlds: dict[str, SimulatedWorld],
) -> None:
    truth, log = worlds["drifting"].truth, worlds["drifting"].log
    # Quarters of the export's span; -1: registered before it.
    quarter = ((truth["registered_at"] - log.start) // ((log.end - log.start) / 4)).clip(lower=-1)
    share = (truth["buyer_type"] == "abuser").groupby(quarter).mean()
    assert share.loc[3] > 2.5 * share.loc[-1]


@pytest.mark.parametrize("seed", [1, 4, 33])
def test_a_world_of_one_shop_is_valid_whatever_its_category(seed: int) -> None:
    """One shop of a category no abuser or thief wants, or one opened during the export,
    once made the simulator fail (weights of zero) or break the contract."""
    validate_log(simulate(buyers=60, shops=1, days=60, seed=seed).log)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"buyer_type_shares": (0.5, 0.5, 0.1, 0.0)}, "buyer_type_shares"),
        ({"abuse_class_mix": (0.5, 0.5)}, "abuse_class_mix"),
        ({"abuse_growth": 0.0}, "abuse_growth"),
        ({"confirm_mean": ((2, 0.99), (4, 0.6), (3, 0.6))}, "confirm_mean"),
    ],
)
def test_parameters_no_world_can_be_drawn_from_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorldParams(**change)
