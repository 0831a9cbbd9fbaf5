"""The delivery ledger: which reader got which edition, in the subscriber database.

One ``editions`` row per edition ever sent (its identity: source file, slug, date instant; and
its number, assigned at the first send and never moved). Each edition has one or more ``sends``
(one per audience: lists, excluded lists, conditions), each with the ``snapshot`` it sends (the
rendered content, frozen when it starts; see ``newsletter.send.snapshot``) and one ``deliveries`` row
per reader, created in one transaction when the send starts (the recipients are frozen then;
readers an earlier send of the edition reached are left out and counted, unless ``again``). A
delivery moves pending → sending → sent | failed (or skipped, when the reader left meanwhile).

The same code runs on both engines (``newsletter.store.connection``): the SQL is written once
with ``?N`` placeholders, and the few places where SQLite and PostgreSQL differ are fragments of
``_Dialect`` (lists of ids: a JSON array through ``json_each`` or a ``bigint[]``; the claim's
row locking). Claims are atomic, so several processes — on PostgreSQL, on several machines — work
on one send and no reader is claimed twice: on SQLite the claim holds the file's write lock
(``BEGIN IMMEDIATE``); on PostgreSQL it takes its rows with ``SELECT … FOR UPDATE SKIP LOCKED``
in a short transaction, so claimers never wait for each other. Each process registers in
``send_workers`` and keeps a heartbeat, written and judged by the database's clock (the same for
every host); a row left in ``sending`` by a process that died is *unknown* — the message may or
may not have left — and is sent again only when the user asks (``retry_unknown``).
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from newsletter.config import Config
from newsletter.errors import StoreError, ValidationError
from newsletter.send.liveness import STALE_AFTER, process_key, worker_alive  # noqa: F401 (STALE_AFTER: re-exported)
from newsletter.send.snapshot import Snapshot
from newsletter.store import connection
from newsletter.store.base import AudienceSelect
from newsletter.store.connection import Connection
from newsletter.store.db import utc_now
from newsletter.store.models import Recipient, uid_hex

_REACHED = "already received this edition in an earlier send"
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
    edition_id: int | None = None
    seq: int = 1
    snapshot_id: int | None = None
    audience: str = "{}"  # JSON, see newsletter.audience.segments.Audience.as_json
    audience_key: str = ""
    skipped_earlier: int = 0  # readers left out: an earlier send of the edition reached them

    @property
    def ref(self) -> str:
        """How commands name it: ``SLUG`` for an edition's first send, ``SLUG#2`` for the next."""
        return self.slug if self.seq == 1 else f"{self.slug}#{self.seq}"

    @property
    def list_ids(self) -> list[int]:
        ids = json.loads(self.audience or "{}").get("list_ids")
        if ids is None:
            return [self.list_id] if self.list_id is not None else []
        return [int(i) for i in ids]


@dataclass(frozen=True)
class EditionRecord:
    """An edition that has been sent (or started): its identity and stable number."""

    id: int
    slug: str
    number: int | None
    source_path: str
    date_utc: str
    created_at: str


class SentSnapshot(NamedTuple):
    """What an edition that went out said, for "already covered" checks and the archive list."""

    slug: str
    number: int | None
    title: str
    subject: str
    date: str  # the edition's date as written
    sent_at: str  # when its first message left (ISO 8601 UTC)
    items: list[dict]  # {"number", "title", "url"}
    snapshot_id: int = 0


class SendExists(ValidationError):
    """An unfinished send to the same audience exists (another process just started it)."""

    def __init__(self, message: str, existing: "SendRecord"):
        super().__init__(message)
        self.existing = existing


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


def open_connection(config: Config) -> Connection:
    """The project's database (either engine), opened and migrated."""
    return connection.connect(config)


class _Dialect:
    """The SQL that differs between the engines (SQLite's here; ``_PgDialect`` below)."""

    def ids(self, ids: list[int]):
        """A list of ids as one parameter (SQLite: JSON text read with ``json_each``)."""
        return json.dumps([int(i) for i in ids])

    def in_ids(self, n: int) -> str:
        """``IN`` the list of ids that is parameter ``?n``."""
        return f"IN (SELECT value FROM json_each(?{n}))"


    rows = "json_each(?1) AS j"  # the outcome rows of a record (JSON array of arrays)
    lock_claimed = ""  # the claim's sub-select: SQLite holds the whole file's write lock already
    claim_order = "id"  # the (send_id, state) index has the rowids in order
    probe = ""  # the sendable checks' sub-selects (see ``_PgDialect.probe``)
    not_ascii = "email GLOB '*[^ -~]*'"

    def rows_param(self, rows: list[list]):
        return json.dumps(rows)


class _PgDialect(_Dialect):
    def ids(self, ids: list[int]):
        return [int(i) for i in ids]  # sent as an array, cast to bigint[] in the SQL

    def in_ids(self, n: int) -> str:
        return f"= ANY (?{n}::bigint[])"


    rows = "jsonb_array_elements(?1::jsonb) AS j(value)"
    # claimers skip each other's rows instead of waiting (each takes the next free ones)
    lock_claimed = " FOR UPDATE SKIP LOCKED"
    # id order, as only the partial index of pending rows has it (pg_migrations/013: the
    # primary key's order would walk past the rows already sent when statistics are stale)
    claim_order = "(id + 0)"
    # OFFSET 0 keeps each sendable check a probe of its index per claimed row: without it the
    # planner may turn EXISTS into a join, and with stale statistics (a list just imported,
    # estimated at 2 members) it chose to materialise the list's memberships and rescan them
    # for every pending row: claims slowed from 0.3 ms to 230 ms as the send went on.
    probe = " OFFSET 0"
    not_ascii = "email ~ '[^ -~]'"


