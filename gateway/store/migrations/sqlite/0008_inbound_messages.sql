-- Inbound messages the gateway acted on, by the provider's id (Twilio's MessageSid), kept
-- for good: Twilio's webhook signature covers no time, so a signed request replayed a year
-- later verifies as well as the first delivery did. A replayed or retried id changes
-- nothing. A row names nobody (no number, no text), so an erasure has nothing to remove.
-- (Versions need not be contiguous: the runner applies what is pending in version order.)
CREATE TABLE inbound_messages (
    message_id  TEXT PRIMARY KEY,
    received_at TEXT NOT NULL
);
