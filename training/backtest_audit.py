"""Replay a served period's audit log through the backtest's decision, and compare.

The service records every decision in its audit log with the request, the buyer's feature
vector as the store held it, the store snapshot it was read from, the model version and the
answer. `replay_audit` takes those records in the order they were decided and judges each
again with the backtest's own machinery (`training.backtest.decide_in_order`, which calls
`serving.decision.decide`): the stored request and feature vector, the buyer's registration,
order count and revocation and the shop's eligibility from the same store snapshot, the
score of the same model version batch-scored as the backtest scores, the decision's own
instant, and the velocity counts and loss budget from the replay's own approvals. With the
same policy, model and snapshot every decision, reason code, premium flag and score must
come out as served: the check that the backtest decides what serving decides. With another
policy or model it is a what-if on the requests a period actually received.

The audit log is opened read-only; nothing is written to it or to the store.

Limits: an admin override made during the period is read as the store holds it now: the
decisions on that buyer or shop before it may not reproduce (they are marked
`overridden_later`; a difference they cascade into, through velocity or a loss budget, is
not). Decisions made while the store was unavailable are replayed as unavailable; records
of another snapshot than the store file's are refused. SQLite files only (an audit log and
store in PostgreSQL are not read here).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from serving.policy import Policy
from serving.records import BuyerRecord, ShopRecord, StoreMeta
from serving.schemas import DecisionRequest
from serving.store import OnlineStore, StoreUnavailable
from training import backtest as bt
from training.backtest_run import BacktestInputError

_STORE_DOWN = "the online store was unavailable when this was decided"
# How far a replayed score may be from the served one. A LightGBM model gives the same bits
# row by row (serving, a few rows) as on a matrix (the replay): the test finds 0. The linear
# model's matrix product and its one-row dot product sum in another order: ~1e-14 apart.
SCORE_TOLERANCE = 1e-12


class AuditReplayError(BacktestInputError):
    """An audit log or store file the replay cannot use (exit 2), named in the message."""


@dataclass(frozen=True)
class Served:
    """One audit record: what was decided, when, with what."""

    refund_id: str
    decided_at: float
    request: DecisionRequest
    vector: np.ndarray  # float64, the snapshot's column order; empty: buyer unknown
    snapshot: str | None
    model_version: str | None
    policy_version: str
    answer: dict


def read_audit(path: Path) -> tuple[list[Served], dict[str, tuple[str, ...]]]:
    """The audit log's decisions in the order they were made, and each snapshot's
    description (as_of, feature_set_version, feature_columns as JSON, materialized_at).

    Raises:
        AuditReplayError: The file is missing, not an audit log, or a record unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise AuditReplayError(f"--audit {path}: no such file")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise AuditReplayError(f"--audit {path}: {exc}") from exc
    try:
        rows = conn.execute(
            "SELECT refund_id, decided_at, request, features, snapshot, model_version, "
            "policy_version, response FROM decisions ORDER BY decided_at, rowid"
        ).fetchall()
        described = conn.execute(
            "SELECT id, as_of, feature_set_version, feature_columns, materialized_at FROM snapshots"
        ).fetchall()
    except sqlite3.Error as exc:  # not a database, or not an audit log (no such table)
        raise AuditReplayError(f"--audit {path}: not an audit log ({exc})") from exc
    finally:
        conn.close()
    records = []
    for refund_id, decided_at, request, vector, snapshot, version, policy, response in rows:
        where = f"--audit {path}, refund_id {refund_id}"
        if not isinstance(vector, bytes):
            raise AuditReplayError(
                f"{where}: features stored as JSON (a log from before snapshots were "
                "recorded): it cannot be replayed against a store snapshot"
            )
        try:
            parsed = DecisionRequest.model_validate_json(request)
            answer = json.loads(response)
            if not isinstance(answer, dict):
                raise ValueError("its answer is not a JSON object")
            missing = [key for key in ("decision", "reasons", "buyer") if key not in answer]
            if missing:
                raise ValueError(f"its answer lacks {', '.join(missing)}")
        except (ValidationError, ValueError, TypeError) as exc:
            raise AuditReplayError(f"{where}: unreadable record: {exc}") from exc
        records.append(
            Served(
                str(refund_id),
                float(decided_at),
                parsed,
                np.frombuffer(vector, dtype="<f8").astype(np.float64),
                snapshot,
                version,
                policy,
                answer,
            )
        )
    return records, {row[0]: tuple(row[1:]) for row in described}