_SQLITE, _PG = _Dialect(), _PgDialect()


class Ledger:
    """The ledger over one connection of either engine (use it from one thread)."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.pg = connection.is_postgres(conn)
        self.sql = _PG if self.pg else _SQLITE
        self._first_sent: set[int] = set()  # sends whose first_sent_at this ledger has set

    @classmethod
    def open(cls, config: Config) -> "Ledger":
        ledger = cls(open_connection(config))
        try:
            ledger.reconstruct_snapshots(config)
        except BaseException:
            ledger.close()
            raise
        return ledger

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- editions ------------------------------------------------------------------------------
    def edition(self, slug: str) -> EditionRecord | None:
        if _never_stored(slug):
            return None
        row = self.conn.execute("SELECT * FROM editions WHERE slug = ?", (slug,)).fetchone()
        return _edition_record(row) if row else None

    def edition_by_id(self, edition_id: int) -> EditionRecord | None:
        row = self.conn.execute("SELECT * FROM editions WHERE id = ?", (edition_id,)).fetchone()
        return _edition_record(row) if row else None

    def match_edition(self, source_path: str, slug: str, date_utc: str) -> EditionRecord | None:
        """The edition a source file is: the one sent from the same file with the same slug or
        the same date instant (so a changed slug, or the date written in another offset, is the
        same edition changed), else the one with that slug and date instant (a moved file).

        The same slug with another date from another file is an error: slugs name archive pages.
        """
        rows = self.conn.execute(
            "SELECT * FROM editions WHERE source_path = ? AND (slug = ? OR date_utc = ?) ORDER BY id DESC",
            (source_path, slug, date_utc)).fetchall()
        if rows:
            return _edition_record(rows[0])
        found = self.edition(slug)
        if found is None:
            return None
        if found.date_utc in (date_utc, ""):
            return found
        raise ValidationError(f"slug {slug!r} is already edition {found.number or '?'} (sent from "
                              f"{found.source_path or 'an earlier file'}, dated {found.date_utc}): "
                              "give this edition its own `slug:`")

    def edition_from(self, source_path: str) -> EditionRecord | None:
        """The latest edition sent from this file (none from a path that is not UTF-8 text: the
        ledger never records one)."""
        if _never_stored(source_path):
            return None
        row = self.conn.execute("SELECT * FROM editions WHERE source_path = ? ORDER BY id DESC LIMIT 1",
                                (source_path,)).fetchone()
        return _edition_record(row) if row else None

    def next_number(self) -> int:
        return (self.conn.execute("SELECT MAX(number) FROM editions").fetchone()[0] or 0) + 1

    def number_owner(self, number: int) -> EditionRecord | None:
        row = self.conn.execute("SELECT * FROM editions WHERE number = ?", (number,)).fetchone()
        return _edition_record(row) if row else None

    def snapshot(self, snapshot_id: int) -> Snapshot | None:
        row = self.conn.execute("SELECT * FROM snapshots WHERE id = ?", (snapshot_id,)).fetchone()
        return _snapshot(row) if row else None

    def latest_snapshot(self, edition_id: int) -> Snapshot | None:
        """The snapshot of the edition's latest send."""
        row = self.conn.execute(
            "SELECT n.* FROM sends s JOIN snapshots n ON n.id = s.snapshot_id WHERE s.edition_id = ? "
            "ORDER BY s.seq DESC LIMIT 1", (edition_id,)).fetchone()
        return _snapshot(row) if row else None

    # -- sends ---------------------------------------------------------------------------------
    def find_send(self, ref: str) -> SendRecord | None:
        """``SLUG#N``: that send of the edition; ``SLUG``: its latest send."""
        slug, _, seq = ref.partition("#")
        if seq:
            if not seq.isdigit():
                raise ValidationError(f"{ref!r}: expected SLUG or SLUG#N (N a send number, e.g. {slug}#2)")
            if _never_stored(slug, int(seq)):
                return None
            row = self.conn.execute("SELECT * FROM sends WHERE slug = ? AND seq = ?", (slug, int(seq))).fetchone()
        else:
            if _never_stored(slug):
                return None
            row = self.conn.execute("SELECT * FROM sends WHERE slug = ? ORDER BY seq DESC LIMIT 1", (slug,)).fetchone()
        return _send_record(row) if row else None

    def send_by_id(self, send_id: int) -> SendRecord | None:
        row = self.conn.execute("SELECT * FROM sends WHERE id = ?", (send_id,)).fetchone()
        return _send_record(row) if row else None

    def sends(self) -> list[SendRecord]:
        rows = self.conn.execute("SELECT * FROM sends ORDER BY created_at DESC, id DESC").fetchall()
        return [_send_record(r) for r in rows]

    def edition_sends(self, edition_id: int) -> list[SendRecord]:
        rows = self.conn.execute("SELECT * FROM sends WHERE edition_id = ? ORDER BY seq", (edition_id,)).fetchall()
        return [_send_record(r) for r in rows]

    def open_send(self, edition_id: int, audience_key: str) -> SendRecord | None:
        """The edition's unfinished send to this audience (what the same command resumes)."""
        row = self.conn.execute(
            "SELECT * FROM sends WHERE edition_id = ? AND audience_key = ? AND finished_at IS NULL "
            "ORDER BY seq DESC LIMIT 1", (edition_id, audience_key)).fetchone()
        return _send_record(row) if row else None

    def earlier_recipients(self, edition_id: int, *, exclude_send: int | None = None) -> set[int]:
        """Readers an earlier send of the edition reached or holds (sent, in flight or pending)."""
        other = "" if exclude_send is None else " AND s.id != ?"
        args = (edition_id,) if exclude_send is None else (edition_id, exclude_send)
        return {r[0] for r in self.conn.execute(
            "SELECT d.subscriber_id FROM sends s JOIN deliveries d ON d.send_id = s.id "
            f"WHERE s.edition_id = ?{other} AND d.subscriber_id IS NOT NULL "
            "AND d.state IN ('sent', 'sending', 'pending')", args)}

    def create_send(self, *, slug: str, subject: str, list_name: str, list_id: int | None,
                    transport: str, recipients: Iterable[Recipient] | AudienceSelect,
                    snapshot: Snapshot | None = None,
                    date_utc: str = "", audience: str | None = None, audience_key: str | None = None,
                    again: bool = False) -> SendRecord:
        """Record the send (its edition the first time, with its number; its snapshot) and freeze
        its recipients, all in one transaction (streamed). Readers an earlier send of the edition
        reached are recorded as skipped (and counted) unless ``again``. ``recipients`` is a stream of
        readers, or an ``AudienceSelect`` on this database (frozen by one INSERT … SELECT)."""
        from newsletter.audience.segments import Audience

        stamp = utc_now()
        if audience_key is None:
            audience_key = Audience((list_name,)).key
            audience = json.dumps({"lists": [list_name], "list_ids": [list_id] if list_id is not None else [],
                                   "exclude": [], "where": [], "again": again})
        with self._write():
            edition = self._edition_for_send(slug, snapshot, date_utc, stamp)
            row = self.conn.execute("SELECT * FROM sends WHERE edition_id = ? AND audience_key = ? AND "
                                    "finished_at IS NULL", (edition.id, audience_key)).fetchone()
            if row is not None:
                existing = _send_record(row)
                raise SendExists(f"edition {slug!r} already has an unfinished send to this audience "
                                 f"({existing.ref}; see `newsletter sends show {existing.ref}`)", existing)
            snapshot_id = self._store_snapshot(edition.id, snapshot, stamp) if snapshot is not None else None
            seq = self.conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM sends WHERE edition_id = ?",
                                    (edition.id,)).fetchone()[0]
            send_id = self.conn.execute(
                "INSERT INTO sends (edition_id, seq, snapshot_id, slug, list_name, list_id, audience, audience_key, "
                "subject, transport, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (edition.id, seq, snapshot_id, edition.slug, list_name, list_id, audience or "{}", audience_key,
                 snapshot.subject if snapshot is not None else subject, transport, stamp)).fetchone()[0]
            if isinstance(recipients, AudienceSelect):
                left_out = self._freeze_select(send_id, edition.id, recipients, again, stamp)
            else:
                left_out = self._freeze_stream(send_id, edition.id, recipients, list_id, again, stamp)
            count = self.conn.execute("SELECT COUNT(*) FROM deliveries WHERE send_id = ?", (send_id,)).fetchone()[0]
            self.conn.execute("UPDATE sends SET recipients = ?, skipped_earlier = ? WHERE id = ?",
                              (count, left_out, send_id))
        return self.send_by_id(send_id)  # type: ignore[return-value]

    def _freeze_stream(self, send_id: int, edition_id: int, recipients: Iterable[Recipient], list_id: int | None,
                       again: bool, stamp: str) -> int:
        earlier = set() if again else self.earlier_recipients(edition_id, exclude_send=send_id)
        batch: list[tuple] = []
        left_out = 0
        for r in recipients:
            state, note = ("skipped", _REACHED) if r.subscriber_id in earlier else ("pending", None)
            left_out += state == "skipped"
            batch.append((send_id, r.subscriber_id, r.email, r.list_id or list_id, state, note, stamp))
            if len(batch) >= _INSERT_BATCH:
                self._insert_deliveries(batch)
                batch = []
        self._insert_deliveries(batch)
        return left_out

    def _freeze_select(self, send_id: int, edition_id: int, audience: AudienceSelect, again: bool,
                       stamp: str) -> int:
        """The audience's readers into ``deliveries`` in one statement (id order); those an
        earlier send of the edition reached go in as ``skipped`` (a second statement). Return
        how many were skipped so."""
        from newsletter.store.sqlite import envelope_address

        reached = ("SELECT d.subscriber_id FROM sends p JOIN deliveries d ON d.send_id = p.id "
                   "WHERE p.edition_id = ? AND p.id != ? AND d.subscriber_id IS NOT NULL "
                   "AND d.state IN ('sent', 'sending', 'pending')")
        earlier = not again and self.conn.execute("SELECT 1 FROM sends WHERE edition_id = ? AND id != ? LIMIT 1",
                                                  (edition_id, send_id)).fetchone() is not None
        # (WHERE true: SQLite's grammar needs it before an upsert clause on INSERT … SELECT)
        insert = ("INSERT INTO deliveries (send_id, subscriber_id, email, list_id, state, last_error, "
                  "updated_at) SELECT ?, a.*, ?, ?, ? FROM ({sql} ORDER BY s.id) a WHERE true "
                  "ON CONFLICT DO NOTHING")
        if not earlier:
            self.conn.execute(insert.format(sql=audience.sql), [send_id, "pending", None, stamp, *audience.args])
            left_out = 0
        else:
            self.conn.execute(insert.format(sql=f"{audience.sql} AND s.id NOT IN ({reached})"),
                              [send_id, "pending", None, stamp, *audience.args, edition_id, send_id])
            left_out = self.conn.execute(insert.format(sql=f"{audience.sql} AND s.id IN ({reached})"),
                                         [send_id, "skipped", _REACHED, stamp, *audience.args, edition_id,
                                          send_id]).rowcount
        # An internationalised domain goes on the envelope in its ASCII (IDNA) form.
        for delivery_id, address in self.conn.execute(
                f"SELECT id, email FROM deliveries WHERE send_id = ? AND {self.sql.not_ascii}", (send_id,)).fetchall():
            self.conn.execute("UPDATE deliveries SET email = ? WHERE id = ?", (envelope_address(address), delivery_id))
        return left_out

    def count_unreached(self, audience: AudienceSelect, edition_id: int) -> int:
        """How many of the audience no send of the edition has reached or holds yet."""
        return self.conn.execute(
            f"SELECT COUNT(*) FROM ({audience.sql} AND s.id NOT IN (SELECT d.subscriber_id FROM sends p "
            "JOIN deliveries d ON d.send_id = p.id WHERE p.edition_id = ? AND d.subscriber_id IS NOT NULL "
            "AND d.state IN ('sent', 'sending', 'pending'))) AS unreached", [*audience.args, edition_id]).fetchone()[0]

    def _edition_for_send(self, slug: str, snapshot: Snapshot | None, date_utc: str, stamp: str) -> EditionRecord:
        found = self.edition(slug)
        number = snapshot.number if snapshot is not None else None
        if found is not None:
            if found.number is None and number is not None and self.number_owner(number) is None:
                self.conn.execute("UPDATE editions SET number = ? WHERE id = ?", (number, found.id))
                return self.edition_by_id(found.id)  # type: ignore[return-value]
            return found
        if number is not None:
            owner = self.number_owner(number)
            if owner is not None:
                raise ValidationError(f"number {number} is already edition {owner.slug!r}'s "
                                      f"(remove `number:` to get {self.next_number()})")
        new_id = self.conn.execute(
            "INSERT INTO editions (slug, number, source_path, date_utc, created_at) VALUES (?, ?, ?, ?, ?) "
            "RETURNING id", (slug, number, snapshot.source_path if snapshot is not None else "", date_utc,
                             stamp)).fetchone()[0]
        return self.edition_by_id(new_id)  # type: ignore[return-value]

    def _store_snapshot(self, edition_id: int, snap: Snapshot, stamp: str) -> int:
        """The snapshot's row (one per distinct content of an edition)."""
        row = self.conn.execute("SELECT id FROM snapshots WHERE edition_id = ? AND content_hash = ?",
                                (edition_id, snap.content_hash)).fetchone()
        if row is not None:
            return row[0]
        return self.conn.execute(
            "INSERT INTO snapshots (edition_id, content_hash, source_hash, slug, number, title, subject, preheader, "
            "date, lang, categories, items, html, text, web_url, source_path, essay_path, reconstructed, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (edition_id, snap.content_hash, snap.source_hash, snap.slug, snap.number, snap.title, snap.subject,
             snap.preheader, snap.date, snap.lang, json.dumps(list(snap.categories), ensure_ascii=False),
             snap.items_json, snap.html, snap.text, snap.web_url, snap.source_path, snap.essay_path,
             int(snap.reconstructed), stamp)).fetchone()[0]

    def attach_snapshot(self, send: SendRecord, snap: Snapshot) -> SendRecord:
        """Give an old send that has none (its file was missing at the upgrade) a snapshot."""
        with self._write():
            snapshot_id = self._store_snapshot(send.edition_id, snap, utc_now())  # type: ignore[arg-type]
            self.conn.execute("UPDATE sends SET snapshot_id = ?, subject = ? WHERE id = ? AND snapshot_id IS NULL",
                              (snapshot_id, snap.subject, send.id))
            self.conn.execute("UPDATE editions SET number = COALESCE(number, ?), source_path = CASE "
                              "WHEN source_path = '' THEN ? ELSE source_path END, reconstruct = 'done' WHERE id = ?",
                              (snap.number, snap.source_path, send.edition_id))
        return self.send_by_id(send.id)  # type: ignore[return-value]

    # -- sends from before snapshots ------------------------------------------------------------
    def reconstruct_snapshots(self, config: Config) -> int:
        """Rebuild the snapshot of each send made before snapshots existed, from its source file
        when there is one (marked reconstructed); return how many were rebuilt. Their editions
        get the number they showed then (``number:``, else the file's place in its folder)."""
        pending = self.conn.execute(
            "SELECT e.* FROM editions e WHERE e.reconstruct = 'pending' ORDER BY "
            "(SELECT MIN(COALESCE(s.first_sent_at, s.created_at)) FROM sends s WHERE s.edition_id = e.id), e.id"
        ).fetchall()
        done = 0
        for row in pending:
            done += self._reconstruct(config, _edition_record(row))
        return done

    def _reconstruct(self, config: Config, edition: EditionRecord) -> int:
        from dataclasses import replace

        from newsletter.edition.parse import folder_position
        from newsletter.edition.source import find_source, load_edition
        from newsletter.errors import NewsletterError
        from newsletter.render.html import render_edition
        from newsletter.send.snapshot import date_instant, make_snapshot

        path = find_source(config, edition.slug)
        snap = None
        if path is not None:
            try:
                parsed = load_edition(path, config=config)
                number = parsed.number or folder_position(path)
                if number is None or self.number_owner(number) is not None:
                    number = self.next_number()
                parsed = replace(parsed, slug=edition.slug, number=number)
                snap = make_snapshot(parsed, render_edition(parsed, config), reconstructed=True)
                date_utc = date_instant(parsed)
            except NewsletterError:
                snap = None
        with self._write():
            state = self.conn.execute("SELECT reconstruct FROM editions WHERE id = ?", (edition.id,)).fetchone()
            if state is None or state[0] != "pending":  # another process did it meanwhile
                return 0
            if snap is None:
                self.conn.execute("UPDATE editions SET reconstruct = 'missing' WHERE id = ?", (edition.id,))
                return 0
            if self.number_owner(snap.number) is not None:  # type: ignore[arg-type]
                return 0  # taken meanwhile by another process: rendered again at the next open
            snapshot_id = self._store_snapshot(edition.id, snap, utc_now())
            self.conn.execute("UPDATE editions SET number = ?, source_path = ?, date_utc = ?, reconstruct = 'done' "
                              "WHERE id = ?", (snap.number, snap.source_path, date_utc, edition.id))
            self.conn.execute("UPDATE sends SET snapshot_id = ? WHERE edition_id = ? AND snapshot_id IS NULL",
                              (snapshot_id, edition.id))
        return 1

    def _insert_deliveries(self, batch: list[tuple]) -> None:
        if batch:
            self.conn.executemany(
                "INSERT INTO deliveries (send_id, subscriber_id, email, list_id, state, last_error, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", batch)

    def set_last_error(self, send_id: int, error: str | None) -> None:
        error = None if error is None else _storable(error)
        with self._write(exclusive=False):
            self.conn.execute("UPDATE sends SET last_error = ? WHERE id = ?", (error, send_id))

    def finish_if_done(self, send_id: int) -> bool:
        """Mark the send finished when nothing is pending or in flight; return whether it is."""
        with self._write(exclusive=False):
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
        with self._write(exclusive=False):
            self.conn.execute("INSERT INTO send_workers (id, send_id, host, pid, started_at, heartbeat_at, "
                              "process_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
                              (worker, send_id, host, pid, utc_now(), self.clock(), process_key(pid)))
        return worker

    def clock(self) -> float:
        """Now by the database's clock (seconds since the epoch): heartbeats are written and
        judged by it, so workers on hosts whose clocks differ still agree on who is alive."""
        return connection.clock(self.conn)

    def heartbeat(self, worker: str, at: float | None = None) -> None:
        """Say this worker is alive; ``at``: when it last looked at the other workers (pacing),
        by ``clock()``."""
        with self._write(exclusive=False):
            self.conn.execute("UPDATE send_workers SET heartbeat_at = ? WHERE id = ?",
                              (self.clock() if at is None else float(at), worker))

    def live_workers(self, send_id: int) -> dict[str, float]:
        """The workers of a send that may be sending now (registered, not stopped, their process
        there): id -> last heartbeat (by ``clock()``). They share the send's rate."""
        rows = self.conn.execute("SELECT id, host, pid, heartbeat_at, process_key FROM send_workers "
                                 "WHERE send_id = ? AND stopped_at IS NULL", (send_id,)).fetchall()
        now = self.clock()
        return {r["id"]: r["heartbeat_at"] for r in rows
                if worker_alive(r["host"], r["pid"], r["process_key"], r["heartbeat_at"], now=now)}

    def stop_worker(self, worker: str) -> None:
        with self._write(exclusive=False):
            self.conn.execute("UPDATE send_workers SET stopped_at = ? WHERE id = ?", (utc_now(), worker))

    def _dead_workers(self, send_id: int) -> list[str | None]:
        """The holders of the send's in-flight rows that are gone (another host's: silent for
        longer than ``STALE_AFTER`` by the database's clock)."""
        holders = [r[0] for r in self.conn.execute(
            "SELECT DISTINCT claimed_by FROM deliveries WHERE send_id = ? AND state = 'sending'", (send_id,))]
        if not holders:
            return []
        now = self.clock()
        return [h for h in holders if not self._alive(h, now)]

    def _alive(self, worker: str | None, now: float) -> bool:
        if worker is None:
            return False
        row = self.conn.execute("SELECT host, pid, heartbeat_at, stopped_at, process_key FROM send_workers "
                                "WHERE id = ?", (worker,)).fetchone()
        if row is None or row["stopped_at"] is not None:
            return False
        return worker_alive(row["host"], row["pid"], row["process_key"], row["heartbeat_at"], now=now)

    def unknown(self, send_id: int) -> int:
        """Rows left in ``sending`` by processes that are gone."""
        dead = self._dead_workers(send_id)
        if not dead:
            return 0
        dead = [h for h in dead if h is not None]  # rows with no holder are matched below
        marks = ",".join("?" * len(dead)) or "NULL"
        return self.conn.execute(
            f"SELECT COUNT(*) FROM deliveries WHERE send_id = ? AND state = 'sending' AND "
            f"(claimed_by IN ({marks}) OR claimed_by IS NULL)", (send_id, *dead)).fetchone()[0]

    def retry_unknown(self, send_id: int) -> int:
        """Put the unknown rows back to pending; return how many."""
        dead = self._dead_workers(send_id)
        if not dead:
            return 0
        dead = [h for h in dead if h is not None]  # rows with no holder are matched below
        marks = ",".join("?" * len(dead)) or "NULL"
        with self._write(exclusive=False):
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
        lists = self._lists_param(send)
        args = (worker, stamp, send.id, limit) + ((lists,) if lists is not None else ())
        if self.pg:
            # one statement, its own transaction: the claimed rows with their readers, in one
            # round trip, prepared once per connection (no BEGIN/COMMIT round trips around it)
            rows = self.conn.execute(_claim_with_readers_pg(lists is not None), args, prepare=True).fetchall()
            skipped = 0
            if len(rows) < limit:
                with self._write(exclusive=False):
                    skipped = self._skip_departed(send, stamp, lists)
        else:
            with self._write(exclusive=False):
                claimed = self.conn.execute(_claim_sql(self.sql, lists is not None), args).fetchall()
                skipped = self._skip_departed(send, stamp, lists) if len(claimed) < limit else 0
            people = {r[0]: r for r in self.conn.execute(
                f"SELECT id, name, attributes, uid FROM subscribers WHERE id {self.sql.in_ids(1)}",
                (self.sql.ids([r[1] for r in claimed if r[1] is not None]),))} if claimed else {}
            rows = [(*r, *people.get(r[1], (r[1], "", "{}", ""))[1:]) for r in claimed]
        rows.sort(key=lambda r: r[0])
        claims = []
        for delivery_id, subscriber_id, address, list_id, name, attributes, uid in rows:
            claims.append(Claim(delivery_id, Recipient(subscriber_id, address, name or "",
                                                       json.loads(attributes or "{}"),
                                                       list_id or send.list_id or 0, uid=uid_hex(uid))))
        return claims, skipped

    def _skip_departed(self, send: SendRecord, stamp: str, lists) -> int:
        """Mark skipped the pending rows whose reader is no longer sendable (one statement;
        ``lists``: the send's list ids as one parameter, ``_lists_param``)."""
        cur = self.conn.execute(
            "UPDATE deliveries SET state = 'skipped', updated_at = ?1, last_error = CASE "
            "WHEN subscriber_id IS NULL OR email IS NULL THEN 'subscriber erased since the send started' "
            "WHEN (SELECT status FROM subscribers s WHERE s.id = subscriber_id) IS NULL "
            "THEN 'subscriber deleted since the send started' "
            "WHEN (SELECT status FROM subscribers s WHERE s.id = subscriber_id) != 'active' "
            "THEN 'subscriber ' || (SELECT status FROM subscribers s WHERE s.id = subscriber_id) || ' since the send started' "
            "ELSE 'left the list since the send started' END "
            f"WHERE send_id = ?2 AND state = 'pending' AND NOT ({_sendable(self.sql, 3 if lists else None)})",
            (stamp, send.id) + ((lists,) if lists is not None else ()))
        return cur.rowcount

    def _lists_param(self, send: SendRecord):
        """The send's list ids as one parameter (None: no list to check)."""
        ids = send.list_ids
        return self.sql.ids(ids) if ids else None

    def record(self, send_id: int, worker: str, outcomes: Iterable[Outcome]) -> None:
        """Write what happened to claimed deliveries: one statement, one transaction."""
        stamp = utc_now()
        rows = [[o.delivery_id, o.state.value, o.provider_message_id if o.provider_message_id is None else
                 _storable(o.provider_message_id), None if o.error is None else _storable(o.error), o.attempts]
                for o in outcomes]
        if not rows:
            return
        any_sent = any(r[1] == "sent" for r in rows)
        first = any_sent and send_id not in self._first_sent
        if self.pg and not first:
            # one statement in its own transaction, prepared once, sent with its BEGIN/COMMIT in
            # one round trip, its commit not waiting for the disk: lost only if the server
            # crashes, and then the rows stay `sending` (unknown), never sent again unasked
            self.conn.execute_lazy_commit(_record_sql(self.sql), (self.sql.rows_param(rows), stamp, worker))
            return
        with self._write(exclusive=False):
            self.conn.execute(_record_sql(self.sql), (self.sql.rows_param(rows), stamp, worker))
            if first:
                self.conn.execute("UPDATE sends SET first_sent_at = COALESCE(first_sent_at, ?) WHERE id = ?",
                                  (stamp, send_id))
                self._first_sent.add(send_id)

    def progress(self, send_id: int) -> Progress:
        counts = {r[0]: r[1] for r in self.conn.execute(
            "SELECT state, COUNT(*) FROM deliveries WHERE send_id = ? GROUP BY state", (send_id,))}
        return Progress(total=sum(counts.values()), counts=counts, unknown=self.unknown(send_id))

    def deliveries(self, send_id: int, *, states: Iterable[str] = (), limit: int = 50) -> list:
        wanted = list(states)
        where = f" AND state IN ({','.join('?' * len(wanted))})" if wanted else ""
        return self.conn.execute(
            f"SELECT id, subscriber_id, email, state, provider_message_id, attempts, last_error, sent_at, "
            f"updated_at FROM deliveries WHERE send_id = ?{where} ORDER BY id LIMIT ?",
            (send_id, *wanted, limit)).fetchall()

    # -- plumbing ----------------------------------------------------------------------------------
    def _write(self, *, exclusive: bool = True):
        """One write transaction (see ``connection.write``): ``exclusive`` for the operations that
        read and then decide (create a send, number an edition); claims and records run side by
        side on PostgreSQL."""
        return connection.write(self.conn, exclusive=exclusive)


