"""SQLite connections and schema migrations.

The schema is versioned with ``PRAGMA user_version``; each ``migrations/NNN_name.sql`` file takes
the database to version NNN inside one transaction, in order (numbers may have gaps: branches number
their migrations apart), so a crash mid-migration leaves the previous version intact. Two
processes starting at once serialise on ``BEGIN IMMEDIATE``. A migration whose first line is
``-- newsletter: foreign_keys=off`` rebuilds a table: it runs with foreign keys off (SQLite's
prescribed way: a DROP TABLE would otherwise cascade) and must leave no new foreign-key violation.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from newsletter.errors import StoreError

_MIGRATION_RE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def utc_now() -> str:
    """Now, as every timestamp column stores it (text compared as text, so one format)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def migrations() -> list[tuple[int, str, str]]:
    """``(version, file name, sql)`` of every migration shipped, in order."""
    found = []
    for entry in resources.files("newsletter.store").joinpath("migrations").iterdir():
        m = _MIGRATION_RE.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    # Strictly increasing from 001; gaps are allowed (branches number their migrations apart and
    # are merged later), a repeated number is not.
    previous = 0
    for version, name, _ in found:
        if version <= previous or (previous == 0 and version != 1):
            raise StoreError(f"migration {name} is out of sequence (after {previous:03d})")
        previous = version
    return found


def latest_version() -> int:
    steps = migrations()
    return steps[-1][0] if steps else 0


_FOREIGN_KEYS_OFF = "-- newsletter: foreign_keys=off"


def sqlite_path(url: str) -> Path:
    """The file behind a database setting: a plain path or a ``sqlite:///path`` URL."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    if "://" in url:
        scheme = url.split("://", 1)[0]
        if scheme.lower() in ("postgresql", "postgres"):
            # a caller that asked for a SQLite file where the project is on PostgreSQL: a bug
            # of the caller (store.connection.connect opens either), said in one line
            raise StoreError("this operation works on a SQLite file, and the database is "
                             "PostgreSQL (open it through newsletter.store.connection)")
        raise StoreError(f"unsupported database URL scheme {scheme!r} (use a file path, "
                         "sqlite:///path or postgresql://user@host/dbname)")
    return Path(url)


def connect(path: str | Path, *, migrate: bool = True) -> sqlite3.Connection:
    """Open (creating if needed) the database: WAL mode, foreign keys on, migrated to the latest
    schema. Autocommit mode: callers open their own transactions with ``BEGIN``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
    except (sqlite3.Error, OSError) as err:
        raise StoreError(f"cannot open database: {explain(err, path)}", file=path) from None
    conn.row_factory = sqlite3.Row
    if migrate:
        try:
            migrate_database(conn, path)
        except BaseException:
            conn.close()
            raise
    return conn


def explain(err: Exception, path: Path) -> str:
    """``err`` in words, naming what is read-only when that is why SQLite refused: the database
    file, or its folder (SQLite creates its -wal and -shm files beside the database)."""
    import os

    text = str(err)
    lowered = text.lower()
    if not any(w in lowered for w in ("readonly", "read-only", "unable to open", "permission denied")):
        return text
    folder = path.resolve().parent
    for target, what in ((folder, "folder"), (path, "database file"),
                         (Path(f"{path}-wal"), "journal file"), (Path(f"{path}-shm"), "shared-memory file")):
        if target.exists() and not os.access(target, os.W_OK):
            extra = (" (SQLite writes its -wal and -shm files beside the database)"
                     if what == "folder" else "")
            return f"{text}: the {what} {target} is read-only{extra}; make it writable"
        if what == "folder" and not target.exists():
            return f"{text}: the folder {target} does not exist"
    return text


def schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate_database(conn: sqlite3.Connection, path: Path | None = None) -> int:
    """Apply every pending migration; return the resulting version.

    A database newer than this code is a ``StoreError`` (upgrade the program), not a crash.
    """
    from newsletter.audience.attributes import attr_key

    steps = migrations()
    latest = steps[-1][0] if steps else 0
    current = schema_version(conn)
    # SQL functions the migrations may call (008 normalises attribute names with it)
    conn.create_function("nl_attr_key", 1, attr_key, deterministic=True)
    if current > latest:
        raise StoreError(
            f"database schema version {current} is newer than this program knows ({latest}); "
            "upgrade newsletter",
            file=path,
        )
    for version, name, sql in steps:
        if version <= current:
            continue
        # A migration that rebuilds a table says so on its first line: foreign keys are off
        # while it runs (a DROP TABLE would otherwise cascade) and checked before it commits.
        rebuild = sql.lstrip().startswith(_FOREIGN_KEYS_OFF)
        try:
            if rebuild:
                conn.execute("PRAGMA foreign_keys = OFF")
            conn.execute("BEGIN IMMEDIATE")
            if schema_version(conn) >= version:  # another process got here first
                conn.execute("ROLLBACK")
                continue
            before = set(map(tuple, conn.execute("PRAGMA foreign_key_check"))) if rebuild else set()
            for statement in _statements(sql):
                conn.execute(statement)
            if rebuild and set(map(tuple, conn.execute("PRAGMA foreign_key_check"))) - before:
                raise sqlite3.IntegrityError("foreign key check failed after the rebuild")
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"migration {name} failed: {explain(err, path) if path else err}", file=path) from None
        finally:
            if rebuild:
                conn.execute("PRAGMA foreign_keys = ON")
    return schema_version(conn)


def _statements(sql: str) -> list[str]:
    """Split a migration into statements (``sqlite3.complete_statement`` knows about strings,
    comments and trigger bodies)."""
    out, buf = [], ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip() and not all(l.strip().startswith("--") or not l.strip() for l in buf.splitlines()):
        raise StoreError("migration ends with an incomplete statement")
    return out


class StoreBusy(StoreError):
    """Another process held the database's write lock past the busy timeout: nothing was
    written; the same operation can simply be tried again (the web answers 503 + Retry-After)."""


def store_error(err: BaseException, path: str | Path | None = None) -> StoreError:
    """One line for a failed SQLite statement, saying what to do. Disk full (SQLITE_FULL) and
    write I/O errors (what a file-size limit gives) ask to free space and run the same command
    again — the transaction was rolled back, so that is safe; a held lock is ``StoreBusy``."""
    name = getattr(err, "sqlite_errorname", "") or ""
    text = str(err)
    where = f"{path}: " if path else ""
    if isinstance(err, (UnicodeEncodeError, OverflowError)):  # what PostgreSQL also refuses
        from newsletter.errors import UnstorableError

        if isinstance(err, UnicodeEncodeError):
            text = (f"U+{ord(err.object[err.start]):04X} is not text (a lone surrogate: bytes "
                    "that were not UTF-8?)")
        return UnstorableError(f"{where}the database refused a value: {text}")
    if name == "SQLITE_FULL" or "database or disk is full" in text:
        return StoreError(f"database or disk is full: {where}nothing of this operation was written; free space "
                          "and run the same command again")
    if name.startswith("SQLITE_IOERR") or "disk I/O error" in text:
        return StoreError(f"cannot write the database ({text}: the disk may be full or failing): {where}nothing of "
                          "this operation was written; free space (or check the disk) and run the same command again")
    if name in ("SQLITE_BUSY", "SQLITE_LOCKED") or "database is locked" in text:
        return StoreBusy(f"the database is busy (another process held its write lock too long): {where}try again")
    return StoreError(f"database error: {where}{text}")


def database_file(conn: sqlite3.Connection) -> str:
    """The main database file of ``conn`` (for messages)."""
    try:
        for row in conn.execute("PRAGMA database_list"):
            if row[1] == "main":
                return row[2]
    except sqlite3.Error:
        pass
    return "the database"
