-- Inbound messages the gateway acted on, by the provider's id (Twilio's MessageSid), as in
-- migrations/sqlite/0008: kept for good, so that every replica recognises a replay.
CREATE TABLE inbound_messages (
    message_id  TEXT COLLATE "C" PRIMARY KEY,
    received_at TIMESTAMPTZ NOT NULL
);
