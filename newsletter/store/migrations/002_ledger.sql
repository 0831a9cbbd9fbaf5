-- The delivery ledger: one send per edition, one delivery row per (edition, subscriber).
-- Timestamps are ISO 8601 UTC text ("2026-11-25T00:00:00Z").

CREATE TABLE sends (
    id          INTEGER PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    list_name   TEXT NOT NULL,
    list_id     INTEGER,                      -- the list's id when the send started
    subject     TEXT NOT NULL,
    transport   TEXT NOT NULL,
    recipients  INTEGER NOT NULL DEFAULT 0,   -- frozen when the send starts
    created_at  TEXT NOT NULL,
    first_sent_at TEXT,                       -- when the first reader's message left
    finished_at TEXT,                         -- set when no delivery is pending or in flight
    last_error  TEXT                          -- why the last run stopped early, if it did
);

CREATE TABLE deliveries (
    id                  INTEGER PRIMARY KEY,
    send_id             INTEGER NOT NULL REFERENCES sends(id) ON DELETE CASCADE,
    subscriber_id       INTEGER REFERENCES subscribers(id) ON DELETE SET NULL,
    email               TEXT,                 -- envelope address; NULL once the subscriber is erased
    state               TEXT NOT NULL DEFAULT 'pending'
                        CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'skipped')),
    provider_message_id TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    last_error          TEXT,
    claimed_by          TEXT,                 -- the send_workers.id holding it while 'sending'
    claimed_at          TEXT,
    sent_at             TEXT,
    updated_at          TEXT NOT NULL,
    UNIQUE (send_id, subscriber_id)
);
CREATE INDEX deliveries_by_state ON deliveries(send_id, state);
CREATE INDEX deliveries_by_provider_id ON deliveries(provider_message_id);

-- Processes working on a send. A 'sending' row whose worker stopped beating is "unknown": the
-- message may or may not have left; only --retry-unknown sends it again.
CREATE TABLE send_workers (
    id           TEXT PRIMARY KEY,            -- host:pid:random
    send_id      INTEGER NOT NULL REFERENCES sends(id) ON DELETE CASCADE,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_at REAL NOT NULL,               -- unix seconds
    stopped_at   TEXT
);
