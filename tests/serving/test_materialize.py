"""Materializing the online store from a simulated log: same features as training,
revocations, shop eligibility, point in time, atomic; and the CLI."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import features
import serving.materialize
from features.shops import shop_metrics, tracking_after_refund
from features.simulate import simulate, write_world
from serving.__main__ import app as cli
from serving.materialize import materialize, shop_eligibility
from serving.policy import load_policy
from serving.store import OnlineStore
from tests.factories import make_buyers, make_log, make_orders, make_refunds, make_shops

POLICY = load_policy()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[features.TransactionLog, Path]:
    directory = tmp_path_factory.mktemp("materialize") / "log"
    simulated = simulate(buyers=1500, shops=30, days=240, seed=2)
    write_world(simulated, directory)
    return features.load_log(directory), directory


def test_store_holds_the_training_features_for_every_buyer(world, tmp_path: Path) -> None:
    log, directory = world
    report = materialize(directory, as_of="2025-06-01", store_path=tmp_path / "s.db", policy=POLICY)
    expected = features.build_features(log, ["2025-06-01"]).set_index("buyer_id")
    store = OnlineStore.open(tmp_path / "s.db")
    meta = store.meta()
    assert (meta.as_of, meta.feature_set_version) == ("2025-06-01", features.FEATURE_SET_VERSION)
    assert list(meta.feature_columns) == list(features.FEATURE_COLUMNS)
    assert report.buyers == len(expected)
    for buyer_id in expected.index[:25]:
        online = store.buyer(buyer_id).features
        offline = expected.loc[buyer_id, features.FEATURE_COLUMNS].to_numpy(dtype=np.float64)
        np.testing.assert_array_equal(online, offline)
    later = log.buyers.loc[log.buyers["registered_at"] >= pd.Timestamp("2025-06-01", tz="UTC")]
    assert store.buyer(later["buyer_id"].iloc[0]) is None  # not registered yet at T


def test_confirmed_abuse_before_t_revokes_and_later_confirmation_does_not(
    world, tmp_path: Path
) -> None:
    log, directory = world
    as_of = pd.Timestamp("2025-05-01", tz="UTC")
    materialize(directory, as_of="2025-05-01", store_path=tmp_path / "s.db", policy=POLICY)
    store = OnlineStore.open(tmp_path / "s.db")
    confirmed = log.refunds.dropna(subset=["abuse_confirmed_at"])
    before = set(confirmed.loc[confirmed["abuse_confirmed_at"] < as_of, "buyer_id"])
    after_only = set(confirmed.loc[confirmed["abuse_confirmed_at"] >= as_of, "buyer_id"]) - before
    assert before and after_only
    assert all(store.buyer(b).revoked for b in list(before)[:20])
    known = [b for b in after_only if store.buyer(b) is not None]
    assert known and not any(store.buyer(b).revoked for b in known)


def test_shop_metrics_are_point_in_time(world) -> None:
    log, _ = world
    as_of = "2025-06-10"
    cut = log.known_at(features.as_of_time(as_of))
    pd.testing.assert_frame_equal(shop_metrics(log, as_of), shop_metrics(cut, as_of))


def test_tracking_after_an_approved_pre_shipment_refund_is_counted_per_shop(world) -> None:
    log, _ = world
    metrics = shop_metrics(log, "2025-08-01").set_index("shop_id")
    hits = tracking_after_refund(log, "2025-08-01")
    assert len(hits) > 0
    per_shop = hits.groupby("shop_id").size()
    assert (metrics.loc[per_shop.index, "tracking_after_refund"] == per_shop).all()


def test_tracking_after_refund_is_the_approved_refunds_shipped_after_their_request() -> None:
    """A hand-made log where each refund is, or is not, POLICY.md's risk as known at T."""
    buyers = make_buyers(("B1", "2024-06-01"))
    shops = make_shops(("S1", "2024-01-01"), ("S2", "2024-01-01"))

    def order(order_id: str, shop_id: str, shipped_at: str | None) -> dict:
        paid = {"order_id": order_id, "buyer_id": "B1", "paid_at": "2025-06-01T08:00:00Z"}
        return {**paid, "shop_id": shop_id, "shipped_at": shipped_at}

    def refund(refund_id: str, order_id: str, outcome: str, resolved_at: str) -> dict:
        requested = {"refund_id": refund_id, "order_id": order_id, "buyer_id": "B1"}
        return {
            **requested,
            "requested_at": "2025-06-01T10:00:00Z",
            "resolved_at": resolved_at,
            "outcome": outcome,
        }

    resolved = "2025-06-01T11:00:00Z"
    orders = make_orders(
        order("O1", "S1", "2025-06-02T09:00:00Z"),  # shipped after the request
        order("O2", "S1", "2025-06-01T09:00:00Z"),  # shipped before the request
        order("O3", "S1", "2025-06-02T09:00:00Z"),
        order("O4", "S1", None),  # never shipped
        order("O5", "S1", "2025-07-05T09:00:00Z"),  # shipped after T
        order("O6", "S2", "2025-06-03T09:00:00Z"),
        order("O7", "S2", "2025-06-03T09:00:00Z"),
    )
    refunds = make_refunds(
        refund("H1", "O1", "approved", resolved),  # the risk
        refund("H2", "O2", "auto_approved", resolved),  # a post-shipment request
        refund("H3", "O3", "rejected", resolved),  # not approved: the merchant shipped
        refund("H4", "O4", "approved", resolved),  # approved, never shipped
        refund("H5", "O5", "approved", resolved),  # the tracking number is not known at T
        refund("H6", "O6", "arbitrated_buyer_wins", resolved),  # the risk, in another shop
        refund("H7", "O7", "approved", "2025-07-02T00:00:00Z"),  # approved only after T
    )
    log = make_log(buyers, orders, refunds, shops)
    hits = tracking_after_refund(log, "2025-07-01")
    assert sorted(zip(hits["refund_id"], hits["shop_id"], strict=True)) == [
        ("H1", "S1"),
        ("H6", "S2"),
    ]
    metrics = shop_metrics(log, "2025-07-01").set_index("shop_id")
    assert metrics["tracking_after_refund"].to_dict() == {"S1": 1, "S2": 1}


