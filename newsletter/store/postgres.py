"""``PostgresStore``: the ``Store`` interface on PostgreSQL (psycopg 3).

The subscriber rules are written once. ``SqliteStore``'s SQL is portable (``?`` placeholders,
``INSERT … RETURNING``, ``ON CONFLICT``) and runs here unchanged through ``store.pg``'s
connection, which rewrites the placeholders into PostgreSQL's ``$N``; this class replaces only
what differs between the engines:

- transactions: ``BEGIN`` plus a transaction-level advisory lock, so that store writes queue up
  one at a time as they do on SQLite (``BEGIN IMMEDIATE``); the consent checks read-then-write
  and must not interleave. Reads never wait for it;
- streaming: a server-side cursor (``DECLARE … WITH HOLD``) fetched in batches, so a list of any
  size uses constant memory here too (a plain psycopg cursor would load the whole result);
- the bulk import: ``COPY`` into a temporary table, then set-based SQL
  (``newsletter.store.postgres_import``);
- erasure (``strpos`` instead of SQLite's ``instr``);
- audience SQL: lists of ids as one ``bigint[]`` parameter (``unnest … WITH ORDINALITY`` for
  SQLite's ``json_each``), ``--where`` conditions through ``jsonb ->>`` (for ``json_extract``)
  with the same ASCII-only case folding as SQLite's ``COLLATE NOCASE``;
- ``imports_running``: always empty (an import here is one transaction).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from newsletter.audience.segments import Condition
from newsletter.store import pg
from newsletter.store.base import ImportRow, ImportSummary
from newsletter.store.sqlite import SqliteStore

WRITE_LOCK = 0x6E6C7772  # pg_advisory_xact_lock key held by every store write ("nlwr")
READER_LOCK = 0x6E6C7264  # first key of the per-reader lock of ``reader_transaction`` ("nlrd")
_FETCH = 2000
_cursors = itertools.count(1)
# SQLite's COLLATE NOCASE folds ASCII letters only; lower() would follow the server's locale
_UPPER, _LOWER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"


def _nocase(expr: str) -> str:
    return f"translate({expr}, '{_UPPER}', '{_LOWER}')"


class PostgresStore(SqliteStore):
    """The subscriber store in a PostgreSQL database (``url``), migrated on connect."""

    backend = "postgresql"
    FIND_IN = "strpos"

    def __init__(self, url: str):  # noqa: D107 (does not call SqliteStore.__init__: no file)
        self.url = url
        self.path = None
        self.conn = pg.connect(url)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self, *, locked: bool = True) -> Iterator[pg.PgConnection]:
        """A write transaction holding the store's write lock (``locked=False``: take it later
        with ``lock_writes``, e.g. after staging an import's rows)."""
        with self.conn.transaction() as conn:
            if locked:
                self.lock_writes()
            yield conn

    @contextmanager
    def reader_transaction(self, subscriber_id: int) -> Iterator[pg.PgConnection]:
        """A write transaction for one reader's conditional changes (an unsubscribe): the
        store's write lock taken *shared*, so these wait for, and hold off, the writes that read
        and then decide (an import's merge, consent changes), but not each other: unsubscribes of
        different readers commit side by side (their commits share the disk's flushes); those of
        one reader queue on that reader's own lock."""
        with self.conn.transaction() as conn:
            self.conn.execute("SELECT pg_advisory_xact_lock_shared(?::bigint), "
                              "pg_advisory_xact_lock(?::integer, (?::bigint % 2147483648)::integer)",
                              (WRITE_LOCK, READER_LOCK, subscriber_id))
            yield conn

    def lock_writes(self) -> None:
        """Wait for the store's write lock (held until this transaction ends)."""
        self.conn.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK,))

    def _batches(self, sql: str, args) -> Iterator[list]:
        import psycopg

        name = f"nl_stream_{next(_cursors)}"
        # WITH HOLD: the cursor outlives the (autocommit) statement that declares it; the
        # server keeps the result, this process holds one batch at a time.
        try:
            with psycopg.RawServerCursor(self.conn.raw, name, withhold=True) as cur:
                cur.itersize = _FETCH
                cur.execute(pg.to_pg(sql), args or None)
                while batch := cur.fetchmany(_FETCH):
                    yield batch
        except (psycopg.Error, UnicodeEncodeError) as err:  # the server gone mid-stream…
            raise pg.fail(err, self.url, "cannot read") from None

    def import_rows(self, rows: Iterable[ImportRow], *, list_name: str, dry_run: bool = False,
                    source: str = "import",
                    summary: ImportSummary | None = None) -> ImportSummary:
        from newsletter.store.postgres_import import import_rows

        target = self.require_list(list_name)
        return import_rows(self, rows, target, dry_run=dry_run, source=source,
                           summary=summary or ImportSummary(dry_run=dry_run))

    def imports_running(self, list_name: str) -> list[int]:
        """Always empty: an import into PostgreSQL is one transaction, invisible until it
        commits and rolled back by the server if its process dies, so no list is ever left
        half-written (SQLite's chunked imports journal themselves; see pg_migrations/006)."""
        self.require_list(list_name)
        return []

    # -- audiences -------------------------------------------------------------------------
    _AUDIENCE_LIST_ID = "(?::bigint[])[u.pos + 1]"

    @staticmethod
    def _id_list(ids: list[int]) -> list[int]:
        return [int(i) for i in ids]  # sent as an array, cast to bigint[] in the SQL

    _LIST_ROWS = "unnest(?::bigint[]) WITH ORDINALITY AS l(list_id, pos)"
    _LIST_ROW_ID = "l.list_id"
    _LIST_POS = "l.pos - 1"
    _IN_LIST = "= ANY (?::bigint[])"

    @staticmethod
    def _conditions_sql(conditions: Iterable[Condition]) -> tuple[str, list]:
        """``--where`` conditions on ``s.attributes`` (JSON text of strings), ANDed; the same
        meaning as SQLite's (a reader without the attribute is "not equal")."""
        parts, args = [], []
        value = "(s.attributes::jsonb ->> (?::text))"
        present = f"coalesce({value}, '')"
        for c in conditions:
            if c.op == "has":
                parts.append(f"{present} <> ''")
                args.append(c.key)
            elif c.op == "=":
                parts.append(f"{_nocase(value)} = {_nocase('(?::text)')}")
                args += [c.key, c.value]
            else:
                parts.append(f"{_nocase(present)} <> {_nocase('(?::text)')}")
                args += [c.key, c.value]
        return " AND ".join(parts), args

