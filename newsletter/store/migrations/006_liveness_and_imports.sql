-- Which process a send worker is, beyond its pid (pids are reused): the boot, the pid namespace
-- and the process's start time, "boot_id/pidns/starttime" (Linux /proc; NULL elsewhere). A worker
-- on this host is alive while that very process exists, however long it has not beaten (SIGSTOP,
-- a laptop lid); only a worker elsewhere is judged by its heartbeat.
ALTER TABLE send_workers ADD COLUMN process_key TEXT;

-- A large import is applied in chunks, each its own short transaction, so that web writers (a
-- one-click unsubscribe) never wait long. To stay all-or-nothing it journals what each chunk did,
-- in the chunk's own transaction: the range of subscriber ids it added and the before-image of those it
-- changed. Finished, the journal is dropped; failed, or found later with its process gone, it is
-- undone (newsletter/store/sqlite_import.py). A send waits for no import: it refuses to freeze a
-- list that an import is still writing.
CREATE TABLE imports (
    id           INTEGER PRIMARY KEY,
    list_id      INTEGER NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    process_key  TEXT,
    heartbeat_at REAL NOT NULL,                  -- unix seconds
    started_at   TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'applying' CHECK (state = 'applying' OR state = 'done')
);
CREATE TABLE import_undo (
    seq           INTEGER PRIMARY KEY,
    import_id     INTEGER NOT NULL REFERENCES imports(id) ON DELETE CASCADE,
    kind          TEXT NOT NULL CHECK (kind = 'new' OR kind = 'changed'),
    subscriber_id INTEGER NOT NULL,                -- 'new': the first id the chunk added; 'changed': the one
    last_id       INTEGER,                         -- 'new': the last id the chunk added (ids are contiguous)
    before        TEXT                             -- 'changed': JSON of the row and its membership
);
CREATE INDEX import_undo_by_import ON import_undo(import_id, seq);
