-- Version 2: the `deploy-first` watch journal and `host monitor`'s checks.
-- Same portability rules as 0001 (TEXT and BIGINT only, unix milliseconds, JSON as text).

-- One row per `deploy-first` deployment: what is watched, where a failure rolls back to, how
-- far the watch got and who watches. A killed watcher leaves its row `validating` with a
-- stale heartbeat; the next `host watch` claims it and goes on from here.
CREATE TABLE watches (
    deployment_id TEXT PRIMARY KEY REFERENCES deployments (id),
    environment TEXT NOT NULL,
    revision TEXT NOT NULL,
    -- The environment's last validated revision when the deploy started; NULL on a first deploy.
    rollback_to TEXT,
    -- validating, validated, rolled_back, rollback_failed, unvalidated, superseded
    status TEXT NOT NULL,
    -- What was asked of CI (source, repo, deadlines), as JSON.
    ci TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    -- The watcher holding the watch: `user@host (pid N, ...)`, its pid and hostname, and the
    -- last time it showed signs of life (a lease, like locks).
    watcher TEXT,
    watcher_pid BIGINT,
    watcher_host TEXT,
    heartbeat_at BIGINT,
    -- When CI was first seen for the revision.
    ci_seen_at BIGINT,
    polls BIGINT NOT NULL,
    last_poll_at BIGINT,
    last_ci_state TEXT,
    last_ci_detail TEXT,
    -- Why it ended.
    verdict TEXT
);
CREATE INDEX watches_by_environment ON watches (environment, started_at);

-- Every `host monitor` check, so an alert is sent only when the state changes.
CREATE TABLE monitor_checks (
    id TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    at BIGINT NOT NULL,
    url TEXT NOT NULL,
    ok BIGINT NOT NULL,
    status BIGINT NOT NULL,
    detail TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    -- Whether this check changed the state (and so alerted).
    changed BIGINT NOT NULL
);
CREATE INDEX monitor_checks_by_environment ON monitor_checks (environment, at);
