-- newsletter: foreign_keys=off
-- Subscriber identities are never reused (issue 9). Before this, `id INTEGER PRIMARY KEY` gave
-- the next new reader the id of an erased one when it was the largest, and the erased reader's
-- old links opened the new reader's preferences. Now:
-- * ids come from AUTOINCREMENT: an id, once given, is never given again;
-- * every subscriber has `uid`, 128 random bits (a BLOB: the cheapest per row to make and keep
--   on a bulk import), named in every token as hex (tokens.py); a token
--   verifies to a reader only when the row with its id still carries its uid;
-- * readers who existed before this migration got a uid here and `legacy_tokens = 1`: the links
--   in mail already sent (tokens without a uid) keep working for them, and only for them.
-- * list ids come from AUTOINCREMENT too: tokens are scoped to a list id, and a list removed and
--   another created must not inherit the old one's links (a confirmation link would confirm it).
-- The tables are rebuilt (SQLite cannot add AUTOINCREMENT in place) with foreign keys off, as
-- SQLite's ALTER TABLE documentation prescribes; the runner checks them before committing.

CREATE TABLE subscribers_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    email           TEXT NOT NULL,                 -- as entered; an IDN domain stays in Unicode
    email_key       TEXT NOT NULL,                 -- normalised for case-insensitive uniqueness
    name            TEXT NOT NULL DEFAULT '',
    attributes      TEXT NOT NULL DEFAULT '{}',    -- JSON object of strings
    status          TEXT NOT NULL DEFAULT 'unconfirmed'
                    CHECK (status = 'unconfirmed' OR status = 'active' OR status = 'unsubscribed'
                           OR status = 'bounced' OR status = 'complained'),
    source          TEXT NOT NULL DEFAULT '',
    created_at      TEXT NOT NULL,
    confirmed_at    TEXT,
    unsubscribed_at TEXT,
    uid             BLOB NOT NULL DEFAULT (randomblob(16)),  -- 16 random bytes, in tokens as hex
    legacy_tokens   INTEGER NOT NULL DEFAULT 0     -- 1: also accept tokens made before uids
);

INSERT INTO subscribers_new (id, email, email_key, name, attributes, status, source, created_at,
                             confirmed_at, unsubscribed_at, uid, legacy_tokens)
SELECT id, email, email_key, name, attributes, status, source, created_at, confirmed_at,
       unsubscribed_at, randomblob(16), 1
FROM subscribers ORDER BY id;

DROP TABLE subscribers;
ALTER TABLE subscribers_new RENAME TO subscribers;
CREATE UNIQUE INDEX subscribers_by_key ON subscribers(email_key);

CREATE TABLE lists_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    optin       TEXT NOT NULL DEFAULT 'single' CHECK (optin IN ('single', 'double')),
    public      INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL
);
INSERT INTO lists_new (id, name, description, optin, public, created_at)
SELECT id, name, description, optin, public, created_at FROM lists ORDER BY id;
DROP TABLE lists;
ALTER TABLE lists_new RENAME TO lists;
