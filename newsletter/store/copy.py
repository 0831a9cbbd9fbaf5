"""``newsletter db copy SRC DST``: move a whole project between databases (SQLite → PostgreSQL,
PostgreSQL → SQLite, or between two databases of one engine) with everything in it: lists,
subscribers (with their never-reused ``uid`` and ``legacy_tokens``), memberships, suppressions,
consent records, editions, snapshots, sends, deliveries, send workers, SES events, dead letters,
rate-limit counters and the feeds tables — every table the two schemas share, found in the
databases themselves (a table a later migration adds on both engines is copied too).

- both are migrated first; a table that only SRC has and that holds rows (say the feeds tables,
  when the target engine does not keep them in this version) is refused by name, and so is a
  column DST lacks: nothing is copied. SQLite's chunked-import journal (``imports``,
  ``import_undo``) is bookkeeping, not data: never copied, but a SRC with an import still being
  applied is refused (its lists are half written until it finishes);
- DST must be empty (every table, the import journal included), checked inside the copy's own
  transaction (PostgreSQL: every table locked ``EXCLUSIVE`` first, so nothing slips in);
- SRC is read in one consistent snapshot (SQLite: one read transaction; PostgreSQL:
  ``REPEATABLE READ READ ONLY``), one row at a time in primary-key order (SQLite: a stepping
  cursor; PostgreSQL: ``COPY (SELECT …) TO STDOUT``), so memory stays flat however large the
  tables and however long the snapshots' HTML bodies: no batch of rows is ever held;
- DST is written in ONE transaction (PostgreSQL: ``COPY … FROM STDIN``, with a short queue of
  buffers; SQLite: one ``executemany`` fed by the stream), parents before children (the order
  follows the foreign keys: editions → snapshots → sends → deliveries → events), and each
  table's row count is compared with SRC's before it commits: interrupted, killed or failed, DST
  is left empty; finished, it is complete;
- ids are kept (tokens in readers' mailboxes, events and deliveries name them), and the id
  counters move past the highest id SRC ever handed out, not just the highest still there
  (PostgreSQL's identity sequences; SQLite's ``sqlite_sequence`` of its AUTOINCREMENT tables),
  so an erased reader's id is never given again after a copy, either way;
- the engines' types are mapped on the way: SQLite's integer booleans ↔ ``boolean``, ``REAL`` ↔
  ``double precision`` (heartbeats, rate-limit times), ``BLOB`` ↔ ``bytea``; JSON is text on
  both and moves unchanged.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from newsletter.errors import StoreError
from newsletter.store.dburl import backend, describe

# Not project data: schema bookkeeping, and SQLite's journal of the import being applied.
JOURNAL = ("imports", "import_undo")
_NOT_DATA = {"schema_migrations", *JOURNAL}
# The order of the tables this version knows (parents before children; a table a later
# migration adds goes after the tables its foreign keys name, then by name).
KNOWN_ORDER = ("lists", "subscribers", "memberships", "suppressions", "consent_records",
               "editions", "snapshots", "sends", "deliveries", "send_workers", "events",
               "dead_letters", "rate_events", "feeds", "feed_entries", "gather_candidates")
_PROGRESS_EVERY = 5000

# PostgreSQL types read as themselves from COPY into SQLite (the rest as their text: numeric,
# json, timestamps … become the text PostgreSQL prints, which SQLite stores as it is)
_PG_PLAIN = {16: "bool", 17: "bytea", 20: "int8", 21: "int2", 23: "int4", 25: "text",
             700: "float4", 701: "float8", 1043: "varchar"}
_TEXT_OID = 25

Progress = Callable[[str, int], None]  # (table, rows copied so far in it)


@dataclass
class CopyResult:
    source: str
    target: str
    counts: dict[str, int] = field(default_factory=dict)  # table -> rows copied, in copy order


@dataclass
class _Table:
    name: str
    columns: list[str]
    oids: list[int]                           # PostgreSQL: the columns' type oids
    key: list[str]                            # primary key ([] when none)
    parents: set[str]                         # tables its foreign keys name
    counter: str | None = None                # the id counter: PG sequence; SQLite: the table
    integer_key: str | None = None            # the single integer primary key column, if any


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Side:
    """One database, opened and migrated, with the few operations the copy needs."""

    def __init__(self, url: str, *, source: bool):
        self.url, self.kind, self.name = url, backend(url), describe(url)
        self.store = None
        if self.kind == "postgresql":
            from newsletter.store import pg

            self.conn = pg.connect(url)
        else:
            from newsletter.store import db

            path = db.sqlite_path(url)
            if source and not path.exists():
                raise StoreError(f"{path}: no such database file (nothing to copy)")
            if source:
                # the store undoes an import whose process died half-way before anything reads
                from newsletter.store.sqlite import SqliteStore

                self.store = SqliteStore(path)
                self.conn = self.store.conn
            else:
                self.conn = db.connect(path)

    @property
    def pg(self) -> bool:
        return self.kind == "postgresql"

    def close(self) -> None:
        self.conn.close()

    # -- the schema, as the database itself has it -------------------------------------------
    def tables(self) -> dict[str, _Table]:
        """Every table of the schema (the journal and schema bookkeeping included)."""
        return self._pg_tables() if self.pg else self._sqlite_tables()

    def _sqlite_tables(self) -> dict[str, _Table]:
        found = {}
        for name, sql in self.conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
                "AND substr(name, 1, 7) <> 'sqlite_' ORDER BY name").fetchall():
            info = self.conn.execute(f"PRAGMA table_info({_q(name)})").fetchall()
            key = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
            parents = {r[2] for r in self.conn.execute(f"PRAGMA foreign_key_list({_q(name)})")}
            table = _Table(name, [r[1] for r in info], [], key, parents - {name})
            types = {r[1]: (r[2] or "").upper() for r in info}
            if len(key) == 1 and "INT" in types[key[0]]:
                table.integer_key = key[0]
                if re.search(r"\bAUTOINCREMENT\b", sql or "", re.IGNORECASE):
                    table.counter = name
            found[name] = table
        return found

    def _pg_tables(self) -> dict[str, _Table]:
        here = "(SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
        found: dict[str, _Table] = {}
        counters: dict[str, dict[str, str]] = {}
        for table, column, oid, counter in self.conn.execute(
                "SELECT c.relname, a.attname, a.atttypid::int, "
                "       coalesce(pg_get_serial_sequence(quote_ident(c.relname), a.attname), '') "
                "FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
                f"WHERE c.relnamespace = {here} AND c.relkind IN ('r', 'p') "
                "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY c.relname, a.attnum"):
            entry = found.setdefault(table, _Table(table, [], [], [], set()))
            entry.columns.append(column)
            entry.oids.append(oid)
            if counter:
                counters.setdefault(table, {})[column] = counter
        for table, column in self.conn.execute(
                "SELECT c.relname, a.attname FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indrelid "
                "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (i.indkey) "
                f"WHERE i.indisprimary AND c.relnamespace = {here} "
                "ORDER BY c.relname, array_position(i.indkey::int2[], a.attnum)"):
            if table in found:
                found[table].key.append(column)
        for child, parent in self.conn.execute(
                "SELECT c.relname, p.relname FROM pg_constraint k "
                "JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class p ON p.oid = k.confrelid "
                f"WHERE k.contype = 'f' AND c.relnamespace = {here}"):
            if child in found and child != parent:
                found[child].parents.add(parent)
        for entry in found.values():
            if len(entry.key) == 1:
                oid = entry.oids[entry.columns.index(entry.key[0])]
                if oid in (20, 21, 23):
                    entry.integer_key = entry.key[0]
                    entry.counter = counters.get(entry.name, {}).get(entry.key[0])
        return found

    def count(self, table: str) -> int:
        return self.conn.execute(f"SELECT count(*) FROM {_q(table)}").fetchone()[0]

    # -- reading (source) ------------------------------------------------------------------
    def begin_snapshot(self) -> None:
        if self.pg:
            self.conn.raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        else:
            self.conn.execute("BEGIN")
            self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot

    def end_snapshot(self) -> None:
        if not getattr(self.conn, "closed", False) and self.conn.in_transaction:
            (self.conn.raw if self.pg else self.conn).execute("ROLLBACK")

    def refuse_running_import(self, tables: dict[str, _Table]) -> None:
        """SQLite: an import applied in chunks is visible chunk by chunk until it is done; a
        snapshot that sees one still applying would copy half of it."""
        if "imports" not in tables or self.pg:
            return
        running = self.conn.execute(
            "SELECT i.pid, i.host, i.started_at, l.name FROM imports i "
            "LEFT JOIN lists l ON l.id = i.list_id WHERE i.state = 'applying' "
            "ORDER BY i.id").fetchone()
        if running:
            pid, host, started, list_name = running
            raise StoreError(f"{self.name}: an import into list {list_name or '?'!r} is still "
                             f"running (pid {pid} on {host}, since {started}): copy when it has "
                             "finished")

    def high_water(self, table: _Table) -> int:
        """The highest id the table ever handed out (0: none): its highest row, or its
        counter when that went further (rows deleted since)."""
        if table.integer_key is None:
            return 0
        top = self.conn.execute(f"SELECT coalesce(max({_q(table.integer_key)}), 0) "
                                f"FROM {_q(table.name)}").fetchone()[0]
        counter = None
        if table.counter and self.pg:
            counter = self.conn.execute("SELECT pg_sequence_last_value(?::regclass)",
                                        (table.counter,)).fetchone()[0]
        elif table.counter:
            found = self.conn.execute("SELECT max(seq) FROM sqlite_sequence WHERE name = ?",
                                      (table.name,)).fetchone()
            counter = found[0] if found else None
        return max(int(top), int(counter or 0))

    def rows(self, table: _Table, columns: list[str], *, for_sqlite: bool) -> Iterator[tuple]:
        """The table's rows in primary-key order, one at a time."""
        select = (f"SELECT {', '.join(map(_q, columns))} FROM {_q(table.name)}"
                  + (f" ORDER BY {', '.join(map(_q, table.key))}" if table.key else ""))
        if self.pg:
            with self.conn.raw.cursor() as cur, cur.copy(f"COPY ({select}) TO STDOUT") as copy:
                if for_sqlite:  # (into PostgreSQL: every value as its text, unchanged)
                    oids = [table.oids[table.columns.index(c)] for c in columns]
                    copy.set_types([o if o in _PG_PLAIN else _TEXT_OID for o in oids])
                yield from copy.rows()
            return
        cur = self.conn.cursor()
        cur.row_factory = None  # plain tuples
        try:
            yield from cur.execute(select)
        finally:
            cur.close()

    # -- writing (target) ------------------------------------------------------------------
    def begin_write(self, tables: Iterable[str]) -> None:
        if self.pg:
            self.conn.raw.execute("BEGIN")
            names = ", ".join(map(_q, tables))
            if names:  # nobody else writes to DST until the copy commits or rolls back
                self.conn.raw.execute(f"LOCK TABLE {names} IN EXCLUSIVE MODE")
        else:
            self.conn.execute("BEGIN IMMEDIATE")

    def insert(self, table: str, columns: list[str], rows: Iterator[tuple]) -> None:
        names = ", ".join(map(_q, columns))
        if self.pg:
            from newsletter.store import pg

            pg.copy_rows(self.conn, f"COPY {_q(table)} ({names}) FROM STDIN",
                         _storable(table, columns, rows))
            return
        # executemany steps through the iterator: one row in memory at a time
        self.conn.executemany(f"INSERT INTO {_q(table)} ({names}) "
                              f"VALUES ({', '.join('?' * len(columns))})", rows)

    def move_counter(self, table: _Table, high_water: int) -> None:
        """The next id after ``high_water`` (and after every row copied)."""
        if table.counter is None:
            return
        if self.pg:
            top = max(high_water, self.high_water(table))
            if top > 0:
                self.conn.execute("SELECT setval(?, ?, true)", (table.counter, top))
            else:
                self.conn.execute("SELECT setval(?, 1, false)", (table.counter,))
            return
        if not high_water:
            return
        # inserting explicit ids moved sqlite_sequence to the highest row; SRC may have gone on
        if self.conn.execute("SELECT 1 FROM sqlite_sequence WHERE name = ?",
                             (table.name,)).fetchone():
            self.conn.execute("UPDATE sqlite_sequence SET seq = ?2 WHERE name = ?1 AND seq < ?2",
                              (table.name, high_water))
        else:
            self.conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)",
                              (table.name, high_water))

    def commit(self) -> None:
        (self.conn.raw if self.pg else self.conn).execute("COMMIT")

    def rollback(self) -> None:
        if not getattr(self.conn, "closed", False) and self.conn.in_transaction:
            try:
                (self.conn.raw if self.pg else self.conn).execute("ROLLBACK")
            except _errors(postgres=self.pg):
                pass  # the server rolls back a transaction whose connection is gone


