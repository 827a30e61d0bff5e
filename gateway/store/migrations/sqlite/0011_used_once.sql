-- Values that may be used only once until they expire: a SAML assertion's ID (a replayed
-- assertion is refused on every replica), a sign-in's state. Times are POSIX seconds; rows
-- past `expires_at` are deleted by the next use.
CREATE TABLE used_once (
    mark       TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
);
CREATE INDEX used_once_by_expiry ON used_once (expires_at);
