-- An address may be suppressed for several reasons at once (a national do-not-call import
-- and an SMS STOP, a one-click opt-out and a spam complaint), so each source gets its own
-- row. 0001 keyed the table on address alone and relabelled the row on every re-add, so
-- lifting one source (a START, a provider's reactivation) could lift another's suppression.
-- SQLite cannot change a primary key in place: build the new table, copy, drop, rename.
-- The primary key leads with address, so its index also serves the `address IN (...)`
-- lookups; a separate address index would only duplicate it.
-- The migration runner executes one statement per ';' at the end of a line.

CREATE TABLE suppressions_by_source (
    address    TEXT NOT NULL,
    source     TEXT NOT NULL,
    reason     TEXT NOT NULL,
    actor      TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    PRIMARY KEY (address, source)
);

-- 0001 did not forbid a NULL address (SQLite allows one in a TEXT primary key); such a row
-- matched no lookup, so it suppressed nothing and is not carried over.
INSERT INTO suppressions_by_source (address, source, reason, actor, created_at)
SELECT address, source, reason, actor, created_at FROM suppressions WHERE address IS NOT NULL;

DROP TABLE suppressions;

ALTER TABLE suppressions_by_source RENAME TO suppressions;