def copy_database(source: str, target: str, *, on_progress: Progress | None = None) -> CopyResult:
    """Copy every table of ``source`` into the empty ``target`` (database settings: paths or
    URLs). All or nothing; ``StoreError`` with one line when the target is not empty, the
    source has a table or column the target lacks, an import is still running in the
    source, or the counts do not match."""
    if _same(source, target):
        raise StoreError(f"source and target are the same database ({describe(source)})")
    errors = _errors(postgres="postgresql" in (backend(source), backend(target)))
    src = _Side(source, source=True)
    try:
        dst = _Side(target, source=False)
    except BaseException:
        src.close()
        raise
    result = CopyResult(src.name, dst.name)
    table = ""
    try:
        theirs, ours = src.tables(), dst.tables()
        src.begin_snapshot()
        try:
            dst.begin_write(ours)
            try:
                filled = {t: n for t in _ordered(ours, ours) if (n := dst.count(t))}
                filled.update({t: n for t in JOURNAL if t in ours and (n := dst.count(t))})
                if filled:
                    raise StoreError(f"{dst.name} is not empty ({_counts(filled)}): copy into "
                                     "a new, empty database")
                src.refuse_running_import(theirs)
                plan = _plan(src, dst, theirs, ours)
                for name, columns in plan:
                    table = name
                    expected = src.count(name)
                    high = src.high_water(theirs[name])
                    rows = src.rows(theirs[name], columns, for_sqlite=not dst.pg)
                    try:
                        dst.insert(name, columns, _counted(rows, name, on_progress))
                    finally:  # a read stopped half-way ends now (PostgreSQL: the COPY is cancelled)
                        rows.close()
                    got = dst.count(name)
                    if got != expected:
                        raise StoreError(f"{dst.name}: {name} has {got} rows after the copy, "
                                         f"the source {expected}; nothing was copied")
                    dst.move_counter(ours[name], high)
                    result.counts[name] = got
                table = ""
                dst.commit()
            except BaseException:
                dst.rollback()
                raise
        finally:
            src.end_snapshot()
    except errors as err:
        at = f" (table {table})" if table else ""
        raise StoreError(f"copy from {src.name} to {dst.name} failed{at}, nothing was copied: "
                         f"{' '.join(str(err).split())}") from None
    finally:
        src.close()
        dst.close()
    return result


