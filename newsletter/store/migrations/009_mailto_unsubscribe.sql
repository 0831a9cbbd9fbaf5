-- Issue 12: an unsubscribe received by mail (the List-Unsubscribe mailto, via SES inbound →
-- SNS → SQS) is recorded as an event of type 'unsubscribe'. SQLite cannot change a CHECK
-- constraint in place, so the events table is rebuilt with the wider list of types (same columns,
-- rows and indexes).

CREATE TABLE events_new (
    id                  INTEGER PRIMARY KEY,
    message_id          TEXT NOT NULL UNIQUE,
    type                TEXT NOT NULL CHECK (type IN ('bounce', 'complaint', 'delivery', 'reject', 'open',
                                                      'click', 'rendering_failure', 'delivery_delay',
                                                      'unsubscribe')),
    subtype             TEXT,                 -- bounceType, complaintFeedbackType, delayType; 'mailto'
    detail              TEXT,
    email               TEXT,
    delivery_id         INTEGER REFERENCES deliveries(id) ON DELETE SET NULL,
    provider_message_id TEXT,
    link                TEXT,
    effect              TEXT,
    occurred_at         TEXT NOT NULL,
    received_at         TEXT NOT NULL,
    payload             TEXT NOT NULL
);
INSERT INTO events_new (id, message_id, type, subtype, detail, email, delivery_id, provider_message_id,
                        link, effect, occurred_at, received_at, payload)
    SELECT id, message_id, type, subtype, detail, email, delivery_id, provider_message_id,
           link, effect, occurred_at, received_at, payload FROM events;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE INDEX events_by_delivery ON events(delivery_id, type);
CREATE INDEX events_by_email ON events(email COLLATE NOCASE, type, occurred_at);
CREATE INDEX events_by_provider_id ON events(provider_message_id);