def _sendable(sql: _Dialect, lists: int | None) -> str:
    """A pending delivery may go out only while its reader is active and still on one of the
    send's lists (parameter ``?lists``: the list ids; None: a send with no list to check).
    (No ``?lists IS NULL OR …``: PostgreSQL plans such an OR as a hash of every membership of
    the lists, built again at each claim; a plain EXISTS is a probe of the memberships' key.)"""
    found = ("subscriber_id IS NOT NULL AND email IS NOT NULL "
             "AND EXISTS (SELECT 1 FROM subscribers s WHERE s.id = deliveries.subscriber_id AND s.status = 'active'"
             f"{sql.probe})")
    if lists is None:
        return found
    return (f"{found} AND EXISTS (SELECT 1 FROM memberships m WHERE m.subscriber_id = deliveries.subscriber_id "
            f"AND m.list_id {sql.in_ids(lists)} AND m.status = 'active'{sql.probe})")


@functools.cache
def _claim_sql(sql: _Dialect, lists: bool) -> str:
    """Take up to ?4 sendable pending deliveries of send ?3 for worker ?1 at time ?2 (the send's
    lists: ?5), lowest ids first; returns them. On PostgreSQL the rows another claimer holds are
    skipped, not waited for."""
    return ("UPDATE deliveries SET state = 'sending', claimed_by = ?1, claimed_at = ?2, updated_at = ?2 "
            "WHERE id IN (SELECT id FROM deliveries WHERE send_id = ?3 AND state = 'pending' AND "
            f"{_sendable(sql, 5 if lists else None)} ORDER BY {sql.claim_order} LIMIT ?4{sql.lock_claimed}) "
            "RETURNING id, subscriber_id, email, list_id")


