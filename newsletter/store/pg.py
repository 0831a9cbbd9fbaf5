"""PostgreSQL connections and schema migrations (psycopg 3, imported only when a PostgreSQL
database is used).

``connect(url)`` returns a ``PgConnection``: a thin wrapper whose ``execute`` takes the same
``?`` / ``?N`` placeholders as the SQLite code (rewritten once per statement text into
PostgreSQL's own ``$N``, sent with psycopg's ``RawCursor``, so no client-side quoting happens),
and whose rows read like ``sqlite3.Row`` (by index and by column name). That lets the
backend-neutral parts of the store (``newsletter.store.readers``) run on both engines; SQL that
differs lives in ``newsletter.store.postgres``.

Migrations: ``pg_migrations/NNN_name.sql``, their own sequence, recorded one row per version in
``schema_migrations``. Each applies in one transaction holding an advisory lock, so two
processes starting at once apply it once. A database newer than the code is a ``StoreError``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any

from newsletter.errors import StoreError
from newsletter.store.dburl import describe, pg_host_and_database

_MIGRATION_RE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\?(\d+)?")
_MIGRATION_LOCK = 0x6E6C6D67  # pg_advisory_xact_lock key for migrations ("nlmg")
_translated: dict[str, str] = {}


def to_pg(sql: str) -> str:
    """``?`` → ``$1, $2…`` in order, ``?N`` → ``$N`` (string literals left alone)."""
    found = _translated.get(sql)
    if found is None:
        counter = iter(range(1, 10_000))

        def replace(m: re.Match) -> str:
            if m.group(0).startswith("'"):
                return m.group(0)
            return f"${m.group(1) or next(counter)}"

        found = _translated[sql] = _PLACEHOLDER.sub(replace, sql)
    return found


class Row(Sequence):
    """A result row readable as ``row[0]`` and ``row["name"]`` (like ``sqlite3.Row``);
    ``dict(row)`` gives the columns."""

    __slots__ = ("_values", "_index")

    def __init__(self, values: Sequence, index: dict[str, int]):
        self._values = values
        self._index = index

    def __getitem__(self, key):
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> list[str]:
        return list(self._index)

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._index, self._values))!r})"


def _row_factory(cursor):
    description = cursor.description
    if description is None:
        return tuple
    index = {column.name: i for i, column in enumerate(description)}
    return lambda values: Row(values, index)


class PgConnection:
    """One psycopg connection in autocommit mode; ``transaction()`` opens an explicit one."""

    def __init__(self, raw, url: str):
        self.raw = raw
        self.url = url

    # the sqlite3.Connection-like surface the shared store code uses
    def execute(self, sql: str, params: Sequence | None = None, *, prepare: bool = False):
        """Run one statement. ``prepare=True`` for the hot ones (a send's claims and records):
        parsed and planned once per connection, then only bound and run."""
        import psycopg

        cur = self.raw.cursor()
        try:
            return cur.execute(to_pg(sql), params or None, prepare=prepare)
        except (psycopg.Error, UnicodeEncodeError) as err:  # the server gone, a refusal, a value
            cur.close()
            if isinstance(err, psycopg.IntegrityError) and self.in_transaction:
                raise  # a duplicate the caller may resolve (a savepoint); else transaction() maps it
            raise fail(err, self.url) from None
        except Exception:
            cur.close()
            raise

    def execute_lazy_commit(self, sql: str, params: Sequence | None = None) -> int:
        """Run one write statement in its own transaction whose commit does not wait for the
        disk (``synchronous_commit = off`` for it alone), the four messages sent at once
        (psycopg's pipeline mode): one round trip, no fsync wait; returns the rows changed.

        What it may cost: if the *server* crashes, the last fraction of a second of such
        commits is lost (never half of one: the database stays consistent). The ledger uses it
        only where a lost write is harmless — a delivery's outcome, whose row then stays
        ``sending`` and is reported unknown, never sent again unasked — and never for a claim.
        """
        import psycopg

        try:
            with self.raw.pipeline(), self.raw.cursor() as cur:
                cur.execute("BEGIN")
                cur.execute("SET LOCAL synchronous_commit TO OFF")
                cur.execute(to_pg(sql), params or None, prepare=True)
                changed = cur.rowcount
                cur.execute("COMMIT")
        except (psycopg.Error, UnicodeEncodeError) as err:
            if not self.raw.closed and self.in_transaction:
                try:
                    self.raw.execute("ROLLBACK")
                except psycopg.Error:
                    pass
            raise fail(err, self.url, "cannot write to") from None
        return changed

    def executemany(self, sql: str, rows: Iterable[Sequence]):
        import psycopg

        cur = self.raw.cursor()
        try:
            cur.executemany(to_pg(sql), list(rows))
        except (psycopg.Error, UnicodeEncodeError) as err:
            if isinstance(err, psycopg.IntegrityError) and self.in_transaction:
                raise
            raise fail(err, self.url) from None
        return cur

    def cursor(self):
        return self.raw.cursor()

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def close(self) -> None:
        self.raw.close()

    @property
    def lost(self) -> bool:
        """The connection is gone (the server restarted, a network cut): a long-lived holder
        (a web worker's store) opens a new one instead of answering 503 forever."""
        return self.raw.closed or self.raw.broken

    @contextmanager
    def transaction(self) -> Iterator["PgConnection"]:
        """BEGIN … COMMIT, rolled back on any exception (KeyboardInterrupt included)."""
        errors = _errors()
        try:
            self.raw.execute("BEGIN")
        except errors.Error as err:
            raise fail(err, self.url, "cannot write to") from None
        try:
            yield self
        except BaseException as err:
            if not self.raw.closed and self.in_transaction:
                try:
                    self.raw.execute("ROLLBACK")
                except errors.Error:
                    pass
            if isinstance(err, (errors.Error, UnicodeEncodeError)):  # from raw or a copy
                raise fail(err, self.url, "cannot write to") from None
            raise
        try:
            self.raw.execute("COMMIT")
        except errors.Error as err:
            raise fail(err, self.url, "cannot commit to") from None


def _errors():
    import psycopg

    return psycopg


# SQLSTATE classes of a value the server refuses: 22 data exception (out of range, too long,
# invalid text, "unsupported Unicode escape sequence" for jsonb's \u0000), 54 too long a
# statement/array (program limit exceeded)
_VALUE_CLASSES = ("22", "54")


def fail(err: BaseException, url: str, doing: str = "cannot use") -> StoreError:
    """A driver error as one line naming the database and host (never the password): an
    ``UnstorableError`` when the *value* was refused (psycopg's DataError, a NUL it will not
    send, a lone surrogate it cannot encode), else a ``StoreError`` (the server gone, a
    permission or read-only refusal, a constraint)."""
    from newsletter.errors import UnstorableError

    if isinstance(err, StoreError):
        return err
    text = " ".join(str(err).split()) or type(err).__name__
    sqlstate = getattr(err, "sqlstate", None) or ""
    import psycopg

    if (isinstance(err, (UnicodeEncodeError, psycopg.DataError))
            or sqlstate[:2] in _VALUE_CLASSES):
        if isinstance(err, UnicodeEncodeError):
            text = (f"U+{ord(err.object[err.start]):04X} is not text (a lone surrogate: bytes "
                    "that were not UTF-8?)")
        mapped: StoreError = UnstorableError(f"{describe(url)} refused a value: {text}")
    else:
        mapped = StoreError(f"{doing} {describe(url)}: {text}")
    mapped.reason = text  # the driver's own line (for messages that name the database already)
    return mapped


def connect(url: str, *, migrate: bool = True, application: str = "newsletter") -> PgConnection:
    """Connect (libpq finds credentials: PGPASSWORD, ~/.pgpass, PGSERVICE…) and, unless
    ``migrate=False``, bring the schema up to date. A failure is one ``StoreError`` line."""
    import psycopg

    try:
        raw = psycopg.connect(url, autocommit=True, cursor_factory=psycopg.RawCursor,
                              row_factory=_row_factory, application_name=application,
                              connect_timeout=10)
    except psycopg.Error as err:
        host, dbname = pg_host_and_database(url)
        reason = " ".join(str(err).split())
        # libpq repeats the host in its message; keep the first reason it gives
        reason = re.sub(r'^(connection failed: )?(connection to server (at|on) "[^"]*"'
                        r'( \([^)]*\))?, port \d+ failed: )?', "", reason)
        raise StoreError(f"cannot connect to PostgreSQL database {dbname!r} on {host}: "
                         f"{reason}") from None
    conn = PgConnection(raw, url)
    if migrate:
        try:
            migrate_database(conn)
        except BaseException:
            conn.close()
            raise
    return conn


# -- migrations --------------------------------------------------------------------------------

def migrations() -> list[tuple[int, str, str]]:
    """``(version, file name, sql)`` of every PostgreSQL migration shipped, in order."""
    found = []
    for entry in resources.files("newsletter.store").joinpath("pg_migrations").iterdir():
        m = _MIGRATION_RE.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    for (before, before_name, _), (version, name, _) in zip(found, found[1:]):
        if version == before:  # numbers increase; gaps are allowed, as for SQLite's
            raise StoreError(f"migrations pg_migrations/{before_name} and {name} have the "
                             "same number")
    return found


def latest_version() -> int:
    steps = migrations()
    return steps[-1][0] if steps else 0


_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at text NOT NULL
)"""


def schema_version(conn: PgConnection) -> int:
    """The newest migration applied (0 for an empty database)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
    if not exists:
        return 0
    return conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]


def applied(conn: PgConnection) -> list[tuple[int, str, str]]:
    """``(version, name, applied_at)`` of the migrations this database has."""
    if not conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]:
        return []
    return [tuple(r) for r in conn.execute(
        "SELECT version, name, applied_at FROM schema_migrations ORDER BY version")]


