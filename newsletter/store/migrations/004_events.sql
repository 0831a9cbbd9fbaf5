-- SES notifications, stored once each (deduplicated by the notification's message id).

CREATE TABLE events (
    id                  INTEGER PRIMARY KEY,
    message_id          TEXT NOT NULL UNIQUE,
    type                TEXT NOT NULL CHECK (type IN ('bounce', 'complaint', 'delivery', 'reject', 'open',
                                                      'click', 'rendering_failure', 'delivery_delay')),
    subtype             TEXT,                 -- bounce type (Permanent, Transient, Undetermined) etc.
    email               TEXT,                 -- NULL once the subscriber is erased
    delivery_id         INTEGER REFERENCES deliveries(id) ON DELETE SET NULL,
    provider_message_id TEXT,
    link                TEXT,                 -- clicked URL
    occurred_at         TEXT NOT NULL,
    received_at         TEXT NOT NULL,
    payload             TEXT NOT NULL         -- the SES notification as JSON
);
CREATE INDEX events_by_delivery ON events(delivery_id, type);
CREATE INDEX events_by_email ON events(email, type, occurred_at);

-- Queue messages that could not be understood, kept aside instead of stopping the loop.
CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY,
    message_id  TEXT NOT NULL UNIQUE,
    reason      TEXT NOT NULL,
    body        TEXT NOT NULL,
    received_at TEXT NOT NULL
);
