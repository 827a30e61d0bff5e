-- The decision log, as in migrations/sqlite/0013: every decision, allowed and blocked, one
-- row per recipient, with its evidence document (JSON text). Metadata only: never a body.
-- recipient_lower and subject_lower are lower-cased copies a partial search without case
-- scans (strpos); issue 21's encryption replaces them with keyed substring indexes.
CREATE TABLE decisions (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time            TIMESTAMPTZ NOT NULL,
    channel         TEXT COLLATE "C" NOT NULL,
    account         TEXT COLLATE "C" NOT NULL,
    key_id          TEXT COLLATE "C",
    sender          TEXT COLLATE "C" NOT NULL,
    recipient       TEXT COLLATE "C" NOT NULL,
    recipient_lower TEXT COLLATE "C" NOT NULL,
    purpose         TEXT NOT NULL,
    outcome         TEXT COLLATE "C" NOT NULL CHECK (outcome IN ('allowed', 'blocked')),
    reasons_json    TEXT NOT NULL,
    reason_codes    TEXT COLLATE "C" NOT NULL,
    rules_version   TEXT NOT NULL,
    upstream_id     TEXT COLLATE "C",
    subject         TEXT NOT NULL DEFAULT '',
    subject_lower   TEXT NOT NULL DEFAULT '',
    gateway_id      TEXT NOT NULL DEFAULT '',
    evidence_json   TEXT NOT NULL DEFAULT '{}'
);

-- Newest first (time, then id): each index ends with both.
CREATE INDEX decisions_time ON decisions (time, id);
CREATE INDEX decisions_account_time ON decisions (account, time, id);
CREATE INDEX decisions_outcome_time ON decisions (outcome, time, id);
CREATE INDEX decisions_upstream_id ON decisions (upstream_id) WHERE upstream_id IS NOT NULL;