def _applied_versions(conn: PgConnection) -> set[int]:
    if not conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]:
        return set()
    return {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}


def migrate_database(conn: PgConnection) -> int:
    """Apply every migration this database does not have, in order, each in its own
    transaction; return the version. Each version is recorded, so a migration numbered below
    one already applied (branches merged in another order) is still applied, once."""
    from newsletter.store.db import utc_now

    errors = _errors()
    steps = migrations()
    latest = steps[-1][0] if steps else 0
    try:
        done = _applied_versions(conn)
    except errors.Error as err:
        raise fail(err, conn.url, "cannot read the schema version of") from None
    _check_not_newer(conn, max(done, default=0), latest)
    for version, name, sql in steps:
        if version in done:
            continue
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
                conn.raw.execute(_VERSION_TABLE)
                if version in _applied_versions(conn):  # another process got here first
                    continue
                conn.raw.execute(sql)
                conn.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                             "VALUES (?, ?, ?)", (version, name, utc_now()))
        except (errors.Error, StoreError) as err:
            reason = getattr(err, "reason", None) or " ".join(str(err).split())
            raise StoreError(f"migration pg_migrations/{name} failed on {describe(conn.url)}: "
                             f"{reason}") from None
    return schema_version(conn)


def _check_not_newer(conn: PgConnection, current: int, latest: int) -> None:
    if current > latest:
        raise StoreError(f"{describe(conn.url)}: database schema version {current} is newer "
                         f"than this program knows ({latest}); upgrade newsletter")


