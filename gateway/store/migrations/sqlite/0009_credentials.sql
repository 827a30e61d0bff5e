-- Failed sign-ins, one row each, by scope: "prefix 203.0.113.0/24" and "account katie" for
-- passwords, "keys 203.0.113.0/24" for agent keys. Kept in the store so that every replica
-- counts the same guesses; rows older than the window are deleted as new ones arrive.
CREATE TABLE login_failures (
    scope     TEXT NOT NULL,
    failed_at REAL NOT NULL
);
CREATE INDEX login_failures_by_scope ON login_failures (scope, failed_at);
CREATE INDEX login_failures_by_time ON login_failures (failed_at);

-- A scope that reached its limit waits until `locked_until` (POSIX seconds).
CREATE TABLE login_lockouts (
    scope        TEXT PRIMARY KEY,
    locked_until REAL NOT NULL
);

-- Agent keys (`keys create`): the key itself is shown once and never stored; `digest` is
-- its HMAC-SHA256 under the key pepper. Revoked keys stay, for the audit trail.
CREATE TABLE agent_keys (
    key_id       TEXT PRIMARY KEY,
    account      TEXT NOT NULL,
    digest       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT,
    last_used_at TEXT,
    revoked_at   TEXT
);
CREATE INDEX agent_keys_by_account ON agent_keys (account);
