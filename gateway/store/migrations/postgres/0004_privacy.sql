-- Retention prunes the oldest audit entries; the chain must still verify from the first
-- entry that is left. The one row here keeps the hash of the last pruned entry, which the
-- first remaining entry's prev_hash must equal (GENESIS when no row: nothing was pruned).
-- A purge deletes the row, so the purge entry starts a fresh chain from GENESIS.
CREATE TABLE audit_anchor (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    entry_id   BIGINT NOT NULL,
    hash       TEXT NOT NULL,
    pruned_at  TIMESTAMPTZ NOT NULL
);
