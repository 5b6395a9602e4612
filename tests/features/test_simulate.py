"""The simulator: a valid, deterministic log of a world an analyst would recognise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

import features.simulate.writer as simulate_writer
from features.io import LogFileError, load_log
from features.log import OUTCOMES, REFUND_KINDS, TABLES, as_of_time
from features.schema import validate_log
from features.simulate import RING_ONSET, SimulatedWorld, oracle_scores, simulate, write_world

BUYERS, SHOPS, SEED = 2_000, 100, 7
HORIZON, MATURITY = 90, 30
# Monthly as-of dates whose label window matures inside the default 540 days.
MONTHLY = [f"2025-{month:02d}-01" for month in range(2, 13)] + ["2026-01-01", "2026-02-01"]


@pytest.fixture(scope="module")
def world() -> SimulatedWorld:
    return simulate(buyers=BUYERS, shops=SHOPS, seed=SEED)


@pytest.fixture(scope="module")
def by_buyer(world: SimulatedWorld) -> pd.DataFrame:
    """Per buyer: hidden type, orders, refund requests, confirmed-abuse requests."""
    refunds = world.log.refunds
    frame = world.truth.set_index("buyer_id")[["buyer_type"]].copy()
    frame["orders"] = world.log.orders.groupby("buyer_id").size()
    frame["refunds"] = refunds.groupby("buyer_id").size()
    frame["confirmed"] = (
        refunds.loc[refunds["abuse_confirmed_at"].notna()].groupby("buyer_id").size()
    )
    return frame.fillna({"orders": 0, "refunds": 0, "confirmed": 0})


def bad_labels(world: SimulatedWorld, as_of: str) -> pd.Series:
    """DESIGN.md's label, from the refunds table, for buyers registered before T."""
    known_at = as_of_time(as_of)
    horizon_end = known_at + pd.Timedelta(days=HORIZON)
    matured_at = horizon_end + pd.Timedelta(days=MATURITY)
    assert matured_at <= world.log.end
    refunds = world.log.refunds
    abusive = refunds.loc[
        (refunds["requested_at"] > known_at)
        & (refunds["requested_at"] <= horizon_end)
        & (refunds["abuse_confirmed_at"] <= matured_at),
        "buyer_id",
    ]
    buyers = world.log.buyers.loc[world.log.buyers["registered_at"] < known_at, "buyer_id"]
    return pd.Series(buyers.isin(abusive).astype(int).to_numpy(), index=buyers.to_numpy())


def test_same_seed_gives_identical_tables_and_truth(world: SimulatedWorld) -> None:
    again = simulate(buyers=BUYERS, shops=SHOPS, seed=SEED)
    for name in TABLES:
        pd.testing.assert_frame_equal(world.log.table(name), again.log.table(name))
    pd.testing.assert_frame_equal(world.truth, again.truth)
    assert world.meta == again.meta


def test_another_seed_gives_another_world(world: SimulatedWorld) -> None:
    other = simulate(buyers=BUYERS, shops=SHOPS, seed=SEED + 1)
    assert not world.log.orders.equals(other.log.orders)
    assert not world.truth["buyer_type"].equals(other.truth["buyer_type"])


def test_progress_bar_does_not_change_the_world() -> None:
    quiet = simulate(buyers=200, shops=20, days=120, seed=3)
    shown = simulate(buyers=200, shops=20, days=120, seed=3, progress=True)
    pd.testing.assert_frame_equal(quiet.log.refunds, shown.log.refunds)


def test_log_passes_the_contract_with_its_span(world: SimulatedWorld) -> None:
    log = validate_log(world.log)
    assert log.start == pd.Timestamp("2025-01-01", tz="UTC")
    assert log.end == log.start + pd.Timedelta(days=540)
    assert world.meta["start"] == log.start.isoformat() and world.meta["seed"] == SEED
    assert len(log.buyers) == BUYERS and len(log.shops) == SHOPS
    orders, refunds = log.orders, log.refunds
    assert orders["paid_at"].between(log.start, log.end, inclusive="left").all()
    for col in ["shipped_at", "delivered_at", "completed_at", "cancelled_at"]:
        assert (orders[col].dropna() < log.end).all(), col
    for col in ["requested_at", "resolved_at", "abuse_confirmed_at"]:
        assert (refunds[col].dropna() < log.end).all(), col
    assert orders["order_id"].is_monotonic_increasing
    assert orders["paid_at"].is_monotonic_increasing


def test_buyers_register_over_time(world: SimulatedWorld) -> None:
    before_start = (world.log.buyers["registered_at"] < world.log.start).mean()
    assert 0.1 < before_start < 0.5


