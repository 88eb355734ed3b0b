-- The whole state store schema, version 1.
--
-- Portable on purpose: the same file runs on SQLite and PostgreSQL, so only TEXT and BIGINT
-- columns (BIGINT decodes as i64 on both, INTEGER would be i32 on PostgreSQL), ids are TEXT
-- chosen by the caller, timestamps are unix milliseconds, booleans are 0/1 and JSON is text.

-- What runs in each environment now, and the last revision that passed verification
-- (the target of a code rollback).
CREATE TABLE environments (
    name TEXT PRIMARY KEY,
    current_revision TEXT,
    last_validated_revision TEXT,
    updated_at BIGINT NOT NULL
);

-- One row per run of `host deploy` or `host rollback`, including dry runs and runs that
-- stopped at the lock, so history shows every attempt.
CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    kind TEXT NOT NULL,
    plugin TEXT NOT NULL,
    plugin_digest TEXT NOT NULL,
    requested_revision TEXT,
    target_revision TEXT,
    previous_revision TEXT,
    strategy TEXT NOT NULL,
    actor TEXT NOT NULL,
    dry_run BIGINT NOT NULL,
    status TEXT NOT NULL,
    classification TEXT,
    detail TEXT,
    started_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX deployments_by_environment ON deployments (environment, started_at);

-- The journal: a row is written before a phase starts (with its inputs) and completed when
-- it ends, so a crashed run can be recovered from its last unfinished phase.
CREATE TABLE phases (
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    seq BIGINT NOT NULL,
    phase TEXT NOT NULL,
    inputs TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    outcome TEXT NOT NULL,
    detail TEXT,
    PRIMARY KEY (deployment_id, seq)
);

-- The engine's event stream as recorded by the state store subscriber.
CREATE TABLE events (
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (deployment_id, seq)
);

CREATE TABLE backups (
    id TEXT PRIMARY KEY,
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    environment TEXT NOT NULL,
    path TEXT NOT NULL,
    format TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    verified BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX backups_by_deployment ON backups (deployment_id);
CREATE INDEX backups_by_environment ON backups (environment, created_at);

-- One lease per environment. A row exists while someone holds (or held and crashed
-- holding) the lock; an expired lease may be taken over.
CREATE TABLE locks (
    environment TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    reason TEXT NOT NULL,
    acquired_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Small values a plugin keeps between runs, scoped to the plugin and environment.
CREATE TABLE kv (
    plugin TEXT NOT NULL,
    environment TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (plugin, environment, key)
);
