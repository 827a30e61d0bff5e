-- Values that may be used only once until they expire, as in migrations/sqlite/0011.
CREATE TABLE used_once (
    mark       TEXT COLLATE "C" PRIMARY KEY,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX used_once_by_expiry ON used_once (expires_at);
