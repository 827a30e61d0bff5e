-- A suppression holds for the mailbox, not the spelling, as in migrations/sqlite/0007: each
-- row gains the key of the mailbox its address reaches, filled by the gateway (the key
-- depends on rules/mailboxes.toml) for the rows already here when it opens the store, and
-- again whenever those rules change. '' means "not folded yet"; numbers keep ''. A constant
-- default adds the column without rewriting the table. The index leaves out the rows without
-- a mailbox (every number), and the lookups say "mailbox <> ''": besides using it, the
-- planner then estimates a probe as one row, where a table of numbers alone ('' only) would
-- make it expect every row to match and scan.
ALTER TABLE suppressions ADD COLUMN mailbox TEXT COLLATE "C" NOT NULL DEFAULT '';

CREATE INDEX suppressions_mailbox ON suppressions (mailbox) WHERE mailbox <> '';

-- The email rows still to fold (normally none): found at start-up without a scan.
CREATE INDEX suppressions_unfolded ON suppressions (address)
    WHERE mailbox = '' AND address LIKE '%@%';
