"""SQLite connections and schema migrations.

The schema is versioned with ``PRAGMA user_version``; each ``migrations/NNN_name.sql`` file takes
the database from the version before it to NNN inside one transaction (numbers may have gaps), so a crash mid-migration leaves
the previous version intact. Two processes starting at once serialise on ``BEGIN IMMEDIATE``.
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
    # Numbers are reserved per feature, so a build may lack some (005 then 007): gaps are fine,
    # two files with one number are not.
    for (version, name, _), (previous, other, _) in zip(found[1:], found):
        if version == previous:
            raise StoreError(f"migrations {other} and {name} have the same number")
    return found


def latest_version() -> int:
    steps = migrations()
    return steps[-1][0] if steps else 0


def sqlite_path(url: str) -> Path:
    """The file behind a database setting: a plain path or a ``sqlite:///path`` URL."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise StoreError(f"unsupported database URL scheme {scheme!r} (only sqlite is built in)")
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
        raise StoreError(f"cannot open database: {err}", file=path) from None
    conn.row_factory = sqlite3.Row
    if migrate:
        try:
            migrate_database(conn, path)
        except BaseException:
            conn.close()
            raise
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate_database(conn: sqlite3.Connection, path: Path | None = None) -> int:
    """Apply every pending migration; return the resulting version.

    A database newer than this code is a ``StoreError`` (upgrade the program), not a crash.
    """
    steps = migrations()
    latest = steps[-1][0] if steps else 0
    current = schema_version(conn)
    if current > latest:
        raise StoreError(
            f"database schema version {current} is newer than this program knows ({latest}); "
            "upgrade newsletter",
            file=path,
        )
    for version, name, sql in steps:
        if version <= current:
            continue
        try:
            conn.execute("BEGIN IMMEDIATE")
            if schema_version(conn) >= version:  # another process got here first
                conn.execute("ROLLBACK")
                continue
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"migration {name} failed: {err}", file=path) from None
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


def store_error(err: sqlite3.Error, path: str | Path | None = None) -> StoreError:
    """One line for a failed SQLite statement, saying what to do. Disk full (SQLITE_FULL) and
    write I/O errors (what a file-size limit gives) ask to free space and run the same command
    again — the transaction was rolled back, so that is safe; a held lock is ``StoreBusy``."""
    name = getattr(err, "sqlite_errorname", "") or ""
    text = str(err)
    where = f"{path}: " if path else ""
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
