-- The audit log and the online store in PostgreSQL (serving/postgres.py).
-- The audit tables are the SQLite audit log's (serving/audit.py), column for column.
CREATE TABLE decisions (
    refund_id TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    buyer_id TEXT NOT NULL,
    shop_id TEXT NOT NULL,
    decision TEXT NOT NULL,
    decided_at DOUBLE PRECISION NOT NULL,
    request TEXT NOT NULL,
    features BYTEA NOT NULL,
    model_name TEXT,
    model_version TEXT,
    policy_version TEXT NOT NULL,
    response TEXT NOT NULL,
    snapshot TEXT
);
CREATE INDEX approvals_by_buyer ON decisions (buyer_id, decided_at)
    WHERE decision = 'auto_approve';
CREATE INDEX approvals_by_shop ON decisions (shop_id, decided_at)
    WHERE decision = 'auto_approve';
CREATE TABLE snapshots (
    id TEXT PRIMARY KEY,
    as_of TEXT NOT NULL,
    feature_set_version TEXT NOT NULL,
    feature_columns TEXT NOT NULL,
    materialized_at TEXT NOT NULL
);
CREATE TABLE identity (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    log_id TEXT NOT NULL
);
CREATE TABLE health (
    instance TEXT PRIMARY KEY,
    checked_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE admin_actions (
    id BIGSERIAL PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL
);
-- Every admin override in force, read by every lookup of every instance: a revocation made
-- on one instance holds on all of them from their next request, and materialize never
-- touches it.
CREATE TABLE overrides (
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    flag BOOLEAN NOT NULL,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (kind, target)
);
-- The online store: each materialization writes its rows under a new snapshot id, and one
-- transaction points `store_current` at it and deletes the previous snapshot's rows.
CREATE TABLE store_snapshots (
    id TEXT PRIMARY KEY,
    as_of TEXT NOT NULL,
    feature_set_version TEXT NOT NULL,
    feature_columns TEXT NOT NULL,
    materialized_at TEXT NOT NULL,
    policy_version TEXT NOT NULL
);
CREATE TABLE store_current (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    snapshot_id TEXT NOT NULL REFERENCES store_snapshots (id)
);
CREATE TABLE store_buyers (
    snapshot_id TEXT NOT NULL,
    buyer_id TEXT NOT NULL,
    registered_at DOUBLE PRECISION NOT NULL,
    order_count INTEGER NOT NULL,
    features BYTEA NOT NULL,
    revoked BOOLEAN NOT NULL,
    revoked_reason TEXT,
    PRIMARY KEY (snapshot_id, buyer_id)
);
CREATE TABLE store_shops (
    snapshot_id TEXT NOT NULL,
    shop_id TEXT NOT NULL,
    eligible BOOLEAN NOT NULL,
    reasons TEXT NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, shop_id)
);
