-- Failed sign-ins, lockouts and agent keys, as in migrations/sqlite/0009.
CREATE TABLE login_failures (
    scope     TEXT COLLATE "C" NOT NULL,
    failed_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX login_failures_by_scope ON login_failures (scope, failed_at);
CREATE INDEX login_failures_by_time ON login_failures (failed_at);

CREATE TABLE login_lockouts (
    scope        TEXT COLLATE "C" PRIMARY KEY,
    locked_until DOUBLE PRECISION NOT NULL
);

CREATE TABLE agent_keys (
    key_id       TEXT COLLATE "C" PRIMARY KEY,
    account      TEXT NOT NULL,
    digest       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX agent_keys_by_account ON agent_keys (account);
