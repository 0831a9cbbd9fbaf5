"""The SES event log and the queue messages kept aside (``events``, ``dead_letters``), on
either engine.

The SQL is written once, as SQLite SQL with ``?`` placeholders, and runs on PostgreSQL through
``pg.PgConnection``; what differs is a fragment here (how an address is compared without case)
and ``recording``: the transaction one event is recorded in.

Several processes may record at once (``events pull`` on two hosts, a pull and the web app). An
event is stored once whoever gets there first (``ON CONFLICT (message_id) DO NOTHING``: a
redelivered notification is a duplicate, never an error). On PostgreSQL ``recording`` also holds
a lock on the event's address (an advisory lock on its lower-cased form) for the whole
check-decide-insert, so two soft bounces of one reader recorded at the same moment count each
other, and a notification delivered twice at once is applied once. On SQLite (one machine) the
recorders queue on an exclusive ``flock`` of a lock file beside the database
(``<file>-events.lock``) for the same span; the event row itself is written in its own
``BEGIN IMMEDIATE`` (the effects go through the subscriber store's own connection to the same
file, so they cannot run inside a write transaction of this one).

``newsletter.feedback.record`` decides what an event does; this module only stores and reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

from newsletter.errors import StoreError
from newsletter.store.connection import Connection, errors, is_postgres, store_error, write

_EVENT_LOCK = 0x6E6C6576  # first key of the per-address advisory lock ("nlev")


class EventRow(NamedTuple):
    """One row of ``events`` as recorded (``received_at`` is set by ``insert``)."""

    message_id: str
    type: str
    subtype: str | None
    detail: str | None
    email: str | None
    provider_message_id: str | None  # links the event to its ledger row (``insert``)
    link: str | None
    effect: str | None
    occurred_at: str
    payload: str


class KeptAside(NamedTuple):
    message_id: str
    reason: str
    body: str
    received_at: str


def _email_is(conn: Connection) -> str:
    """``email`` equal to the parameter whatever the case, through each engine's index
    (SQLite: ``events_by_email`` is ``COLLATE NOCASE``; PostgreSQL: on ``lower(email)``)."""
    return "lower(email) = lower(?)" if is_postgres(conn) else "email = ? COLLATE NOCASE"


class EventLog:
    """The ``events`` and ``dead_letters`` tables of one database connection."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self._lock_file = None

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # -- events ----------------------------------------------------------------------------
    @contextmanager
    def recording(self, message_id: str, email: str | None) -> Iterator["EventLog"]:
        """The transaction one event is decided and stored in (see the module docstring)."""
        if not is_postgres(self.conn):
            with self._file_lock():
                yield self
            return
        with write(self.conn, exclusive=False):
            self.conn.execute("SELECT pg_advisory_xact_lock(?::integer, hashtext(?))",
                              (_EVENT_LOCK, (email or message_id).lower()))
            yield self

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        try:
            import fcntl
        except ImportError:  # not a POSIX system: no queueing (SQLite's own locks still hold)
            yield
            return
        if self._lock_file is None:
            from newsletter.store.db import database_file

            path = database_file(self.conn)  # type: ignore[arg-type]
            if not path or path == "the database":  # an in-memory database: one process
                yield
                return
            try:
                self._lock_file = open(f"{path}-events.lock", "a+b")  # noqa: SIM115 (kept open)
            except OSError as err:
                raise StoreError(f"cannot open the events lock file {path}-events.lock: "
                                 f"{err.strerror}") from None
        fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)

    def exists(self, message_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM events WHERE message_id = ?",
                                 (message_id,)).fetchone() is not None

    def soft_bounces(self, email: str, after: str, until: str) -> int:
        """Transient (not ``Permanent``) bounces of ``email`` in ``(after, until]``."""
        return self.conn.execute(
            "SELECT count(*) FROM events WHERE type = 'bounce' AND subtype != 'Permanent' "
            f"AND {_email_is(self.conn)} AND occurred_at > ? AND occurred_at <= ?",
            (email, after, until)).fetchone()[0]

    def insert(self, row: EventRow, received_at: str) -> bool:
        """Store ``row`` unless an event with its ``message_id`` is there; True when stored.

        The event is linked to the ledger row SES's message id names (the deliveries table has
        the same shape on both engines); of several (an id reused across sends), the one to the
        event's address. One statement: the lookup is part of the INSERT."""
        sql = ("INSERT INTO events (message_id, type, subtype, detail, email, delivery_id, "
               "provider_message_id, link, effect, occurred_at, received_at, payload) "
               "VALUES (?1, ?2, ?3, ?4, ?5, (SELECT d.id FROM deliveries d WHERE "
               "d.provider_message_id = ?6 ORDER BY CASE WHEN lower(d.email) = lower(?5) "
               "THEN 0 ELSE 1 END, d.id LIMIT 1), ?6, ?7, ?8, ?9, ?10, ?11) "
               "ON CONFLICT (message_id) DO NOTHING RETURNING id")
        args = (*row[:9], received_at, row.payload)
        if is_postgres(self.conn):  # inside ``recording``'s transaction, or one statement
            return self.conn.execute(sql, args).fetchone() is not None  # (atomic in autocommit)
        with write(self.conn, exclusive=False):
            return self.conn.execute(sql, args).fetchone() is not None

    # -- dead letters ----------------------------------------------------------------------
    def keep_aside(self, message_id: str, reason: str, body: str, received_at: str) -> bool:
        """Keep an unreadable queue message; False when it is kept already. A NUL or a lone
        surrogate in it (neither engine's text can hold both) is kept as its escape."""
        from newsletter import text

        message_id, reason, body = text.escape(message_id), text.escape(reason), text.escape(body)
        try:
            with write(self.conn, exclusive=False):
                return self.conn.execute(
                    "INSERT INTO dead_letters (message_id, reason, body, received_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (message_id) DO NOTHING RETURNING id",
                    (message_id, reason, body, received_at)).fetchone() is not None
        except errors() as err:
            raise store_error(err, self.conn, f"cannot keep message {message_id} aside in") from None

    def kept_aside(self) -> list[KeptAside]:
        """Every message kept aside, oldest first."""
        return [KeptAside(r["message_id"], r["reason"], r["body"], r["received_at"])
                for r in self.conn.execute(
                    "SELECT message_id, reason, body, received_at FROM dead_letters ORDER BY id")]

    def forget(self, message_id: str) -> None:
        """A kept-aside message is understood now (and recorded): it leaves ``dead_letters``."""
        with write(self.conn, exclusive=False):
            self.conn.execute("DELETE FROM dead_letters WHERE message_id = ?", (message_id,))