def test_heavy_refunders_refund_often_but_are_never_confirmed(
    world: SimulatedWorld, by_buyer: pd.DataFrame
) -> None:
    heavy = by_buyer.loc[by_buyer["buyer_type"] == "heavy_refunder"]
    ordinary = by_buyer.loc[by_buyer["buyer_type"] == "ordinary"]
    heavy_rate = heavy["refunds"].sum() / heavy["orders"].sum()
    ordinary_rate = ordinary["refunds"].sum() / ordinary["orders"].sum()
    assert heavy_rate > 0.3 and heavy_rate > 3 * ordinary_rate
    # An honest account's requests are confirmed only while a thief holds it.
    truth = world.truth.set_index("buyer_id")
    refunds = world.log.refunds.join(truth, on="buyer_id")
    honest = refunds.loc[
        refunds["buyer_type"].isin(["ordinary", "heavy_refunder"])
        & refunds["abuse_confirmed_at"].notna()
    ]
    assert len(honest) > 0
    assert honest["requested_at"].between(honest["takeover_at"], honest["takeover_end"]).all()


@pytest.mark.parametrize("episode", ["abuser", "ring", "takeover"])
def test_abusive_episodes_have_confirmed_abuse(
    world: SimulatedWorld, by_buyer: pd.DataFrame, episode: str
) -> None:
    truth = world.truth.set_index("buyer_id")
    if episode == "takeover":
        inside = truth["takeover_end"].between(world.log.start, world.log.end)
        group = by_buyer.loc[inside & (truth["buyer_type"] == "ordinary")]
    else:
        group = by_buyer.loc[by_buyer["buyer_type"] == episode]
    assert len(group) > 5
    assert (group["confirmed"] > 0).mean() > 0.4


def test_abusers_are_a_minority(world: SimulatedWorld) -> None:
    shares = world.truth["buyer_type"].value_counts(normalize=True)
    abusive = shares[["abuser", "ring"]].sum()
    assert 0.05 < abusive < 0.15
    assert shares["ordinary"] > 0.7 and shares["heavy_refunder"] > 0.05
    taken_over = world.truth["takeover_at"].between(world.log.start, world.log.end)
    assert 0.005 < taken_over.mean() < 0.03


def test_refund_counts_alone_do_not_single_out_abusers(by_buyer: pd.DataFrame) -> None:
    pair = by_buyer.loc[by_buyer["buyer_type"].isin(["abuser", "heavy_refunder"])]
    auc = roc_auc_score(pair["buyer_type"] == "abuser", pair["refunds"])
    assert auc < 0.7


def test_abusers_claim_after_delivery_where_heavy_refunders_cancel(
    world: SimulatedWorld,
) -> None:
    orders = world.log.orders.set_index("order_id")
    refunds = world.log.refunds.join(orders[["shipped_at", "delivered_at"]], on="order_id")
    refunds = refunds.merge(world.truth[["buyer_id", "buyer_type"]], on="buyer_id")
    refunds["pre_shipment"] = refunds["shipped_at"].isna() | (
        refunds["shipped_at"] > refunds["requested_at"]
    )
    refunds["after_delivery_refund_only"] = (refunds["kind"] == "refund_only") & (
        refunds["delivered_at"] <= refunds["requested_at"]
    )
    refunds["lost_dispute"] = refunds["outcome"] == "arbitrated_merchant_wins"
    shares = refunds.groupby("buyer_type")[
        ["pre_shipment", "after_delivery_refund_only", "lost_dispute"]
    ].mean()
    assert shares.loc["heavy_refunder", "pre_shipment"] > 2 * shares.loc["abuser", "pre_shipment"]
    assert (
        shares.loc["abuser", "after_delivery_refund_only"]
        > 3 * shares.loc["heavy_refunder", "after_delivery_refund_only"]
    )
    assert shares.loc["abuser", "lost_dispute"] > 3 * shares.loc["ordinary", "lost_dispute"]


def test_some_shops_enter_tracking_after_an_approved_pre_shipment_refund(
    world: SimulatedWorld,
) -> None:
    refunds = world.log.refunds.join(
        world.log.orders.set_index("order_id")[["shop_id", "shipped_at"]], on="order_id"
    )
    risky = refunds.loc[
        (refunds["requested_at"] < refunds["shipped_at"])
        & refunds["outcome"].isin(["approved", "auto_approved"])
    ]
    assert len(risky) > 0
    # A habit of some shops, not of all of them.
    assert 1 < risky["shop_id"].nunique() < 0.5 * SHOPS


