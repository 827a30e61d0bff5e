-- People who sign in (from single sign-on or SCIM), as records rather than configuration.
-- `user_name` is the email address, lower-cased, which matches a person across OIDC, SAML
-- and SCIM when no `external_id` (OIDC `sub` = SCIM externalId) does. `groups` is the JSON
-- list of group names the person's identity provider last gave; `role` the highest role
-- those map to (NULL: no access).
CREATE TABLE people (
    person_id    TEXT PRIMARY KEY,
    external_id  TEXT,
    user_name    TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    active       INTEGER NOT NULL DEFAULT 1,
    groups       TEXT NOT NULL DEFAULT '[]',
    role         TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE UNIQUE INDEX people_by_user_name ON people (user_name);
CREATE UNIQUE INDEX people_by_external_id ON people (external_id) WHERE external_id IS NOT NULL;

-- Server-side sessions of /review and the console: the cookie holds a random token, this
-- table its SHA-256, so a copy of the database opens no session. Ended at once by
-- deleting the row (sign-out, deactivation, a role change). Times are POSIX seconds.
CREATE TABLE sessions (
    session_hash TEXT PRIMARY KEY,
    person_id    TEXT,
    account      TEXT,
    method       TEXT NOT NULL,
    role         TEXT NOT NULL,
    created_at   REAL NOT NULL,
    last_seen_at REAL NOT NULL,
    expires_at   REAL NOT NULL
);
CREATE INDEX sessions_by_person ON sessions (person_id);
CREATE INDEX sessions_by_account ON sessions (account);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
