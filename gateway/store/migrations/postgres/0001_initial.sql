-- Initial schema, version for version the same as migrations/sqlite/0001.
-- Times are timestamptz (microseconds; compared and ordered as instants, read back in UTC).
-- Keys that are compared or sorted are TEXT COLLATE "C": bytewise, as in SQLite, whatever
-- locale the database was created with, so ordering and lower() match the SQLite store.
-- Each migration runs as one script inside one transaction.

-- address is already the normalized key (lowercase email or E.164); the store never
-- normalizes.
CREATE TABLE suppressions (
    address    TEXT COLLATE "C" PRIMARY KEY,
    source     TEXT COLLATE "C" NOT NULL,
    reason     TEXT NOT NULL,
    actor      TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL
);

-- reason_codes is ",CODE1,CODE2," so LIKE '%,CODE,%' matches exactly one code.
CREATE TABLE blocks (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time          TIMESTAMPTZ NOT NULL,
    channel       TEXT COLLATE "C" NOT NULL,
    account       TEXT COLLATE "C" NOT NULL,
    sender        TEXT COLLATE "C" NOT NULL,
    recipient     TEXT COLLATE "C" NOT NULL,
    reasons_json  TEXT NOT NULL,
    reason_codes  TEXT COLLATE "C" NOT NULL,
    rules_version TEXT NOT NULL,
    message_id    TEXT NOT NULL DEFAULT '',
    subject       TEXT NOT NULL DEFAULT '',
    size          BIGINT NOT NULL DEFAULT 0,
    gateway_id    TEXT NOT NULL DEFAULT ''
);

-- Every query is newest first (time, then id), so each filter column is indexed together
-- with both; a reason filter walks blocks_time backwards until the limit is reached.
CREATE INDEX blocks_time ON blocks (time, id);
CREATE INDEX blocks_channel_time ON blocks (channel, time, id);
CREATE INDEX blocks_account_time ON blocks (account, time, id);
CREATE INDEX blocks_recipient_time ON blocks (recipient, time, id);

CREATE TABLE deliveries (
    delivery_key TEXT COLLATE "C" NOT NULL,
    recipient    TEXT COLLATE "C" NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    claimed_at   TIMESTAMPTZ NOT NULL,
    upstream_id  TEXT,
    PRIMARY KEY (delivery_key, recipient)
);

-- Hash chain: hash = entry_hash(prev_hash, content); details_json is canonical JSON kept
-- as text (not jsonb, which would reorder it) so the hash recomputes from the stored row.
-- Ids are taken inside the append lock, so id order is chain order.
CREATE TABLE audit (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time         TIMESTAMPTZ NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    subject      TEXT NOT NULL,
    details_json TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);
