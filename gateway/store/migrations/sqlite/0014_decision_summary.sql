-- The console's counts and chart of a window of the decision log (decision_summary): one
-- count per outcome, channel and chart bucket, each a range of this index read without
-- touching the table, and the blocked decisions' reason codes read from it too. A week of
-- a log of ten million decisions is then a walk of about 175,000 short index entries.
CREATE INDEX decisions_outcome_channel_time ON decisions (outcome, channel, time, reason_codes);
