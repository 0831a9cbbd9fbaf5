-- newsletter: foreign_keys=off
-- A send is a snapshot: what it sends is frozen in the database, and an edition may have
-- several sends (lists, segments, later joiners). Timestamps are ISO 8601 UTC text.
-- `sends` is rebuilt (its slug is no longer unique) with foreign keys off, as SQLite's ALTER TABLE
-- documentation prescribes; the runner checks them before committing.

-- One row per edition ever sent: its identity (source file + slug + date instant) and its
-- number, assigned once at the first send and never moved.
CREATE TABLE editions (
    id          INTEGER PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    number      INTEGER UNIQUE,
    source_path TEXT NOT NULL,                -- resolved path of the file it was sent from
    date_utc    TEXT NOT NULL,                -- the front matter's date as a UTC instant
    reconstruct TEXT NOT NULL DEFAULT 'done'  -- 'pending': a send from before snapshots, not yet
                CHECK (reconstruct IN ('done', 'pending', 'missing')),  -- rebuilt; 'missing': no file
    created_at  TEXT NOT NULL
);
CREATE INDEX editions_by_source ON editions(source_path);

-- What a send sends, frozen when it starts; every later step (resume, archive, feed, view in
-- browser, archive build) reads this, never the file.
CREATE TABLE snapshots (
    id            INTEGER PRIMARY KEY,
    edition_id    INTEGER NOT NULL REFERENCES editions(id),
    content_hash  TEXT NOT NULL,              -- sha256 of subject, preheader, html and text
    source_hash   TEXT NOT NULL,              -- sha256 of the source (and essay) bytes
    slug          TEXT NOT NULL,
    number        INTEGER,
    title         TEXT NOT NULL,
    subject       TEXT NOT NULL,
    preheader     TEXT NOT NULL,
    date          TEXT NOT NULL,              -- as written (ISO 8601 with its offset)
    lang          TEXT NOT NULL,
    categories    TEXT NOT NULL DEFAULT '[]', -- JSON array of names
    items         TEXT NOT NULL DEFAULT '[]', -- JSON [{"number", "title", "url"}]
    html          TEXT NOT NULL,              -- with the per-reader placeholders
    text          TEXT NOT NULL,
    web_url       TEXT NOT NULL,
    source_path   TEXT NOT NULL,
    essay_path    TEXT,
    reconstructed INTEGER NOT NULL DEFAULT 0, -- 1: rebuilt from the file after the send (upgrade)
    created_at    TEXT NOT NULL,
    UNIQUE (edition_id, content_hash)
);

-- Every earlier send becomes its edition's first send; its snapshot is rebuilt from the source
-- file, when there is one, by the ledger the first time it is opened with a configuration.
INSERT INTO editions (slug, number, source_path, date_utc, reconstruct, created_at)
SELECT slug, NULL, '', '', 'pending', created_at FROM sends ORDER BY id;

CREATE TABLE sends_new (
    id            INTEGER PRIMARY KEY,
    edition_id    INTEGER REFERENCES editions(id),         -- NULL: recorded by hand, no edition
    seq           INTEGER NOT NULL DEFAULT 1,         -- the edition's 1st, 2nd … send: SLUG#2
    snapshot_id   INTEGER REFERENCES snapshots(id),   -- NULL only for an old send not rebuilt
    slug          TEXT NOT NULL,
    list_name     TEXT NOT NULL,                      -- the audience, as shown
    list_id       INTEGER,                            -- the first list's id when it started
    audience      TEXT NOT NULL DEFAULT '{}',         -- JSON {"lists", "list_ids", "exclude", "where", "again"}
    audience_key  TEXT NOT NULL DEFAULT '',           -- canonical form: same key, same audience
    subject       TEXT NOT NULL,
    transport     TEXT NOT NULL,
    recipients    INTEGER NOT NULL DEFAULT 0,         -- frozen when the send starts
    skipped_earlier INTEGER NOT NULL DEFAULT 0,       -- left out: an earlier send reached them
    created_at    TEXT NOT NULL,
    first_sent_at TEXT,
    finished_at   TEXT,
    last_error    TEXT,
    UNIQUE (edition_id, seq)
);
INSERT INTO sends_new (id, edition_id, seq, snapshot_id, slug, list_name, list_id, audience, audience_key,
                       subject, transport, recipients, created_at, first_sent_at, finished_at, last_error)
SELECT s.id, e.id, 1, NULL, s.slug, s.list_name, s.list_id,
       json_object('lists', json_array(s.list_name),
                   'list_ids', CASE WHEN s.list_id IS NULL THEN json_array() ELSE json_array(s.list_id) END,
                   'exclude', json_array(), 'where', json_array(), 'again', json('false')),
       json_object('exclude', json_array(), 'lists', json_array(s.list_name), 'where', json_array()),
       s.subject, s.transport, s.recipients, s.created_at, s.first_sent_at, s.finished_at, s.last_error
FROM sends s JOIN editions e ON e.slug = s.slug;
DROP TABLE sends;
ALTER TABLE sends_new RENAME TO sends;
CREATE INDEX sends_by_edition ON sends(edition_id, seq);

-- The list through which each reader got the send (their unsubscribe link names it).
ALTER TABLE deliveries ADD COLUMN list_id INTEGER;
UPDATE deliveries SET list_id = (SELECT s.list_id FROM sends s WHERE s.id = deliveries.send_id);