def _plan(src: _Side, dst: _Side, theirs: dict[str, _Table],
          ours: dict[str, _Table]) -> list[tuple[str, list[str]]]:
    """(table, columns) to copy, parents first: the tables both sides have. A table only SRC
    has is refused when it holds rows, and so is a column only SRC has."""
    only_theirs = {t: n for t in _ordered(theirs, theirs) if t not in ours and (n := src.count(t))}
    if only_theirs:
        raise StoreError(f"cannot copy {_counts(only_theirs)} from {src.name}: {dst.name} has no "
                         f"such {'table' if len(only_theirs) == 1 else 'tables'} (this version of "
                         f"newsletter does not keep {'it' if len(only_theirs) == 1 else 'them'} "
                         f"on {_engine(dst.kind)}); nothing was copied")
    plan = []
    for name in _ordered({t: theirs[t] for t in theirs if t in ours}, {**theirs, **ours}):
        columns = theirs[name].columns
        missing = [c for c in columns if c not in ours[name].columns]
        if missing:
            raise StoreError(f"{dst.name}: table {name} has no column {', '.join(missing)} "
                             "(upgrade newsletter where it runs); nothing was copied")
        plan.append((name, columns))
    return plan


def _ordered(tables: dict[str, _Table], schema: dict[str, _Table]) -> list[str]:
    """The data tables of ``tables``, every one after the tables its foreign keys name (in
    either schema), else in ``KNOWN_ORDER`` and then by name."""
    wanted = [t for t in tables if t not in _NOT_DATA]
    rank = {t: (KNOWN_ORDER.index(t) if t in KNOWN_ORDER else len(KNOWN_ORDER), t) for t in wanted}
    parents = {t: {p for p in (tables[t].parents | (schema[t].parents if t in schema else set()))
                   if p in rank and p != t} for t in wanted}
    done: list[str] = []
    left = sorted(wanted, key=rank.__getitem__)
    while left:
        ready = [t for t in left if parents[t] <= set(done)] or left[:1]  # a cycle: as ranked
        done.append(ready[0])
        left.remove(ready[0])
    return done


