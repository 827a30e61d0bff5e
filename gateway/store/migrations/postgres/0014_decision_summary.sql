-- The console's counts and chart of a window of the decision log (decision_summary), as in
-- migrations/sqlite/0014: PostgreSQL groups the window in one hashed pass, which this index
-- serves as an index-only scan of the time range (channel, outcome and reason codes read
-- from it, not from the table).
CREATE INDEX decisions_time_outcome_channel ON decisions (time, outcome, channel)
    INCLUDE (reason_codes);
