-- Personal data sealed at rest, as in migrations/sqlite/0017: lookup columns hold keyed
-- blind indexes, what must be read back is sealed beside them, and rows written before
-- this migration are sealed in place, in batches, by the running gateway.
ALTER TABLE suppressions ADD COLUMN address_sealed TEXT NOT NULL DEFAULT '';
ALTER TABLE consents ADD COLUMN subject_sealed TEXT NOT NULL DEFAULT '';
ALTER TABLE blocks ADD COLUMN recipient_index TEXT COLLATE "C" NOT NULL DEFAULT '';
CREATE INDEX blocks_recipient_index_time ON blocks (recipient_index, time, id);
ALTER TABLE decisions ADD COLUMN recipient_index TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE decisions ADD COLUMN recipient_terms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE decisions ADD COLUMN subject_terms BIGINT NOT NULL DEFAULT 0;
CREATE INDEX decisions_recipient_index ON decisions (recipient_index, time, id);
