-- Sealed copies of a suppression's mailbox and a delivery's recipient, and which
-- suppressions are email entries, as in migrations/sqlite/0018.
ALTER TABLE suppressions ADD COLUMN mailbox_sealed TEXT NOT NULL DEFAULT '';
ALTER TABLE deliveries ADD COLUMN recipient_sealed TEXT NOT NULL DEFAULT '';
ALTER TABLE suppressions ADD COLUMN is_email BOOLEAN NOT NULL DEFAULT TRUE;
UPDATE suppressions SET is_email = FALSE WHERE address_sealed = '' AND address NOT LIKE '%@%';
DROP INDEX suppressions_unfolded;
CREATE INDEX suppressions_unfolded ON suppressions (address) WHERE is_email AND mailbox = '';
DELETE FROM settings WHERE name = 'mailbox_rules_version'
    AND EXISTS (SELECT 1 FROM suppressions WHERE address_sealed <> '' AND mailbox <> '');
DELETE FROM settings WHERE name LIKE 'resealed-through:data-key:%';
