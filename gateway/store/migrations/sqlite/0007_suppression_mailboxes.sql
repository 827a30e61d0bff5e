-- A suppression holds for the mailbox, not the spelling: 'carol+promo@x' and, at Gmail,
-- 'Bob.Smith@googlemail.com' reach the mailboxes of 'carol@x' and 'bobsmith@gmail.com'.
-- Each row keeps the spelling that opted out (address) and gains the key of the mailbox it
-- reaches (gateway/addresses.py mailbox_key); every lookup matches either column. The key
-- depends on rules/mailboxes.toml, so SQL cannot compute it: the gateway fills it for the
-- rows already here when it opens the store, and again whenever those rules change. Until
-- then '' means "not folded yet"; numbers keep ''. An erased row's mailbox is the keyed hash
-- of its mailbox key, like its address.
-- The index leaves out the rows without a mailbox (every number), and the lookups say
-- "mailbox <> ''" so that it serves them.
-- The migration runner executes one statement per ';' at the end of a line.

ALTER TABLE suppressions ADD COLUMN mailbox TEXT NOT NULL DEFAULT '';

CREATE INDEX suppressions_mailbox ON suppressions (mailbox) WHERE mailbox <> '';

-- The email rows still to fold (normally none): found at start-up without a scan.
CREATE INDEX suppressions_unfolded ON suppressions (address)
    WHERE mailbox = '' AND address LIKE '%@%';