def read_overrides(path: Path) -> dict[tuple[str, str], float]:
    """When each buyer's and shop's admin override in force was made ({} for a log from
    before overrides were kept), by ("buyer" or "shop", id)."""
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT kind, target, at FROM overrides").fetchall()
    except sqlite3.Error:
        return {}
    finally:
        conn.close()
    return {(kind, target): float(at) for kind, target, at in rows}


def _same_snapshot(snapshot: str, described: tuple[str, ...] | None, meta: StoreMeta) -> bool:
    if meta.generation:
        return snapshot == meta.generation
    columns = json.dumps(list(meta.feature_columns))
    return described == (meta.as_of, meta.feature_set_version, columns, meta.materialized_at)


def _scores(
    vectors: list[np.ndarray], meta: StoreMeta, model: bt.ReplayModel
) -> list[float | None]:
    """The model's score for each vector as the backtest scores (one `predict` on a matrix),
    None where serving would have none: a model of another feature set, a column the
    snapshot lacks, a vector of another length, a value outside [0, 1]."""
    out: list[float | None] = [None] * len(vectors)
    if model.feature_set_version and model.feature_set_version != meta.feature_set_version:
        return out
    position = {name: i for i, name in enumerate(meta.feature_columns)}
    if any(column not in position for column in model.feature_columns):
        return out
    order = [position[column] for column in model.feature_columns]
    rows = [i for i, v in enumerate(vectors) if len(v) == len(meta.feature_columns)]
    if not rows:
        return out
    matrix = np.stack([vectors[i][order] for i in rows])
    predicted = np.asarray(model.booster.predict(matrix), dtype=np.float64)
    for i, value in zip(rows, predicted.tolist(), strict=True):
        out[i] = value if math.isfinite(value) and 0.0 <= value <= 1.0 else None
    return out


@dataclass
class AuditReplay:
    """Each audit record's served and replayed decision, side by side."""

    table: pd.DataFrame
    policy: Policy

    @property
    def reproduced(self) -> bool:
        """Whether every decision came out exactly as served."""
        return bool(self.table["reproduced"].all())

    @property
    def differences(self) -> pd.DataFrame:
        """The records that did not."""
        return self.table.loc[~self.table["reproduced"]].reset_index(drop=True)

    @property
    def unexplained(self) -> pd.DataFrame:
        """The differences on records whose buyer and shop no admin overrode afterwards."""
        differ = self.differences
        return differ.loc[~differ["overridden_later"]].reset_index(drop=True)


def replay_audit(
    audit_path: Path,
    store_path: Path,
    policy: Policy,
    models: Callable[[str], bt.ReplayModel] | Mapping[str, bt.ReplayModel],
    model: bt.ReplayModel | None = None,
) -> AuditReplay:
    """Decide every record of an audit log again and compare with what was served.

    Args:
        audit_path: The service's audit log (SQLite), opened read-only.
        store_path: The online store file the period was served from.
        policy: The policy to judge by (the served one: a check; another: a what-if).
        models: The registered version of each record's model version (a loader or a
            mapping), e.g. `training.backtest_run.load_version`.
        model: One version to score every record with instead (a what-if).

    Raises:
        AuditReplayError: A file cannot be used, or records refer to another store
            snapshot than the store file holds.
    """
    records, described = read_audit(Path(audit_path))
    if not records:
        raise AuditReplayError(f"--audit {audit_path}: the audit log holds no decision")
    try:
        store = OnlineStore.open(store_path)
    except StoreUnavailable as exc:
        raise AuditReplayError(f"--store {store_path}: {exc}") from exc
    try:
        meta = store.meta()
        foreign = sorted(
            {r.snapshot for r in records if r.snapshot is not None}
            - {s for s in described if _same_snapshot(s, described.get(s), meta)}
        )
        if foreign:
            raise AuditReplayError(
                f"--audit {audit_path}: decisions made on store snapshot(s) "
                f"{', '.join(foreign)} but --store {store_path} holds snapshot "
                f"{meta.generation or '(no generation)'} (as of {meta.as_of}): replay a period "
                "against the store it was served from"
            )
        stored = [r for r in records if r.snapshot is not None]
        found = store.lookup((r.request.order.buyer_id, r.request.order.shop_id) for r in stored)[1]
    except StoreUnavailable as exc:
        raise AuditReplayError(f"--store {store_path}: {exc}") from exc
    finally:
        store.close()
    looked_up: dict[str, tuple[BuyerRecord | None, ShopRecord | None]] = {
        r.refund_id: pair for r, pair in zip(stored, found, strict=True)
    }
    scores, thresholds, versions = _score_all(records, stored, meta, models, model)
    inputs = []
    matches_store = []
    width = len(meta.feature_columns)
    for i, record in enumerate(records):
        buyer, shop = looked_up.get(record.refund_id, (None, None))
        known = np.array([]) if buyer is None else buyer.features
        matches_store.append(np.array_equal(known, record.vector, equal_nan=True))
        if buyer is not None:  # the features as the decision read them: the audit's copy
            buyer = buyer._replace(features=record.vector)
        down = record.snapshot is None
        inputs.append(
            bt.ReplayInput(
                record.request,
                buyer,
                shop,
                scores[i],
                thresholds[i],
                record.decided_at,
                0 if down else width,
                _STORE_DOWN if down else None,
            )
        )
    made = bt.decide_in_order(inputs, policy)
    overrides = read_overrides(Path(audit_path))
    later = [
        max(
            overrides.get(("buyer", r.request.order.buyer_id), -math.inf),
            overrides.get(("shop", r.request.order.shop_id), -math.inf),
        )
        > r.decided_at
        for r in records
    ]
    return AuditReplay(_compare(records, made, scores, versions, matches_store, later), policy)


