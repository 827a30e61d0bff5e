-- Personal data sealed at rest (gateway/store/sealing.py). Lookup columns (suppressions'
-- address and mailbox, consents' subject, contacts', notices' and deliveries' recipient,
-- known_locations' number) now hold keyed blind indexes; what must be read back sits
-- beside them sealed. Rows written before this migration are sealed in place, in batches,
-- by the running gateway (gateway/services/data_rotation.py); until then lookups try both
-- forms.
ALTER TABLE suppressions ADD COLUMN address_sealed TEXT NOT NULL DEFAULT '';
ALTER TABLE consents ADD COLUMN subject_sealed TEXT NOT NULL DEFAULT '';
ALTER TABLE blocks ADD COLUMN recipient_index TEXT NOT NULL DEFAULT '';
CREATE INDEX blocks_recipient_index_time ON blocks (recipient_index, time);
-- decisions: recipient, subject and evidence_json are sealed; recipient_index serves exact
-- lookups (erasure, export), the *_terms signatures the console's partial search, and
-- recipient_lower / subject_lower are left empty.
ALTER TABLE decisions ADD COLUMN recipient_index TEXT NOT NULL DEFAULT '';
ALTER TABLE decisions ADD COLUMN recipient_terms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE decisions ADD COLUMN subject_terms INTEGER NOT NULL DEFAULT 0;
CREATE INDEX decisions_recipient_index ON decisions (recipient_index, time);