@functools.cache
def _claim_with_readers_pg(lists: bool) -> str:
    """PostgreSQL: the claim and the claimed readers' names, attributes and uids at once."""
    return (f"WITH claimed AS ({_claim_sql(_PG, lists)}) "
            "SELECT c.id, c.subscriber_id, c.email, c.list_id, s.name, s.attributes, s.uid "
            "FROM claimed c LEFT JOIN subscribers s ON s.id = c.subscriber_id")


@functools.cache
def _record_sql(sql: _Dialect) -> str:
    """Outcome rows ?1 (JSON [[delivery_id, state, provider_message_id, error, attempts], ...])
    at time ?2, for the rows worker ?3 holds."""
    return ("UPDATE deliveries SET state = j.value ->> 1, "
            "provider_message_id = COALESCE(j.value ->> 2, deliveries.provider_message_id), "
            "last_error = j.value ->> 3, attempts = deliveries.attempts + CAST(j.value ->> 4 AS integer), "
            "sent_at = CASE WHEN j.value ->> 1 = 'sent' THEN ?2 ELSE deliveries.sent_at END, updated_at = ?2 "
            f"FROM {sql.rows} "
            "WHERE deliveries.id = CAST(j.value ->> 0 AS bigint) AND deliveries.claimed_by = ?3 "
            "AND deliveries.state = 'sending'")