def copy_rows(conn: PgConnection, sql: str, rows: Iterable[Sequence[Any]],
              binary_types: Sequence[str] | None = None) -> int:
    """``COPY … FROM STDIN`` fed row by row (psycopg's ``cursor.copy``); returns the rows
    stored. The data goes out from a writer thread, so the server stores rows while Python
    produces the next ones. ``binary_types`` (the columns' types, in order): the binary
    format, which costs both sides less per field than text (no escaping, no hex bytea, no
    number parsing)."""
    if binary_types is not None:
        sql += " (FORMAT BINARY)"
    with conn.raw.cursor() as cur:
        with cur.copy(sql, writer=_queued_writer(cur)) as copy:
            if binary_types is not None:
                copy.set_types(binary_types)
            for row in rows:
                copy.write_row(row)
        return cur.rowcount


_COPY_QUEUE = 32  # buffers (of ~32-128 KiB) waiting for the writer thread: a few MiB at most


def _queued_writer(cur):
    """psycopg's ``QueuedLibpqWriter`` with a short queue: its own holds 1024 buffers (up to
    ~100 MiB when the server is slower than the file is read), and memory must stay flat."""
    from queue import Queue

    from psycopg.copy import QueuedLibpqWriter

    writer = QueuedLibpqWriter(cur)
    if isinstance(getattr(writer, "_queue", None), Queue):  # a private attribute: checked
        writer._queue = Queue(maxsize=_COPY_QUEUE)
    return writer


_UID_BYTES = 16
_UID_POOL = 4096  # uids drawn from the OS per call


def random_uids() -> Iterator[bytes]:
    """Endless subscriber uids (16 bytes from ``os.urandom``, the OS's CSPRNG), for the imports'
    ``COPY``: drawn 4096 at a time, a slice each, about 6x cheaper per row than the column's
    server-side default (``nl_random_uid()``: three ``gen_random_uuid()`` calls), which single
    inserts keep using."""
    import os

    while True:
        pool = os.urandom(_UID_BYTES * _UID_POOL)
        for start in range(0, len(pool), _UID_BYTES):
            yield pool[start:start + _UID_BYTES]

