-- People and their sessions, as in migrations/sqlite/0010.
CREATE TABLE people (
    person_id    TEXT COLLATE "C" PRIMARY KEY,
    external_id  TEXT COLLATE "C",
    user_name    TEXT COLLATE "C" NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    active       BOOLEAN NOT NULL DEFAULT TRUE,
    groups       TEXT NOT NULL DEFAULT '[]',
    role         TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX people_by_user_name ON people (user_name);
CREATE UNIQUE INDEX people_by_external_id ON people (external_id) WHERE external_id IS NOT NULL;

CREATE TABLE sessions (
    session_hash TEXT COLLATE "C" PRIMARY KEY,
    person_id    TEXT COLLATE "C",
    account      TEXT,
    method       TEXT NOT NULL,
    role         TEXT NOT NULL,
    created_at   DOUBLE PRECISION NOT NULL,
    last_seen_at DOUBLE PRECISION NOT NULL,
    expires_at   DOUBLE PRECISION NOT NULL
);
CREATE INDEX sessions_by_person ON sessions (person_id);
CREATE INDEX sessions_by_account ON sessions (account);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
