-- Nothing read decisions_recipient_index (0017): erasure and export find a person's
-- decisions by their blind index OR by their recipient in clear (a row written before
-- encryption), and with no index on the clear column the planner scans the log for
-- either, as it always has with encryption off. Every decision still paid for it: its
-- blind index is random, so each insert dirtied a random page of that index. The
-- recipient_index column stays, for those scans to match.
DROP INDEX IF EXISTS decisions_recipient_index;
