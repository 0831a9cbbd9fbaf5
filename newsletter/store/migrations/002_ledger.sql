-- The delivery ledger: one send per edition, one delivery row per (edition, subscriber).

CREATE TABLE sends (
    id          INTEGER PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    list_name   TEXT NOT NULL,
    subject     TEXT NOT NULL,
    transport   TEXT NOT NULL,
    recipients  INTEGER NOT NULL DEFAULT 0,   -- frozen when the send starts
    created_at  TEXT NOT NULL,
    finished_at TEXT
);

CREATE TABLE deliveries (
    id                  INTEGER PRIMARY KEY,
    send_id             INTEGER NOT NULL REFERENCES sends(id) ON DELETE CASCADE,
    subscriber_id       INTEGER REFERENCES subscribers(id) ON DELETE SET NULL,
    email               TEXT,                 -- NULL once the subscriber is erased
    state               TEXT NOT NULL DEFAULT 'pending'
                        CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
    provider_message_id TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    last_error          TEXT,
    claimed_by          TEXT,
    claimed_at          TEXT,
    sent_at             TEXT,
    updated_at          TEXT NOT NULL,
    UNIQUE (send_id, subscriber_id)
);
CREATE INDEX deliveries_by_state ON deliveries(send_id, state);
CREATE INDEX deliveries_by_provider_id ON deliveries(provider_message_id);
