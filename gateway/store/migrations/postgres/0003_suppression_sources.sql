-- An address may be suppressed for several reasons at once (a national do-not-call import
-- and an SMS STOP), so each source gets its own row, as in migrations/sqlite/0003.
-- PostgreSQL changes the key in place. The new key leads with address, so its index still
-- serves every `address = ...` lookup, with ten million rows as with ten.
ALTER TABLE suppressions
    DROP CONSTRAINT suppressions_pkey,
    ADD PRIMARY KEY (address, source);
