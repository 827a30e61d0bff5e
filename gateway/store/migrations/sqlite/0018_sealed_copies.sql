-- Sealed copies of the last lookup columns a view reads back (gateway/store/sealing.py):
-- a suppression's mailbox and a delivery's recipient, each sealed with its column as
-- associated data ('' with encryption off, for an erased row, and for a row written before
-- encryption until gateway/services/data_rotation.py seals it).
ALTER TABLE suppressions ADD COLUMN mailbox_sealed TEXT NOT NULL DEFAULT '';
ALTER TABLE deliveries ADD COLUMN recipient_sealed TEXT NOT NULL DEFAULT '';
-- Whether a suppression is an email entry, the ones the start-up folding gives a mailbox:
-- with encryption on, the address column is a blind index and says nothing. A sealed row
-- from before this migration, or one a replica of the previous release inserts during a
-- rolling upgrade (the default), may be an email (1) until the folding has opened it once.
ALTER TABLE suppressions ADD COLUMN is_email INTEGER NOT NULL DEFAULT 1;
UPDATE suppressions SET is_email = 0 WHERE address_sealed = '' AND address NOT LIKE '%@%';
DROP INDEX suppressions_unfolded;
CREATE INDEX suppressions_unfolded ON suppressions (address) WHERE is_email AND mailbox = '';
-- A sealed row's mailbox from before this migration is a blind index without a sealed copy:
-- forgetting the rules version makes the next start-up fold every email entry again, which
-- writes the copies (a database never run with encryption on has no such row).
DELETE FROM settings WHERE name = 'mailbox_rules_version'
    AND EXISTS (SELECT 1 FROM suppressions WHERE address_sealed <> '' AND mailbox <> '');
-- The sealing pass now also converts the lookup columns of rows written before encryption
-- and writes these copies: a pass finished before this migration did neither, so the next
-- start runs it again.
DELETE FROM settings WHERE name LIKE 'resealed-through:data-key:%';
