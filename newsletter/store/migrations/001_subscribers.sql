-- Subscribers, lists, memberships and the global suppression list.
-- Timestamps are ISO 8601 UTC text ("2026-11-25T00:00:00Z").

CREATE TABLE subscribers (
    id              INTEGER PRIMARY KEY,
    email           TEXT NOT NULL,                 -- as entered; an IDN domain stays in Unicode
    email_key       TEXT NOT NULL,                 -- normalised for case-insensitive uniqueness
    name            TEXT NOT NULL DEFAULT '',
    attributes      TEXT NOT NULL DEFAULT '{}',    -- JSON object of strings
    -- (OR, not IN: SQLite builds a table for an IN list at every execution, which costs a
    -- bulk import 2 µs a row; these comparisons cost nothing measurable)
    status          TEXT NOT NULL DEFAULT 'unconfirmed'
                    CHECK (status = 'unconfirmed' OR status = 'active' OR status = 'unsubscribed'
                           OR status = 'bounced' OR status = 'complained'),
    source          TEXT NOT NULL DEFAULT '',
    created_at      TEXT NOT NULL,
    confirmed_at    TEXT,
    unsubscribed_at TEXT
);
-- A named index rather than a column constraint: a first import into an empty table drops it,
-- appends, and builds it again in one sort (newsletter/store/sqlite_bulk.py).
CREATE UNIQUE INDEX subscribers_by_key ON subscribers(email_key);

CREATE TABLE lists (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    optin       TEXT NOT NULL DEFAULT 'single' CHECK (optin IN ('single', 'double')),
    public      INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL
);

CREATE TABLE memberships (
    subscriber_id   INTEGER NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
    list_id         INTEGER NOT NULL REFERENCES lists(id) ON DELETE CASCADE,
    status          TEXT NOT NULL
                    CHECK (status = 'unconfirmed' OR status = 'active' OR status = 'unsubscribed'),
    created_at      TEXT NOT NULL,
    confirmed_at    TEXT,
    unsubscribed_at TEXT,
    PRIMARY KEY (subscriber_id, list_id)
) WITHOUT ROWID;
CREATE INDEX memberships_by_list ON memberships(list_id, subscriber_id, status);  -- streams a list in id order

CREATE TABLE suppressions (
    email_hash TEXT PRIMARY KEY,  -- hex SHA-256 of the normalised address (subscribers.email_key)
    email      TEXT,              -- the normalised address; NULL once the address is erased
    reason     TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX suppressions_by_email ON suppressions(email);