def test_prices_and_categories_look_like_a_marketplace(world: SimulatedWorld) -> None:
    orders = world.log.orders
    assert 0.15 <= (orders["paid_fen"] >= 30_000).mean() <= 0.30
    assert (orders["paid_fen"] < 30_000).mean() > 0.5
    assert orders["is_virtual"].any() and orders["is_custom"].any()
    assert (orders["is_virtual"] == (orders["category"] == "virtual")).all()
    for category in ["apparel", "electronics", "home", "beauty", "food", "books", "toys"]:
        assert (orders["category"] == category).any(), category


def test_after_sales_cover_the_lifecycle(world: SimulatedWorld) -> None:
    refunds, orders = world.log.refunds, world.log.orders
    assert set(refunds["kind"]) == set(REFUND_KINDS)
    assert set(refunds["outcome"].dropna()) == set(OUTCOMES)  # every outcome occurs
    assert refunds["outcome"].isna().any()  # some requests still open at the end
    for col in ["shipped_at", "delivered_at", "completed_at", "cancelled_at"]:
        assert orders[col].notna().any() and orders[col].isna().any(), col
    delay_days = (refunds["abuse_confirmed_at"] - refunds["requested_at"]).dropna().dt.days
    assert delay_days.min() >= 1 and 3 <= delay_days.median() <= 30 and delay_days.max() > 30


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bad_rate_at_monthly_dates_is_a_few_percent(seed: int) -> None:
    """With the command's defaults, well above a 1% target: flagging everyone premium misses it.

    At 1.2-1.4% every scorer, the hand rule included, met a 1% target by flagging 99% of
    buyers, so the coverage target said nothing.
    """
    world = simulate(seed=seed)
    rates = [bad_labels(world, as_of).mean() for as_of in MONTHLY]
    assert 0.035 <= np.mean(rates) <= 0.06
    assert all(0.025 <= rate <= 0.075 for rate in rates)


def test_the_small_test_world_has_a_like_bad_rate(world: SimulatedWorld) -> None:
    rates = [bad_labels(world, as_of).mean() for as_of in MONTHLY]
    assert 0.03 <= np.mean(rates) <= 0.065
    assert all(0.015 <= rate <= 0.09 for rate in rates)


def known_signals(world: SimulatedWorld, as_of: str, index: pd.Index) -> pd.DataFrame:
    """Model-free baselines from the log known at T: confirmed abuse, recent refunds."""
    known = world.log.known_at(as_of_time(as_of))
    refunds = known.refunds
    recent = refunds["requested_at"] >= as_of_time(as_of) - pd.Timedelta(days=90)
    signals = pd.DataFrame(index=index)
    signals["confirmed"] = (
        refunds.loc[refunds["abuse_confirmed_at"].notna()].groupby("buyer_id").size()
    )
    signals["recent_refunds"] = refunds.loc[recent].groupby("buyer_id").size()
    return signals.fillna(0)


def test_oracle_is_calibrated_and_ranks_bad_buyers_above_model_free_baselines(
    world: SimulatedWorld,
) -> None:
    scores, labels, baselines = [], [], []
    for as_of in MONTHLY:
        label = bad_labels(world, as_of)
        score = oracle_scores(world.truth, as_of, HORIZON, MATURITY)
        assert score.index.name == "buyer_id" and len(score) == BUYERS
        assert score.between(0, 1).all()
        scores.append(score.reindex(label.index).to_numpy())
        labels.append(label.to_numpy())
        baselines.append(known_signals(world, as_of, label.index))
    score, label = np.concatenate(scores), np.concatenate(labels)
    # Exact probabilities: expected and observed counts of bad labels agree.
    assert 0.85 < score.sum() / label.sum() < 1.15
    oracle_auc = roc_auc_score(label, score)
    assert oracle_auc > 0.85
    baseline = pd.concat(baselines)
    for column in baseline.columns:
        assert oracle_auc > roc_auc_score(label, baseline[column]) + 0.05, column