def _counted(rows: Iterator[tuple], table: str, on_progress: Progress | None) -> Iterator[tuple]:
    if on_progress is None:
        yield from rows
        return
    done = 0
    for row in rows:
        yield row
        done += 1
        if done % _PROGRESS_EVERY == 0:
            on_progress(table, done)
    on_progress(table, done)


def _counts(found: dict[str, int]) -> str:
    return ", ".join(f"{n} {t}" for t, n in found.items())


def _engine(kind: str) -> str:
    return "PostgreSQL" if kind == "postgresql" else "SQLite"


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


def _storable(table: str, columns: list[str], rows: Iterator[tuple]) -> Iterator[tuple]:
    """``rows`` for PostgreSQL, each checked for what SQLite kept and PostgreSQL cannot: a NUL in
    text (stored by an older version, e.g. in an event's detail), or a ``\\u0000`` escape in the
    attributes' JSON (which ``jsonb`` refuses, so every ``--where`` would fail). One line naming
    the row and column instead of the driver's bare refusal; nothing is copied."""
    from newsletter.errors import UnstorableError

    key = columns.index("id") if "id" in columns else 0
    attributes = columns.index("attributes") if table == "subscribers" and "attributes" in columns else -1
    for row in rows:
        for i, value in enumerate(row):
            if value.__class__ is str and ("\x00" in value or (i == attributes and "\\u0000" in value)):
                raise UnstorableError(
                    f"{table} row {columns[key]} {row[key]}: {columns[i]} holds a NUL character "
                    "(U+0000), which PostgreSQL cannot store: remove it in the source and copy "
                    "again; nothing was copied")
        yield row
