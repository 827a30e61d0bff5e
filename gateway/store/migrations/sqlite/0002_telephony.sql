-- SMS and call facts: consent, where a callee lives, contact frequency, opt-out notices.
-- Times are ISO-8601 UTC text with microseconds, as in 0001, so text order is time order.
-- The migration runner executes one statement per ';' at the end of a line.

-- A consent is never updated in place: a renewal is a new row with a later obtained_at,
-- and recording the same one twice is a no-op. expires_at is NULL for consent that does
-- not expire (express). The unique index leads with subject, so it also serves the
-- per-subject lookup; a separate subject index would only duplicate it.
CREATE TABLE consents (
    subject     TEXT NOT NULL,
    channel     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    obtained_at TEXT NOT NULL,
    expires_at  TEXT,
    source      TEXT NOT NULL,
    evidence    TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX consents_subject ON consents (subject, channel, kind, obtained_at);

-- number is E.164; '' and NULL mean "not known" as in KnownLocation.
CREATE TABLE known_locations (
    number      TEXT PRIMARY KEY,
    timezone    TEXT NOT NULL DEFAULT '',
    latitude    REAL,
    longitude   REAL,
    region      TEXT NOT NULL DEFAULT '',
    postal_code TEXT NOT NULL DEFAULT ''
);

-- One row per reserved contact (all channels count toward a cap); gateway_id is the
-- gateway's message id, so a failed send can release its own reservation.
CREATE TABLE contacts (
    id         INTEGER PRIMARY KEY,
    recipient  TEXT NOT NULL,
    channel    TEXT NOT NULL,
    time       TEXT NOT NULL,
    gateway_id TEXT NOT NULL
);
CREATE INDEX contacts_recipient_time ON contacts (recipient, time);

CREATE TABLE notices (
    recipient TEXT PRIMARY KEY,
    sent_at   TEXT NOT NULL
);
