-- SES notifications, stored once each. message_id is the event's id from newsletter.events: a
-- fingerprint of the SES JSON (":N" appended per recipient when a notification names several),
-- identical however often SNS/SQS redeliver it, with or without the SNS envelope.

CREATE TABLE events (
    id                  INTEGER PRIMARY KEY,
    message_id          TEXT NOT NULL UNIQUE,
    type                TEXT NOT NULL CHECK (type IN ('bounce', 'complaint', 'delivery', 'reject', 'open',
                                                      'click', 'rendering_failure', 'delivery_delay')),
    subtype             TEXT,                 -- bounceType (Permanent, Transient, Undetermined),
                                              -- complaintFeedbackType, delayType
    detail              TEXT,                 -- bounce sub type · status · diagnostic code, reject reason…
    email               TEXT,                 -- NULL once the subscriber is erased
    delivery_id         INTEGER REFERENCES deliveries(id) ON DELETE SET NULL,
    provider_message_id TEXT,                 -- SES mail.messageId
    link                TEXT,                 -- clicked URL
    effect              TEXT,                 -- what recording it did (e.g. "suppressed: hard bounce")
    occurred_at         TEXT NOT NULL,
    received_at         TEXT NOT NULL,
    payload             TEXT NOT NULL         -- the SES notification as JSON
);
CREATE INDEX events_by_delivery ON events(delivery_id, type);
CREATE INDEX events_by_email ON events(email COLLATE NOCASE, type, occurred_at);
CREATE INDEX events_by_provider_id ON events(provider_message_id);

-- Queue messages that could not be understood, kept aside instead of stopping the loop.
CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY,
    message_id  TEXT NOT NULL UNIQUE,         -- the SQS MessageId
    reason      TEXT NOT NULL,
    body        TEXT NOT NULL,
    received_at TEXT NOT NULL
);