def test_oracle_does_not_see_the_future(world: SimulatedWorld) -> None:
    """Redrawing everything that happens after T leaves the scores at T unchanged."""
    as_of = "2025-09-01"
    known_at = as_of_time(as_of)
    rng = np.random.default_rng(0)
    redrawn = world.truth.copy()

    def later(column: str) -> pd.Series:
        return redrawn[column] > known_at

    def shifted(column: str, mask: pd.Series) -> pd.Series:
        days = pd.to_timedelta(rng.uniform(0, 200, len(redrawn)), unit="D")
        return redrawn[column].where(~mask, known_at + pd.Timedelta(seconds=1) + days)

    not_begun = later("abuse_start")
    redrawn["abuse_start"] = shifted("abuse_start", not_begun)
    redrawn["abuse_end"] = redrawn["abuse_end"].where(~not_begun, redrawn["abuse_start"])
    redrawn["abuse_end"] = shifted("abuse_end", later("abuse_end") & ~not_begun)
    not_taken = later("takeover_at") | redrawn["takeover_at"].isna()
    redrawn.loc[not_taken, "takeover_at"] = pd.NaT
    redrawn.loc[not_taken, "takeover_end"] = pd.NaT
    redrawn.loc[not_taken, ["takeover_rate_per_day", "takeover_confirm_prob"]] = 0.0
    redrawn["takeover_end"] = shifted("takeover_end", later("takeover_end"))
    assert not redrawn.equals(world.truth)
    pd.testing.assert_series_equal(
        oracle_scores(redrawn, as_of), oracle_scores(world.truth, as_of), rtol=1e-9, atol=1e-12
    )


def test_every_account_faces_the_same_takeover_risk_ahead(world: SimulatedWorld) -> None:
    truth = world.truth
    as_of = "2025-09-01"
    known_at = as_of_time(as_of)
    score = oracle_scores(truth, as_of).to_numpy()
    clear = (
        (truth["takeover_exposed_from"] < known_at)
        & ~(truth["takeover_at"] < known_at)
        & ~(truth["abuse_start"] < known_at + pd.Timedelta(days=HORIZON))
        & ~((truth["abuse_start"] < known_at) & (truth["abuse_end"] > known_at))
    ).to_numpy()
    honest = truth["buyer_type"].isin(["ordinary", "heavy_refunder"]).to_numpy()
    floor = score[clear & honest]
    # One population-level P(takeover in the window, confirmed): small, not zero.
    assert len(floor) > 100 and np.ptp(floor) < 1e-12 and 0.0005 < floor[0] < 0.01
    abusive = truth["buyer_type"].isin(["abuser", "ring"]).to_numpy()
    # An abuser whose episode is over is back at the floor (equal up to rounding).
    assert (
        score[abusive & (truth["registered_at"] < known_at).to_numpy()] > floor[0] - 1e-12
    ).all()
    # Long after every episode, only the takeover hazard is left, for everyone not yet
    # taken over; an account is taken over at most once.
    late = truth["abuse_end"].max() + pd.Timedelta(days=1)
    after = oracle_scores(truth, late).to_numpy()
    taken = (truth["takeover_at"] < late).to_numpy()
    assert taken.any() and (after[taken] == 0).all()
    assert np.ptp(after[~taken]) < 1e-12 and after[~taken][0] > 0


def test_abusers_build_a_record_of_cheap_quick_orders_at_few_shops(world: SimulatedWorld) -> None:
    orders = world.log.orders.join(world.truth.set_index("buyer_id"), on="buyer_id")
    abusers = orders.loc[orders["buyer_type"] == "abuser"]
    building = abusers.loc[abusers["paid_at"] < abusers["abuse_start"]]
    ordinary = orders.loc[(orders["buyer_type"] == "ordinary") & orders["takeover_at"].isna()]
    assert len(building) > 100
    assert building["paid_fen"].median() < 0.75 * ordinary["paid_fen"].median()
    completion = (building["completed_at"] - building["delivered_at"]).median()
    assert completion < 0.5 * (ordinary["completed_at"] - ordinary["delivered_at"]).median()
    refunded = world.log.refunds["order_id"]
    assert (
        building["order_id"].isin(refunded).mean()
        < 0.5 * ordinary["order_id"].isin(refunded).mean()
    )
    per_buyer = building.groupby("buyer_id").agg(
        orders=("order_id", "size"), shops=("shop_id", "nunique")
    )
    many = per_buyer.loc[per_buyer["orders"] >= 8]
    assert len(many) > 5 and (many["shops"] / many["orders"]).median() < 0.6


def test_some_honest_newcomers_look_like_record_builders(world: SimulatedWorld) -> None:
    orders = world.log.orders.join(world.truth.set_index("buyer_id"), on="buyer_id")
    first_month = orders.loc[orders["paid_at"] < orders["registered_at"] + pd.Timedelta(days=30)]
    busy = first_month.groupby("buyer_id").agg(
        orders=("order_id", "size"), buyer_type=("buyer_type", "first")
    )
    busy = busy.loc[busy["orders"] >= 5, "buyer_type"].value_counts()
    assert busy.get("abuser", 0) > 0 and busy.get("ordinary", 0) > 0