def _send_record(row) -> SendRecord:
    return SendRecord(id=row["id"], slug=row["slug"], list_name=row["list_name"], list_id=row["list_id"],
                      subject=row["subject"], transport=row["transport"], recipients=row["recipients"],
                      created_at=row["created_at"], first_sent_at=row["first_sent_at"],
                      finished_at=row["finished_at"], last_error=row["last_error"], edition_id=row["edition_id"],
                      seq=row["seq"], snapshot_id=row["snapshot_id"], audience=row["audience"],
                      audience_key=row["audience_key"], skipped_earlier=row["skipped_earlier"])


def _edition_record(row) -> EditionRecord:
    return EditionRecord(id=row["id"], slug=row["slug"], number=row["number"], source_path=row["source_path"],
                         date_utc=row["date_utc"], created_at=row["created_at"])


def _snapshot(row) -> Snapshot:
    return Snapshot(slug=row["slug"], number=row["number"], title=row["title"], subject=row["subject"],
                    preheader=row["preheader"], date=row["date"], lang=row["lang"],
                    categories=tuple(json.loads(row["categories"])), items=tuple(json.loads(row["items"])),
                    html=row["html"], text=row["text"], web_url=row["web_url"], source_path=row["source_path"],
                    essay_path=row["essay_path"], source_hash=row["source_hash"], content_hash=row["content_hash"],
                    reconstructed=bool(row["reconstructed"]), id=row["id"], created_at=row["created_at"])


