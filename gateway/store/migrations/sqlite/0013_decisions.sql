-- The decision log: every decision, allowed and blocked, of every channel, one row per
-- recipient, with the evidence that made it lawful or not (a JSON document). Metadata only:
-- never a body. Times are ISO-8601 UTC text with microseconds, as in 0001.
--
-- key_id is the agent key that authenticated the request (NULL: the account's secret);
-- upstream_id the id the agent was given for the copy (NULL: nothing went out);
-- reason_codes is ",CODE1,CODE2," as in blocks ("," for an allowed decision).
-- recipient_lower and subject_lower are the recipient and subject lower-cased, which a
-- partial search without case scans (LIKE); issue 21's encryption replaces them with keyed
-- substring indexes.
CREATE TABLE decisions (
    id              INTEGER PRIMARY KEY,
    time            TEXT NOT NULL,
    channel         TEXT NOT NULL,
    account         TEXT NOT NULL,
    key_id          TEXT,
    sender          TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    recipient_lower TEXT NOT NULL,
    purpose         TEXT NOT NULL,
    outcome         TEXT NOT NULL CHECK (outcome IN ('allowed', 'blocked')),
    reasons_json    TEXT NOT NULL,
    reason_codes    TEXT NOT NULL,
    rules_version   TEXT NOT NULL,
    upstream_id     TEXT,
    subject         TEXT NOT NULL DEFAULT '',
    subject_lower   TEXT NOT NULL DEFAULT '',
    gateway_id      TEXT NOT NULL DEFAULT '',
    evidence_json   TEXT NOT NULL DEFAULT '{}'
);

-- Pages are newest first (time, then the rowid every index ends with), so the filters a
-- reviewer narrows by most are indexed together with time; the others (channel, sender,
-- reason, the partial searches) walk decisions_time backwards until the page is full.
CREATE INDEX decisions_time ON decisions (time);
CREATE INDEX decisions_account_time ON decisions (account, time);
CREATE INDEX decisions_outcome_time ON decisions (outcome, time);
CREATE INDEX decisions_upstream_id ON decisions (upstream_id) WHERE upstream_id IS NOT NULL;
