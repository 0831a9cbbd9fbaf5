-- PostgreSQL: which process a send worker is, beyond its pid (as SQLite's 006): the boot, the
-- pid namespace and the process's start time, "boot_id/pidns/starttime" (NULL off Linux).
ALTER TABLE send_workers ADD COLUMN process_key text;

-- SQLite's 006 also adds the chunked-import journal (`imports`, `import_undo`). PostgreSQL has
-- no use for it: an import here is ONE transaction (newsletter/store/postgres_import.py), whose
-- rows nobody sees before it commits and which the server itself rolls back when the process
-- dies. So there is nothing to journal or to undo, and no import is ever "half applied"
-- (PostgresStore.imports_running is always empty). Web writers do not wait for the file to be
-- read: the rows are staged with COPY before the write lock is taken.
