"""The online store's and the audit log's batch reads agree with their one-at-a-time reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from serving.audit import AuditLog, DecisionRecord
from serving.records import Override
from serving.store import OnlineStore
from tests.serving.conftest import DAY, NOW, write_test_store


def test_a_batch_lookup_equals_one_lookup_per_pair(tmp_path: Path) -> None:
    store = OnlineStore.open(write_test_store(tmp_path / "online.db"))
    store.apply_overrides(
        [
            Override("buyer", "B_GOOD2", True, "abuse", "admin#0", NOW),
            Override("buyer", "B_GHOST", True, "abuse", "admin#0", NOW),  # unknown to the snapshot
            Override("shop", "S_LATE", True, "appeal", "admin#0", NOW),
        ]
    )
    pairs = [
        ("B_GOOD", "S_OK"),
        ("B_GOOD2", "S_LATE"),
        ("B_GHOST", "S_NONE"),
        ("B_NONE", "S_OK"),
        ("B_REVOKED", "S_OK"),
        ("B_GOOD", "S_OK"),  # the same pair twice
    ]
    meta, many = store.lookup(pairs)
    assert len(many) == len(pairs)
    for pair, (buyer, shop) in zip(pairs, many, strict=True):
        _, [(one_buyer, one_shop)] = store.lookup([pair])
        assert shop == one_shop
        if one_buyer is None:
            assert buyer is None
            continue
        assert buyer is not None
        assert (buyer.buyer_id, buyer.revoked, buyer.revoked_reason, buyer.order_count) == (
            one_buyer.buyer_id,
            one_buyer.revoked,
            one_buyer.revoked_reason,
            one_buyer.order_count,
        )
        np.testing.assert_array_equal(buyer.features, one_buyer.features)
    assert many[1][0].revoked and many[1][1].eligible  # type: ignore[union-attr]
    assert many[2][0].revoked and many[2][1] is None  # type: ignore[union-attr]
    assert many[3] == (None, many[0][1])
    store.close()


def _record(refund_id: str, buyer_id: str, decision: str, at: float) -> DecisionRecord:
    return DecisionRecord(
        refund_id, "h", buyer_id, "S_OK", decision, at, "{}", b"", "m", "1", "p", "{}", None
    )


def test_batch_audit_reads_equal_one_at_a_time_reads(tmp_path: Path) -> None:
    audit = AuditLog.open(tmp_path / "audit.db")
    records = [
        _record("R1", "B1", "auto_approve", NOW - 3600),
        _record("R2", "B1", "auto_approve", NOW - 3 * DAY),
        _record("R3", "B1", "manual_review", NOW - 60),
        _record("R4", "B2", "auto_approve", NOW - 40 * DAY),
        _record("R5", "B3", "auto_approve", NOW - 60),
    ]
    with audit.transaction() as tx:
        assert tx.insert_many(records) == len(records)
        assert tx.insert_many([records[0], _record("R6", "B3", "manual_review", NOW)]) == 1
    with audit.transaction() as tx:
        buyers = ["B1", "B2", "B3", "B4", "B1"]
        many = tx.approvals_many(buyers, NOW)
        for buyer in buyers:
            assert many.get(buyer, (0, 0)) == tx.approvals(buyer, NOW)
        assert many == {"B1": (1, 2), "B3": (1, 1)}
        found = tx.get_many(["R1", "R6", "R9", "R1"])
        assert found == {"R1": tx.get("R1"), "R6": tx.get("R6")}
    audit.close()


def test_the_background_checkpoint_lets_the_wal_rewind(tmp_path: Path) -> None:
    audit = AuditLog.open(tmp_path / "audit.db")
    for i in range(200):
        with audit.transaction() as tx:
            tx.insert(_record(f"W{i}", "B1", "manual_review", NOW))
    audit.checkpoint()  # in the app: in a thread, while requests keep committing
    with audit.transaction() as tx:
        tx.insert(_record("W-late", "B1", "manual_review", NOW))
    audit.finish_checkpoint()  # in the app: on the loop, between requests
    with audit.transaction() as tx:
        tx.insert(_record("W-next", "B1", "manual_review", NOW))
    busy, frames, copied = audit._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0 and frames == copied
    assert frames < 20  # the next commit wrote from the start of the WAL again
    with audit.transaction() as tx:
        assert len(tx.get_many([f"W{i}" for i in range(200)] + ["W-late", "W-next"])) == 202
    audit.close()
