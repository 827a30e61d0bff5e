-- SMS and call facts: consent, where a callee lives, contact frequency, opt-out notices.
-- The same tables as migrations/sqlite/0002.

-- A consent is never updated in place: a renewal is a new row with a later obtained_at,
-- and recording the same one twice is a no-op. expires_at is NULL for consent that does
-- not expire (express). The unique index leads with subject, so it also serves the
-- per-subject lookup.
CREATE TABLE consents (
    subject     TEXT COLLATE "C" NOT NULL,
    channel     TEXT COLLATE "C" NOT NULL,
    kind        TEXT COLLATE "C" NOT NULL,
    obtained_at TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ,
    source      TEXT NOT NULL,
    evidence    TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX consents_subject ON consents (subject, channel, kind, obtained_at);

-- number is E.164; '' and NULL mean "not known" as in KnownLocation. Coordinates are
-- double precision (SQLite's REAL); PostgreSQL's REAL would round them.
CREATE TABLE known_locations (
    number      TEXT COLLATE "C" PRIMARY KEY,
    timezone    TEXT NOT NULL DEFAULT '',
    latitude    DOUBLE PRECISION,
    longitude   DOUBLE PRECISION,
    region      TEXT NOT NULL DEFAULT '',
    postal_code TEXT NOT NULL DEFAULT ''
);

-- One row per reserved contact (all channels count toward a cap); gateway_id is the
-- gateway's message id, so a failed send can release its own reservation.
CREATE TABLE contacts (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recipient  TEXT COLLATE "C" NOT NULL,
    channel    TEXT NOT NULL,
    time       TIMESTAMPTZ NOT NULL,
    gateway_id TEXT NOT NULL
);
CREATE INDEX contacts_recipient_time ON contacts (recipient, time);

CREATE TABLE notices (
    recipient TEXT COLLATE "C" PRIMARY KEY,
    sent_at   TIMESTAMPTZ NOT NULL
);
