"""One connection to the project's database, whichever engine holds it.

The ledger, events, stats, feeds and rate limits write their SQL once, as SQLite SQL with ``?``
(or ``?N``) placeholders, and run it on either engine: a ``sqlite3.Connection`` (the default
file) or a ``pg.PgConnection`` (which rewrites the placeholders into PostgreSQL's ``$N``). What
differs between the engines lives in small fragments next to the SQL that needs them (see
``is_postgres``), and in the few functions here:

- ``connect(config)``: open (and migrate) the database a configuration names;
- ``write(conn)``: one write transaction (SQLite: ``BEGIN IMMEDIATE``, which takes the file's
  write lock up front; PostgreSQL: ``BEGIN``, plus, with ``exclusive=True``, an advisory lock
  that queues the read-then-write operations of every process the way SQLite's lock does);
  a failure is one ``StoreError`` line, and nothing of the transaction is written;
- ``errors()``: the driver exceptions a caller outside ``store/`` may catch without importing
  a driver;
- ``clock(conn)``: the database's clock, which every process of a send — on any host — reads the
  same (heartbeats are written and judged by it).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Union

from newsletter.errors import StoreError

if TYPE_CHECKING:
    from pathlib import Path

    from newsletter.config import Config
    from newsletter.store.pg import PgConnection

Connection = Union[sqlite3.Connection, "PgConnection"]

LEDGER_LOCK = 0x6E6C6C67  # pg_advisory_xact_lock key of the ledger's exclusive writes ("nllg")


def connect(config: "Config | str", *, migrate: bool = True) -> Connection:
    """The database ``config`` names (``NEWSLETTER_DATABASE_URL`` wins), opened and migrated:
    a SQLite file (created when missing) or a PostgreSQL database."""
    from newsletter.store import database_url
    from newsletter.store.dburl import is_postgres

    url = database_url(config)
    if is_postgres(url):
        from newsletter.store import pg

        return pg.connect(url, migrate=migrate)
    from newsletter.store import db

    return db.connect(db.sqlite_path(url), migrate=migrate)


def is_postgres(conn: Any) -> bool:
    return not isinstance(conn, sqlite3.Connection)


def lost(conn: Any) -> bool:
    """Whether ``conn`` can no longer be used and must be opened again: a PostgreSQL
    connection the server dropped (restart, failover, network); a SQLite file never is."""
    return is_postgres(conn) and conn.lost


class PerThread:
    """One connection (or an object holding one) per thread — a SQLite connection must stay in
    the thread that opened it — opened on first use, opened again when the database dropped it
    (``lost``), and all closed together by ``close``. ``conn_of`` finds the connection in what
    ``open`` returns."""

    def __init__(self, open: Callable[[], Any], conn_of: Callable[[Any], Any] = lambda item: item):  # noqa: A002
        self._open, self._conn_of = open, conn_of
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def get(self) -> Any:
        item = getattr(self._local, "item", None)
        if item is not None and lost(self._conn_of(item)):  # the server restarted: open again
            with self._lock:
                if item in self._all:
                    self._all.remove(item)
            _close_quietly(item)
            item = None
        if item is None:
            item = self._open()
            self._local.item = item
            with self._lock:
                self._all.append(item)
        return item

    def close(self) -> None:
        """Close every thread's (on shutdown)."""
        with self._lock:
            for item in self._all:
                _close_quietly(item)
            self._all.clear()
        self._local = threading.local()


def _close_quietly(item: Any) -> None:
    try:
        item.close()
    except Exception:  # already closed by the driver, or under another thread's feet at exit
        pass


def errors() -> tuple[type[BaseException], ...]:
    """The database errors either driver raises (psycopg's only when it has been imported:
    a SQLite project never loads it), with the two refusals of a value to bind (a lone
    surrogate, an int past 64 bits) that the drivers raise as Python errors."""
    import sys

    found: tuple[type[BaseException], ...] = (sqlite3.Error, StoreError, UnicodeEncodeError,
                                              OverflowError)
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        found += (psycopg.Error,)
    return found


def store_error(err: BaseException, conn: Any, doing: str = "cannot use",
                where: "str | Path | None" = None) -> StoreError:
    """A driver error as one ``StoreError`` line naming the database (``where``: the SQLite
    file as the caller names it; else the file the connection has open)."""
    if isinstance(err, StoreError):
        return err
    if is_postgres(conn):
        from newsletter.store import pg

        return pg.fail(err, conn.url, doing)
    from newsletter.store import db

    return db.store_error(err, where or db.database_file(conn))  # type: ignore[arg-type]


@contextmanager
def write(conn: Connection, *, exclusive: bool = True,
          where: "str | Path | None" = None) -> Iterator[Connection]:
    """One write transaction, committed at the end and rolled back on any exception.

    SQLite always takes the write lock at ``BEGIN`` (``BEGIN IMMEDIATE``), so a read-then-write
    is atomic across processes. On PostgreSQL rows lock themselves; ``exclusive=True`` also
    takes the ledger's advisory lock, for the operations that read and then decide (create a send,
    number an edition); claims (``FOR UPDATE SKIP LOCKED``) and records pass ``exclusive=False``
    and run side by side. ``where``: the SQLite file as error messages should name it.
    """
    if is_postgres(conn):
        psycopg = _psycopg()
        try:
            with conn.transaction():  # type: ignore[union-attr]
                if exclusive:
                    conn.execute("SELECT pg_advisory_xact_lock(?)", (LEDGER_LOCK,))
                yield conn
        except (psycopg.Error, UnicodeEncodeError) as err:
            raise store_error(err, conn, "cannot write to") from None
        return
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as err:
        raise store_error(err, conn, where=where) from None
    try:
        yield conn
    except _SQLITE_REFUSALS as err:  # disk full, I/O error, lock, a value: rolled back, one line
        _rollback(conn)
        raise store_error(err, conn, where=where) from None
    except BaseException:
        _rollback(conn)
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as err:
        _rollback(conn)
        raise store_error(err, conn, where=where) from None


# sqlite3 raises these two itself for a value it cannot bind (a lone surrogate, an int past
# 64 bits): the same refusals PostgreSQL's driver makes, mapped the same way
_SQLITE_REFUSALS = (sqlite3.Error, UnicodeEncodeError, OverflowError)


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:  # SQLite may have rolled back already (SQLITE_FULL does)
            pass


def _psycopg():
    import psycopg

    return psycopg


def clock(conn: Connection) -> float:
    """Now, in seconds since the epoch, by the database's clock: PostgreSQL's server time (the
    same for every host that shares the database, whatever their own clocks say); for SQLite,
    a file every process reads on this one machine, this machine's clock."""
    if is_postgres(conn):
        return float(conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])
    return time.time()


def connect_existing(config: "Config | str", *, migrate: bool = True) -> Connection | None:
    """``connect(config)``, except that a SQLite file that does not exist yet is not created:
    None then (for the checks and reports that must never make a database: `check`, `doctor`).
    A PostgreSQL database always exists once it is named; failing to reach it is a
    ``StoreError``."""
    from newsletter.store import database_url
    from newsletter.store.dburl import is_postgres as names_postgres

    url = database_url(config)
    if not names_postgres(url):
        from newsletter.store import db

        if not db.sqlite_path(url).is_file():
            return None
    return connect(url, migrate=migrate)
