"""The delivery ledger: which reader got which edition, in the subscriber database.

One ``sends`` row per edition, one ``deliveries`` row per (edition, reader), created in one
transaction when the send starts (the recipients are frozen then). A delivery moves
pending → sending → sent | failed (or skipped, when the reader left the list meanwhile).

Claims are atomic (``BEGIN IMMEDIATE``), so several processes can work on one send and no reader
is claimed twice. Each process registers in ``send_workers`` and keeps a heartbeat; a row left in
``sending`` by a process that died is *unknown* — the message may or may not have left — and is
sent again only when the user asks (``retry_unknown``).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from newsletter.config import Config
from newsletter.errors import StoreError, ValidationError
from newsletter.liveness import STALE_AFTER, process_key, worker_alive  # noqa: F401 (STALE_AFTER: re-exported)
from newsletter.store.db import database_file, store_error, utc_now
from newsletter.store.models import Recipient

_INSERT_BATCH = 2000


class DeliveryState(str, Enum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class SendRecord:
    id: int
    slug: str
    list_name: str
    list_id: int | None
    subject: str
    transport: str
    recipients: int
    created_at: str
    first_sent_at: str | None
    finished_at: str | None
    last_error: str | None


@dataclass(frozen=True)
class Progress:
    """Counts per state of one send; ``unknown`` of the ``sending`` ones belong to dead workers."""

    total: int
    counts: dict[str, int] = field(default_factory=dict)
    unknown: int = 0

    def count(self, state: DeliveryState | str) -> int:
        return self.counts.get(DeliveryState(state).value, 0)

    @property
    def sent(self) -> int:
        return self.count("sent")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def skipped(self) -> int:
        return self.count("skipped")

    @property
    def pending(self) -> int:
        return self.count("pending")

    @property
    def done(self) -> int:
        return sum(self.counts.get(s, 0) for s in ("sent", "failed", "skipped"))

    @property
    def in_flight(self) -> int:
        return self.counts.get("sending", 0) - self.unknown


@dataclass(frozen=True)
class Claim:
    """A delivery claimed by this process, with what is needed to make its message."""

    delivery_id: int
    recipient: Recipient


@dataclass(frozen=True)
class Outcome:
    delivery_id: int
    state: DeliveryState  # SENT, FAILED, or PENDING (released: not sent, someone may retry)
    provider_message_id: str | None = None
    error: str | None = None
    attempts: int = 0


class SentEdition(NamedTuple):
    slug: str
    subject: str
    sent_at: str  # when its first message left (ISO 8601 UTC)


def open_connection(config: Config) -> sqlite3.Connection:
    from newsletter.store import db

    return db.connect(db.sqlite_path(config.database_url))


class Ledger:
    """The ledger over one connection (use it from one thread)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self._first_sent: set[int] = set()  # sends whose first_sent_at this ledger has set

    @classmethod
    def open(cls, config: Config) -> "Ledger":
        return cls(open_connection(config))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sends ---------------------------------------------------------------------------------
    def find_send(self, slug: str) -> SendRecord | None:
        row = self.conn.execute("SELECT * FROM sends WHERE slug = ?", (slug,)).fetchone()
        return _send_record(row) if row else None

    def sends(self) -> list[SendRecord]:
        rows = self.conn.execute("SELECT * FROM sends ORDER BY created_at DESC, id DESC").fetchall()
        return [_send_record(r) for r in rows]

    def create_send(self, *, slug: str, subject: str, list_name: str, list_id: int | None,
                    transport: str, recipients: Iterable[Recipient]) -> SendRecord:
        """Record the send and freeze its recipients, all in one transaction (streamed)."""
        stamp = utc_now()
        with self._write():
            try:
                cur = self.conn.execute(
                    "INSERT INTO sends (slug, list_name, list_id, subject, transport, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)", (slug, list_name, list_id, subject, transport, stamp))
            except sqlite3.IntegrityError:
                raise ValidationError(f"edition {slug!r} already has a send (see `newsletter sends show {slug}`)") from None
            send_id = cur.lastrowid
            batch: list[tuple] = []
            for r in recipients:
                batch.append((send_id, r.subscriber_id, r.email, stamp))
                if len(batch) >= _INSERT_BATCH:
                    self._insert_deliveries(batch)
                    batch = []
            self._insert_deliveries(batch)
            count = self.conn.execute("SELECT COUNT(*) FROM deliveries WHERE send_id = ?", (send_id,)).fetchone()[0]
            self.conn.execute("UPDATE sends SET recipients = ? WHERE id = ?", (count, send_id))
        return self.find_send(slug)  # type: ignore[return-value]

    def _insert_deliveries(self, batch: list[tuple]) -> None:
        if batch:
            self.conn.executemany(
                "INSERT OR IGNORE INTO deliveries (send_id, subscriber_id, email, state, updated_at) "
                "VALUES (?, ?, ?, 'pending', ?)", batch)

    def set_last_error(self, send_id: int, error: str | None) -> None:
        with self._write():
            self.conn.execute("UPDATE sends SET last_error = ? WHERE id = ?", (error, send_id))

    def finish_if_done(self, send_id: int) -> bool:
        """Mark the send finished when nothing is pending or in flight; return whether it is."""
        with self._write():
            left = self.conn.execute(
                "SELECT COUNT(*) FROM deliveries WHERE send_id = ? AND state IN ('pending', 'sending')",
                (send_id,)).fetchone()[0]
            if left == 0:
                self.conn.execute("UPDATE sends SET finished_at = COALESCE(finished_at, ?), last_error = NULL "
                                  "WHERE id = ?", (utc_now(), send_id))
        return left == 0

    # -- workers ---------------------------------------------------------------------------------
    def register_worker(self, send_id: int) -> str:
        host, pid = socket.gethostname(), os.getpid()
        worker = f"{host}:{pid}:{secrets.token_hex(4)}"
        with self._write():
            self.conn.execute("INSERT INTO send_workers (id, send_id, host, pid, started_at, heartbeat_at, "
                              "process_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
                              (worker, send_id, host, pid, utc_now(), time.time(), process_key(pid)))
        return worker

    def heartbeat(self, worker: str) -> None:
        with self._write():
            self.conn.execute("UPDATE send_workers SET heartbeat_at = ? WHERE id = ?", (time.time(), worker))

    def stop_worker(self, worker: str) -> None:
        with self._write():
            self.conn.execute("UPDATE send_workers SET stopped_at = ? WHERE id = ?", (utc_now(), worker))

    def _dead_workers(self, send_id: int) -> list[str]:
        holders = [r[0] for r in self.conn.execute(
            "SELECT DISTINCT claimed_by FROM deliveries WHERE send_id = ? AND state = 'sending'", (send_id,))]
        return [h for h in holders if not self._alive(h)]

    def _alive(self, worker: str | None) -> bool:
        if worker is None:
            return False
        row = self.conn.execute("SELECT host, pid, heartbeat_at, stopped_at, process_key FROM send_workers "
                                "WHERE id = ?", (worker,)).fetchone()
        if row is None or row["stopped_at"] is not None:
            return False
        return worker_alive(row["host"], row["pid"], row["process_key"], row["heartbeat_at"])

    def unknown(self, send_id: int) -> int:
        """Rows left in ``sending`` by processes that are gone."""
        dead = self._dead_workers(send_id)
        if not dead:
            return 0
        marks = ",".join("?" * len(dead))
        return self.conn.execute(
            f"SELECT COUNT(*) FROM deliveries WHERE send_id = ? AND state = 'sending' AND "
            f"(claimed_by IN ({marks}) OR claimed_by IS NULL)", (send_id, *dead)).fetchone()[0]

    def retry_unknown(self, send_id: int) -> int:
        """Put the unknown rows back to pending; return how many."""
        dead = self._dead_workers(send_id)
        if not dead:
            return 0
        marks = ",".join("?" * len(dead))
        with self._write():
            cur = self.conn.execute(
                f"UPDATE deliveries SET state = 'pending', claimed_by = NULL, claimed_at = NULL, "
                f"updated_at = ? WHERE send_id = ? AND state = 'sending' AND "
                f"(claimed_by IN ({marks}) OR claimed_by IS NULL)", (utc_now(), send_id, *dead))
            return cur.rowcount

    # -- deliveries ------------------------------------------------------------------------------
    def claim(self, send: SendRecord, worker: str, limit: int) -> tuple[list[Claim], int]:
        """Atomically take up to ``limit`` pending deliveries for this worker: ``(claims, skipped)``.

        Only readers still active on the list are handed out. When fewer than ``limit`` are
        left, the pending readers who left the list, were unsubscribed, bounced, complained or
        erased since the send started are marked skipped (and counted).
        """
        stamp = utc_now()
        with self._write():
            rows = self.conn.execute(_CLAIM, {"worker": worker, "stamp": stamp, "send": send.id,
                                              "list": send.list_id, "limit": limit}).fetchall()
            skipped = self._skip_departed(send, stamp) if len(rows) < limit else 0
        rows.sort(key=lambda r: r[0])
        people = {r[0]: r for r in self.conn.execute(
            "SELECT id, name, attributes FROM subscribers WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps([r[1] for r in rows]),))}
        claims = []
        for delivery_id, subscriber_id, address in rows:
            _, name, attributes = people.get(subscriber_id, (subscriber_id, "", "{}"))
            claims.append(Claim(delivery_id, Recipient(subscriber_id, address, name or "", json.loads(attributes or "{}"))))
        return claims, skipped

    def _skip_departed(self, send: SendRecord, stamp: str) -> int:
        """Mark skipped the pending rows whose reader is no longer sendable (one statement)."""
        cur = self.conn.execute(
            "UPDATE deliveries SET state = 'skipped', updated_at = :stamp, last_error = CASE "
            "WHEN subscriber_id IS NULL OR email IS NULL THEN 'subscriber erased since the send started' "
            "WHEN (SELECT status FROM subscribers s WHERE s.id = subscriber_id) IS NULL "
            "THEN 'subscriber deleted since the send started' "
            "WHEN (SELECT status FROM subscribers s WHERE s.id = subscriber_id) != 'active' "
            "THEN 'subscriber ' || (SELECT status FROM subscribers s WHERE s.id = subscriber_id) || ' since the send started' "
            "ELSE 'left the list since the send started' END "
            f"WHERE send_id = :send AND state = 'pending' AND NOT ({_SENDABLE})",
            {"stamp": stamp, "send": send.id, "list": send.list_id})
        return cur.rowcount

    def record(self, send_id: int, worker: str, outcomes: Iterable[Outcome]) -> None:
        """Write what happened to claimed deliveries: one statement, one transaction."""
        stamp = utc_now()
        rows = [[o.delivery_id, o.state.value, o.provider_message_id, o.error, o.attempts] for o in outcomes]
        if not rows:
            return
        any_sent = any(r[1] == "sent" for r in rows)
        with self._write():
            self.conn.execute(_RECORD, {"rows": json.dumps(rows), "stamp": stamp, "worker": worker})
            if any_sent and send_id not in self._first_sent:
                self.conn.execute("UPDATE sends SET first_sent_at = COALESCE(first_sent_at, ?) WHERE id = ?",
                                  (stamp, send_id))
                self._first_sent.add(send_id)

    def progress(self, send_id: int) -> Progress:
        counts = {r[0]: r[1] for r in self.conn.execute(
            "SELECT state, COUNT(*) FROM deliveries WHERE send_id = ? GROUP BY state", (send_id,))}
        return Progress(total=sum(counts.values()), counts=counts, unknown=self.unknown(send_id))

    def deliveries(self, send_id: int, *, states: Iterable[str] = (), limit: int = 50) -> list[sqlite3.Row]:
        wanted = list(states)
        where = f" AND state IN ({','.join('?' * len(wanted))})" if wanted else ""
        return self.conn.execute(
            f"SELECT id, subscriber_id, email, state, provider_message_id, attempts, last_error, sent_at, "
            f"updated_at FROM deliveries WHERE send_id = ?{where} ORDER BY id LIMIT ?",
            (send_id, *wanted, limit)).fetchall()

    # -- plumbing ----------------------------------------------------------------------------------
    def _write(self) -> "_Transaction":
        return _Transaction(self.conn)


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (rollback on error): takes the write lock up front, so
    a read-then-update (a claim) is atomic across processes."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            raise store_error(err, database_file(self.conn)) from None

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
                return
            except sqlite3.Error as err:
                exc_type, exc = type(err), err
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:  # SQLite may have rolled back already (SQLITE_FULL does)
                pass
        if isinstance(exc, sqlite3.Error):  # disk full, I/O error, lock: one line, nothing written
            raise store_error(exc, database_file(self.conn)) from None


# A pending delivery may go out only while its reader is active and still on the list.
_SENDABLE = (
    "subscriber_id IS NOT NULL AND email IS NOT NULL "
    "AND EXISTS (SELECT 1 FROM subscribers s WHERE s.id = deliveries.subscriber_id AND s.status = 'active') "
    "AND (:list IS NULL OR EXISTS (SELECT 1 FROM memberships m WHERE m.subscriber_id = deliveries.subscriber_id "
    "AND m.list_id = :list AND m.status = 'active'))"
)
_CLAIM = (
    "UPDATE deliveries SET state = 'sending', claimed_by = :worker, claimed_at = :stamp, updated_at = :stamp "
    "WHERE id IN (SELECT id FROM deliveries WHERE send_id = :send AND state = 'pending' AND "
    f"{_SENDABLE} ORDER BY id LIMIT :limit) RETURNING id, subscriber_id, email"
)
# rows: JSON [[delivery_id, state, provider_message_id, error, attempts], ...]
_RECORD = (
    "UPDATE deliveries SET state = j.value ->> 1, "
    "provider_message_id = COALESCE(j.value ->> 2, deliveries.provider_message_id), "
    "last_error = j.value ->> 3, attempts = deliveries.attempts + (j.value ->> 4), "
    "sent_at = CASE WHEN j.value ->> 1 = 'sent' THEN :stamp ELSE deliveries.sent_at END, updated_at = :stamp "
    "FROM json_each(:rows) AS j "
    "WHERE deliveries.id = j.value ->> 0 AND deliveries.claimed_by = :worker AND deliveries.state = 'sending'"
)


def _send_record(row: sqlite3.Row) -> SendRecord:
    return SendRecord(id=row["id"], slug=row["slug"], list_name=row["list_name"], list_id=row["list_id"],
                      subject=row["subject"], transport=row["transport"], recipients=row["recipients"],
                      created_at=row["created_at"], first_sent_at=row["first_sent_at"],
                      finished_at=row["finished_at"], last_error=row["last_error"])


def sent_editions(conn_or_config: sqlite3.Connection | Config) -> list[SentEdition]:
    """Editions at least one reader was sent, newest first: (slug, subject, first sent time)."""
    own = not isinstance(conn_or_config, sqlite3.Connection)
    conn = open_connection(conn_or_config) if own else conn_or_config  # type: ignore[arg-type]
    try:
        rows = conn.execute("SELECT slug, subject, first_sent_at FROM sends WHERE first_sent_at IS NOT NULL "
                            "ORDER BY first_sent_at DESC, id DESC").fetchall()
    except sqlite3.Error as err:
        raise StoreError(f"cannot read the delivery ledger: {err}") from None
    finally:
        if own:
            conn.close()
    return [SentEdition(r[0], r[1], r[2]) for r in rows]
