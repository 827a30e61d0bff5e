-- Initial schema. Times are ISO-8601 UTC text with microseconds
-- (2024-05-01T09:30:00.000000+00:00), so ordering by the text is chronological.
-- The migration runner executes one statement per ';' at the end of a line.

-- address is already the normalized key (lowercase email or E.164); the store never
-- normalizes.
CREATE TABLE suppressions (
    address    TEXT PRIMARY KEY,
    source     TEXT NOT NULL,
    reason     TEXT NOT NULL,
    actor      TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);

-- reason_codes is ",CODE1,CODE2," so LIKE '%,CODE,%' matches exactly one code.
CREATE TABLE blocks (
    id            INTEGER PRIMARY KEY,
    time          TEXT NOT NULL,
    channel       TEXT NOT NULL,
    account       TEXT NOT NULL,
    sender        TEXT NOT NULL,
    recipient     TEXT NOT NULL,
    reasons_json  TEXT NOT NULL,
    reason_codes  TEXT NOT NULL,
    rules_version TEXT NOT NULL,
    message_id    TEXT NOT NULL DEFAULT '',
    subject       TEXT NOT NULL DEFAULT '',
    size          INTEGER NOT NULL DEFAULT 0,
    gateway_id    TEXT NOT NULL DEFAULT ''
);

-- Every query is newest first, so each filter column is indexed together with time
-- (and the implicit rowid, which breaks ties). A reason filter is a substring match no
-- index can serve; it walks blocks_time backwards and stops once the limit is reached.
CREATE INDEX blocks_time ON blocks (time);
CREATE INDEX blocks_channel_time ON blocks (channel, time);
CREATE INDEX blocks_account_time ON blocks (account, time);
CREATE INDEX blocks_recipient_time ON blocks (recipient, time);

CREATE TABLE deliveries (
    delivery_key TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    claimed_at   TEXT NOT NULL,
    upstream_id  TEXT,
    PRIMARY KEY (delivery_key, recipient)
);

-- Hash chain: hash = entry_hash(prev_hash, content); details_json is canonical JSON so
-- the hash recomputes from the stored row.
CREATE TABLE audit (
    id           INTEGER PRIMARY KEY,
    time         TEXT NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    subject      TEXT NOT NULL,
    details_json TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);