def test_shop_eligibility_thresholds() -> None:
    base = {
        "shop_age_days": 400.0,
        "orders": 100,
        "orders_due": 100,
        "late_shipment_rate": 0.01,
        "approved_pre_ship_refunds": 50,
        "tracking_after_refund_rate": 0.0,
        "dispute_rate": 0.0,
    }
    rows = [
        {**base, "shop_id": "ok"},
        {**base, "shop_id": "new", "shop_age_days": 89.9},
        {**base, "shop_id": "late", "late_shipment_rate": 0.16},
        {**base, "shop_id": "risky", "tracking_after_refund_rate": 0.06},
        {
            **base,
            "shop_id": "few",
            "tracking_after_refund_rate": 0.5,
            "approved_pre_ship_refunds": 3,
        },
        {**base, "shop_id": "disputed", "dispute_rate": 0.03},
    ]
    result = shop_eligibility(pd.DataFrame(rows), POLICY.shop_eligibility).set_index("shop_id")
    assert result["eligible"].to_dict() == {
        "ok": True,
        "new": False,
        "late": False,
        "risky": False,
        "few": True,
        "disputed": False,
    }
    assert "tracking numbers entered after" in result.loc["risky", "reasons"]


def test_a_failed_run_leaves_the_previous_store_serving(world, tmp_path: Path, monkeypatch) -> None:
    _, directory = world
    store_path = tmp_path / "s.db"
    materialize(directory, as_of="2025-06-01", store_path=store_path, policy=POLICY)
    reader = OnlineStore.open(store_path)
    with sqlite3.connect(store_path) as db:
        shops_before = db.execute("SELECT COUNT(*) FROM shops").fetchone()[0]
    real_write = serving.materialize.write_snapshot

    def write_then_fail(path, meta, buyers, shops) -> None:
        def rows():
            yield from list(shops)[:3]
            raise OSError("disk full")  # after the old rows were deleted, before commit

        real_write(path, meta, buyers, rows())

    monkeypatch.setattr(serving.materialize, "write_snapshot", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        materialize(directory, as_of="2025-07-01", store_path=store_path, policy=POLICY)
    assert reader.meta().as_of == "2025-06-01"
    with sqlite3.connect(store_path) as db:
        assert db.execute("SELECT COUNT(*) FROM shops").fetchone()[0] == shops_before

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "buyers.csv").write_text("buyer_id,registered_at\nB1,yesterday\n")
    with pytest.raises(ValueError):
        materialize(bad, store_path=store_path, policy=POLICY)
    assert OnlineStore.open(store_path).meta().as_of == "2025-06-01"


@pytest.mark.parametrize(
    ("as_of", "message"),
    [
        ("2019-01-01", "before the log starts"),  # a mistyped year
        ("2030-01-01", "after the log ends"),
    ],
)
def test_an_as_of_date_the_log_does_not_cover_leaves_the_store_serving(
    world, tmp_path: Path, as_of: str, message: str
) -> None:
    _, directory = world
    store_path = tmp_path / "s.db"
    materialize(directory, as_of="2025-06-01", store_path=store_path, policy=POLICY)
    with pytest.raises(ValueError, match=message):
        materialize(directory, as_of=as_of, store_path=store_path, policy=POLICY)
    assert OnlineStore.open(store_path).meta().as_of == "2025-06-01"
    result = CliRunner().invoke(
        cli, ["materialize", "--data", str(directory), "--as-of", as_of, "--store", str(store_path)]
    )
    assert result.exit_code == 2 and message in result.output


def test_a_refresh_is_seen_by_an_open_reader(world, tmp_path: Path) -> None:
    _, directory = world
    store_path = tmp_path / "s.db"
    materialize(directory, as_of="2025-06-01", store_path=store_path, policy=POLICY)
    reader = OnlineStore.open(store_path)
    materialize(directory, as_of="2025-07-01", store_path=store_path, policy=POLICY)
    assert reader.meta().as_of == "2025-07-01"


def test_cli_materializes_to_the_end_of_the_log_and_reports_the_risk(world, tmp_path: Path) -> None:
    log, directory = world
    store_path = tmp_path / "cli.db"
    result = CliRunner().invoke(
        cli, ["materialize", "--data", str(directory), "--store", str(store_path)]
    )
    assert result.exit_code == 0, result.output
    assert "approved pre-shipment refunds later got a tracking number" in result.output
    as_of = OnlineStore.open(store_path).meta().as_of
    assert pd.Timestamp(as_of, tz="UTC") >= log.end.normalize()
    with sqlite3.connect(store_path) as db:
        metrics = json.loads(db.execute("SELECT metrics FROM shops LIMIT 1").fetchone()[0])
    assert "tracking_after_refund_rate" in metrics


def test_cli_names_a_bad_log(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["materialize", "--data", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "not a directory" in result.output


def test_cli_takes_a_date_alone_as_build_does(world, tmp_path: Path) -> None:
    _, directory = world
    args = ["materialize", "--data", str(directory), "--store", str(tmp_path / "s.db")]
    result = CliRunner().invoke(cli, [*args, "--as-of", "2025-06-01T12:00"])
    assert result.exit_code == 2 and "is not a date (expected YYYY-MM-DD)" in result.output
    assert not (tmp_path / "s.db").exists()