def _reading(conn_or_config: Connection | Config, query):
    """Run ``query(ledger)`` on a connection, or on a ledger opened for a configuration."""
    failures = connection.errors()
    if not isinstance(conn_or_config, Config):
        ledger = Ledger(conn_or_config)
        try:
            return query(ledger)
        except StoreError:
            raise
        except failures as err:
            raise StoreError(f"cannot read the delivery ledger: {_one_line(err)}") from None
    try:
        with Ledger.open(conn_or_config) as ledger:
            return query(ledger)
    except StoreError:
        raise
    except failures as err:
        raise StoreError(f"cannot read the delivery ledger: {_one_line(err)}") from None


def _storable(value: str) -> str:
    """A provider's text (an SMTP server's reply, an exception's message) as the ledger keeps it:
    a NUL or a lone surrogate written as its escape, which both engines store (PostgreSQL's
    ``jsonb`` would refuse a ``\\u0000`` and stop the send)."""
    from newsletter import text

    return text.escape(value)


def _never_stored(text_value: str, number: int = 0) -> bool:
    """A slug (or path) no row can hold — a NUL or a lone surrogate (from a terminal's bytes
    that are not UTF-8) — or a send number past the ``integer`` column: nothing to look up
    (and neither driver could send it: a traceback on SQLite, a refusal on PostgreSQL)."""
    from newsletter import text

    return bool(text.problem(text_value)) or not 0 <= number < 2**31


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