def test_a_thief_buys_dear_at_new_shops(world: SimulatedWorld) -> None:
    truth = world.truth.set_index("buyer_id")
    orders = world.log.orders.join(truth, on="buyer_id")
    held = orders["paid_at"].between(orders["takeover_at"], orders["takeover_end"])
    theirs = orders.loc[held]
    before = orders.loc[orders["paid_at"] < orders["takeover_at"]]
    assert len(theirs) > 50
    assert theirs["paid_fen"].median() > 2 * before["paid_fen"].median()
    known_shops = set(zip(before["buyer_id"], before["shop_id"], strict=True))
    pairs = zip(theirs["buyer_id"], theirs["shop_id"], strict=True)
    assert np.mean([pair not in known_shops for pair in pairs]) > 0.7


def test_ring_members_are_young_and_shop_at_shared_shops(world: SimulatedWorld) -> None:
    truth = world.truth
    rings = truth.loc[truth["ring_id"].notna()]
    age_at_onset = rings["abuse_start"] - rings["registered_at"]
    assert (age_at_onset <= pd.Timedelta(days=RING_ONSET.b)).all()
    orders = world.log.orders.merge(rings[["buyer_id", "ring_id"]], on="buyer_id")
    top_two = orders.groupby("ring_id")["shop_id"].agg(
        lambda shops: shops.value_counts(normalize=True).iloc[:2].sum()
    )
    assert top_two.median() > 0.6


def test_takeovers_come_after_a_month_of_history(world: SimulatedWorld) -> None:
    truth = world.truth
    taken = truth["takeover_at"].notna()
    assert taken.any() and truth.loc[~taken, "takeover_end"].isna().all()
    assert (truth["takeover_exposed_from"] - truth["registered_at"] == pd.Timedelta(days=30)).all()
    assert (truth.loc[taken, "takeover_at"] >= truth.loc[taken, "takeover_exposed_from"]).all()
    assert (truth.loc[taken, "takeover_at"] < world.log.end).all()
    # Any account can be taken over, whatever its owner's type.
    assert truth.loc[taken, "buyer_type"].nunique() >= 2


def test_write_world_round_trips_through_load_log(world: SimulatedWorld, tmp_path: Path) -> None:
    write_world(world, tmp_path / "world")
    loaded = load_log(tmp_path / "world")
    for name in TABLES:
        pd.testing.assert_frame_equal(loaded.table(name), world.log.table(name), check_like=True)
    assert loaded.start == world.log.start and loaded.end == world.log.end
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "world" / "truth.parquet"), world.truth
    )
    assert json.loads((tmp_path / "world" / "meta.json").read_text())["seed"] == SEED
    assert not [p.name for p in (tmp_path / "world").iterdir() if p.name.startswith(".")]


def test_write_world_never_writes_over_a_log_it_did_not_make(
    world: SimulatedWorld, tmp_path: Path
) -> None:
    theirs = tmp_path / "theirs"
    write_world(world, theirs)
    (theirs / "truth.parquet").unlink()  # now it looks like a log exported from elsewhere
    before = {p.name: p.read_bytes() for p in theirs.iterdir()}
    with pytest.raises(LogFileError, match=r"already holds a log that was not simulated"):
        write_world(world, theirs)
    assert {p.name: p.read_bytes() for p in theirs.iterdir()} == before
    csv = tmp_path / "csv"
    csv.mkdir()
    (csv / "orders.csv").write_text("order_id\n")
    with pytest.raises(LogFileError, match=r"orders\.csv"):
        write_world(world, csv)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(LogFileError, match=r"is a file"):
        write_world(world, tmp_path / "a-file")
    write_world(world, tmp_path / "world")
    write_world(world, tmp_path / "world")  # a simulated world may be simulated again


def test_sizes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        simulate(buyers=0)


def test_write_world_that_fails_leaves_the_world_that_was_there(
    world: SimulatedWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "world"
    write_world(world, out)
    # An earlier world that differs from the one about to be written.
    world.log.orders.head(10).to_parquet(out / "orders.parquet", index=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / ".simulate-killed").mkdir()  # what a killed run leaves: cleared by the next

    def disk_full(frame: pd.DataFrame, target: Path) -> None:
        raise OSError(28, "No space left on device", str(target))

    # The tables are written (through write_log), then truth.parquet fails.
    monkeypatch.setattr(simulate_writer, "write_parquet", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_world(world, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staging folder left
