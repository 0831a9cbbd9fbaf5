"""``newsletter db copy SRC DST``: move a project's readers between databases (SQLite ↔
PostgreSQL, or the same engine), for now the subscriber store's tables: lists, subscribers (with
their never-reused ``uid`` and ``legacy_tokens``), memberships, suppressions and consent records
(the ledger, events and rate limits are not covered yet, and the
copy says so when the source holds any).

- the target must be empty (every known table, covered or not); both are migrated first;
- the source is read in one consistent snapshot (SQLite: a read transaction; PostgreSQL:
  ``REPEATABLE READ READ ONLY``), streamed in batches (constant memory);
- the target is written in ONE transaction (PostgreSQL: ``COPY``), and the row counts are
  compared with the source's before it commits: interrupted or failed, the target is left
  empty; finished, it is complete;
- ids are kept (tokens already in readers' mailboxes name them), and PostgreSQL's identity
  sequences are moved past them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from newsletter.errors import StoreError
from newsletter.store.dburl import backend, describe

# (table, primary-key order), parents before children
# (subscribers with their uid and legacy_tokens: the identity every token names)
COVERED = (("lists", "id"), ("subscribers", "id"), ("memberships", "subscriber_id, list_id"),
           ("suppressions", "email_hash"), ("consent_records", "id"))
NOT_COVERED = ("editions", "snapshots", "sends", "deliveries", "send_workers", "events",
               "dead_letters")
WITH_IDENTITY = ("lists", "subscribers", "consent_records")
_BATCH = 5000

Progress = Callable[[str, int], None]  # (table, rows copied so far in it)


@dataclass
class CopyResult:
    source: str
    target: str
    counts: dict[str, int] = field(default_factory=dict)     # table -> rows copied
    left_behind: dict[str, int] = field(default_factory=dict)  # not covered yet, non-empty


class _Side:
    """One database, opened and migrated, with the few operations the copy needs."""

    def __init__(self, url: str):
        self.url, self.kind, self.name = url, backend(url), describe(url)
        if self.kind == "postgresql":
            from newsletter.store import pg

            self.conn = pg.connect(url)
        else:
            from newsletter.store import db

            self.conn = db.connect(db.sqlite_path(url))

    def close(self) -> None:
        self.conn.close()

    def columns(self, table: str) -> list[str]:
        if self.kind == "postgresql":
            return [r[0] for r in self.conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                "current_schema() AND table_name = ? ORDER BY ordinal_position", (table,))]
        return [r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")]

    def count(self, table: str) -> int:
        if not self.columns(table):
            return 0
        return self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    # -- reading (source) ------------------------------------------------------------------
    def begin_snapshot(self) -> None:
        if self.kind == "postgresql":
            self.conn.raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        else:
            self.conn.execute("BEGIN")
            self.conn.execute("SELECT count(*) FROM lists").fetchone()  # takes the snapshot

    def end_snapshot(self) -> None:
        if self.conn.in_transaction:
            (self.conn.raw if self.kind == "postgresql" else self.conn).execute("ROLLBACK")

    def rows(self, table: str, columns: list[str], order: str) -> Iterator[tuple]:
        sql = f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}"
        if self.kind == "postgresql":
            import psycopg

            with psycopg.RawServerCursor(self.conn.raw, f"nl_copy_{table}") as cur:
                cur.execute(sql)
                while batch := cur.fetchmany(_BATCH):
                    yield from (tuple(r) for r in batch)
        else:
            cur = self.conn.execute(sql)
            while batch := cur.fetchmany(_BATCH):
                yield from (tuple(r) for r in batch)

    # -- writing (target) ------------------------------------------------------------------
    def begin_write(self) -> None:
        if self.kind == "postgresql":
            from newsletter.store.postgres import WRITE_LOCK

            self.conn.raw.execute("BEGIN")
            self.conn.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK,))
        else:
            self.conn.execute("BEGIN IMMEDIATE")

    def insert(self, table: str, columns: list[str], rows: Iterator[tuple]) -> None:
        if self.kind == "postgresql":
            from newsletter.store import pg

            pg.copy_rows(self.conn, f"COPY {table} ({', '.join(columns)}) FROM STDIN", rows)
            return
        sql = (f"INSERT INTO {table} ({', '.join(columns)}) "
               f"VALUES ({', '.join('?' * len(columns))})")
        batch: list[tuple] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= _BATCH:
                self.conn.executemany(sql, batch)
                batch = []
        if batch:
            self.conn.executemany(sql, batch)

    def move_sequences(self) -> None:
        """PostgreSQL: the next id after the highest copied one (SQLite does that itself)."""
        if self.kind != "postgresql":
            return
        for table in WITH_IDENTITY:
            self.conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)")

    def commit(self) -> None:
        (self.conn.raw if self.kind == "postgresql" else self.conn).execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            (self.conn.raw if self.kind == "postgresql" else self.conn).execute("ROLLBACK")


def copy_database(source: str, target: str, *, on_progress: Progress | None = None) -> CopyResult:
    """Copy lists, subscribers, memberships, suppressions and consent records from ``source`` into the empty
    ``target`` (database settings: paths or URLs). All or nothing; ``StoreError`` with one
    line when the target is not empty, the schemas disagree or the counts do not match."""
    if _same(source, target):
        raise StoreError(f"source and target are the same database ({describe(source)})")
    errors = _errors(postgres="postgresql" in (backend(source), backend(target)))
    src = _Side(source)
    try:
        dst = _Side(target)
    except BaseException:
        src.close()
        raise
    result = CopyResult(src.name, dst.name)
    try:
        filled = {t: n for t in [t for t, _ in COVERED] + list(NOT_COVERED)
                  if (n := dst.count(t))}
        if filled:
            raise StoreError(f"{dst.name} is not empty ({_counts(filled)}): copy into a new, "
                             "empty database")
        plan = []
        for table, order in COVERED:
            theirs, ours = src.columns(table), dst.columns(table)
            missing = [c for c in theirs if c not in ours]
            if missing:
                raise StoreError(f"{dst.name}: table {table} has no column "
                                 f"{', '.join(missing)} (upgrade newsletter where it runs)")
            plan.append((table, order, theirs))
        src.begin_snapshot()
        dst.begin_write()
        try:
            for table, order, columns in plan:
                expected = src.count(table)
                dst.insert(table, columns, _counted(src.rows(table, columns, order), table,
                                                    on_progress))
                got = dst.count(table)
                if got != expected:
                    raise StoreError(f"{dst.name}: {table} has {got} rows after the copy, the "
                                     f"source {expected}; nothing was copied")
                result.counts[table] = got
            dst.move_sequences()
            result.left_behind = {t: n for t in NOT_COVERED if (n := src.count(t))}
            dst.commit()
        except BaseException:
            dst.rollback()
            raise
        finally:
            src.end_snapshot()
    except errors as err:
        raise StoreError(f"copy from {src.name} to {dst.name} failed, nothing was copied: "
                         f"{' '.join(str(err).split())}") from None
    finally:
        src.close()
        dst.close()
    return result


def _counted(rows: Iterator[tuple], table: str, on_progress: Progress | None) -> Iterator[tuple]:
    if on_progress is None:
        yield from rows
        return
    done = 0
    for row in rows:
        yield row
        done += 1
        if done % _BATCH == 0:
            on_progress(table, done)
    on_progress(table, done)


def _counts(found: dict[str, int]) -> str:
    return ", ".join(f"{n} {t}" for t, n in found.items())


def _same(a: str, b: str) -> bool:
    if backend(a) != backend(b):
        return False
    if backend(a) == "sqlite":
        from newsletter.store.db import sqlite_path

        return sqlite_path(a).resolve() == sqlite_path(b).resolve()
    return a.rstrip("/") == b.rstrip("/")


def _errors(*, postgres: bool) -> tuple[type[BaseException], ...]:
    """The drivers' error classes (psycopg only imported when PostgreSQL is involved)."""
    if not postgres:
        return (sqlite3.Error,)
    import psycopg

    return (sqlite3.Error, psycopg.Error)