# Editions at least one reader was sent, newest first; per edition the snapshot of its latest
# send that reached someone (what the archive shows), and when its first message left.
_SENT = (
    "SELECT e.slug, MIN(s.first_sent_at) AS sent_at, "
    "(SELECT s2.snapshot_id FROM sends s2 WHERE s2.edition_id = e.id AND s2.first_sent_at IS NOT NULL "
    " AND s2.snapshot_id IS NOT NULL ORDER BY s2.first_sent_at DESC, s2.id DESC LIMIT 1) AS snapshot_id "
    "FROM editions e JOIN sends s ON s.edition_id = e.id WHERE s.first_sent_at IS NOT NULL "
    "GROUP BY e.id ORDER BY sent_at DESC, e.id DESC"
)


def sent_editions(conn_or_config: Connection | Config) -> list[SentEdition]:
    """Editions at least one reader was sent and whose snapshot is known, newest first:
    (slug, the snapshot's subject, first sent time)."""
    return [SentEdition(s.slug, s.subject, s.sent_at) for s in sent_snapshots(conn_or_config)]


def sent_snapshots(conn_or_config: Connection | Config, days: float | None = None) -> list[SentSnapshot]:
    """The editions sent (first message left) in the last ``days`` days (all: None), newest
    first, as their readers got them: number, title, subject, date and items (URLs and titles)
    from the snapshot — for the archive and for "already covered" checks."""
    def query(ledger: Ledger) -> list[SentSnapshot]:
        sql, args = _SENT, ()
        if days is not None:
            from datetime import datetime, timedelta, timezone

            since = (datetime.now(timezone.utc) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
            sql, args = f"SELECT * FROM ({_SENT}) AS sent WHERE sent_at >= ?", (since,)
        out = []
        for slug, sent_at, snapshot_id in ledger.conn.execute(sql, args).fetchall():
            if snapshot_id is None:
                continue  # sent before snapshots, and its file was gone at the upgrade
            row = ledger.conn.execute("SELECT number, title, subject, date, items FROM snapshots WHERE id = ?",
                                      (snapshot_id,)).fetchone()
            out.append(SentSnapshot(slug, row["number"], row["title"], row["subject"], row["date"], sent_at,
                                    json.loads(row["items"]), snapshot_id))
        return out
    return _reading(conn_or_config, query)


def archived_snapshot(conn_or_config: Connection | Config, slug: str, *,
                      cached: dict[int, object] | None = None) -> Snapshot | int | None:
    """What the archive page of ``slug`` shows: the snapshot of its latest send that reached
    someone; None for an edition never sent (unsent editions stay private). With ``cached``
    (snapshot id -> anything) a cached snapshot's id is returned instead of reading it again."""
    def query(ledger: Ledger):
        row = ledger.conn.execute(
            "SELECT s.snapshot_id FROM editions e JOIN sends s ON s.edition_id = e.id WHERE e.slug = ? "
            "AND s.first_sent_at IS NOT NULL AND s.snapshot_id IS NOT NULL "
            "ORDER BY s.first_sent_at DESC, s.id DESC LIMIT 1", (slug,)).fetchone()
        if row is None:
            return None
        if cached is not None and row[0] in cached:
            return row[0]
        return ledger.snapshot(row[0])
    return _reading(conn_or_config, query)


def planned_number(config: Config, edition) -> int | None:
    """The number ``edition`` has, or will get at its first send: the one it was given then,
    else ``number:``, else 1 + the highest number sent so far. Reads the ledger only when the
    database already holds one (check, build and preview create nothing: no SQLite file, no
    PostgreSQL tables)."""
    from newsletter.send.snapshot import date_instant, resolved
    from newsletter.store import database_url
    from newsletter.store.dburl import is_postgres

    try:
        url = database_url(config)
        if is_postgres(url):
            from newsletter.store import pg

            conn = pg.connect(url, migrate=False)
            version = pg.schema_version(conn)
            if version != pg.latest_version():  # empty, or not yet migrated
                conn.close()
                return edition.number or (1 if version == 0 else None)
        else:
            from newsletter.store import db

            if not db.sqlite_path(url).exists():
                return edition.number or 1
            conn = db.connect(db.sqlite_path(url))
    except connection.errors():
        return edition.number
    try:
        with Ledger(conn) as ledger:
            try:
                found = ledger.match_edition(resolved(edition.source), edition.slug, date_instant(edition))
            except ValidationError:
                found = None
            if found is not None and found.number is not None:
                return found.number
            return edition.number or ledger.next_number()
    except connection.errors():
        return edition.number