def _score_all(
    records: list[Served],
    stored: list[Served],
    meta: StoreMeta,
    models: Callable[[str], bt.ReplayModel] | Mapping[str, bt.ReplayModel],
    model: bt.ReplayModel | None,
) -> tuple[list[float | None], list[float | None], list[str | None]]:
    """Each record's score, threshold and model version (scored per version, in one matrix)."""
    load = models.__getitem__ if isinstance(models, Mapping) else models
    chosen: dict[str, bt.ReplayModel] = {}
    versions: list[str | None] = []
    for record in records:
        version = model.version if model is not None else record.model_version
        if version is not None and version not in chosen:
            chosen[version] = model if model is not None else load(version)
        versions.append(version)
    index = {record.refund_id: i for i, record in enumerate(records)}
    scores: list[float | None] = [None] * len(records)
    for version, replayed in chosen.items():
        mine = [r for r in stored if versions[index[r.refund_id]] == version]
        for record, score in zip(
            mine, _scores([r.vector for r in mine], meta, replayed), strict=True
        ):
            scores[index[record.refund_id]] = score
    thresholds = [None if v is None else chosen[v].threshold for v in versions]
    return scores, thresholds, versions


def _compare(
    records: list[Served],
    made: list,
    scores: list[float | None],
    versions: list[str | None],
    matches_store: list[bool],
    overridden_later: list[bool],
) -> pd.DataFrame:
    rows = []
    for record, decision, score, version, same_vector, override in zip(
        records, made, scores, versions, matches_store, overridden_later, strict=True
    ):
        served_codes = "; ".join(reason["code"] for reason in record.answer["reasons"])
        codes = "; ".join(failure.code.value for failure in decision.reasons)
        served_score = record.answer["buyer"].get("score")
        served_premium = bool(record.answer["buyer"].get("premium"))
        both = served_score is not None and score is not None
        difference = abs(served_score - score) if both else None  # type: ignore[operator]
        same_score = (served_score is None and score is None) or (
            difference is not None and difference <= SCORE_TOLERANCE
        )
        rows.append(
            {
                "refund_id": record.refund_id,
                "decided_at": pd.Timestamp(record.decided_at, unit="s", tz="UTC"),
                "buyer_id": record.request.order.buyer_id,
                "shop_id": record.request.order.shop_id,
                "policy_served": record.policy_version,
                "model_served": record.model_version,
                "model_replayed": version,
                "decision_served": record.answer["decision"],
                "decision_replayed": decision.decision,
                "reasons_served": served_codes,
                "reasons_replayed": codes,
                "premium_served": served_premium,
                "premium_replayed": decision.premium,
                "score_served": served_score,
                "score_replayed": score,
                "score_difference": difference,
                "vector_matches_store": same_vector,
                # An admin override of the buyer or shop made after this decision: the store
                # holds it now, so the replay judges with it (a difference it explains).
                "overridden_later": override,
                "reproduced": (
                    record.answer["decision"] == decision.decision
                    and served_codes == codes
                    and served_premium == decision.premium
                    and same_score
                ),
            }
        )
    return pd.DataFrame(rows)
