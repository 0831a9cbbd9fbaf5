"""``SqliteStore``: the ``Store`` interface over one SQLite file.

Every write runs in its own ``BEGIN IMMEDIATE`` transaction (writers queue up on the busy
timeout instead of failing half-way); reads stream from cursors so that lists of any size use
constant memory. The bulk CSV import lives in ``newsletter.store.sqlite_import``.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from newsletter.audience.addresses import Address, clean_text, parse_address
from newsletter.audience.segments import Audience, Condition
from newsletter.audience.attributes import attr_key
from newsletter import text
from newsletter.errors import ValidationError
from newsletter.store import connection, db
from newsletter.store.db import utc_now
from newsletter.store.base import AddResult, AudienceSelect, ImportRow, ImportSummary, Store, SubscribeResult
from newsletter.store.models import (
    MailingList,
    Membership,
    MembershipStatus,
    OptIn,
    Recipient,
    Subscriber,
    SubscriberStatus,
    uid_hex,
)

MAX_NAME = 200  # as on the web form and in a CSV import
LIST_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
OPTED_OUT = ("unsubscribed", "bounced", "complained")
_SUB_COLUMNS = ("id, email, name, attributes, status, source, created_at, confirmed_at, "
                "unsubscribed_at, uid, legacy_tokens")
_FETCH = 2000  # rows per fetchmany while streaming


def _subscriber(row: sqlite3.Row) -> Subscriber:
    return Subscriber(
        id=row["id"], email=row["email"], name=row["name"],
        attributes=json.loads(row["attributes"]), status=SubscriberStatus(row["status"]),
        source=row["source"], created_at=row["created_at"], confirmed_at=row["confirmed_at"],
        unsubscribed_at=row["unsubscribed_at"], uid=uid_hex(row["uid"]), legacy_tokens=bool(row["legacy_tokens"]),
    )


def _mailing_list(row: sqlite3.Row) -> MailingList:
    return MailingList(id=row["id"], name=row["name"], description=row["description"],
                       optin=OptIn(row["optin"]), public=bool(row["public"]),
                       created_at=row["created_at"])


def _clean_attributes(attributes: dict[str, str] | None, notes: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (attributes or {}).items():
        text.require_unicode(f"the attribute name {key!r}", str(key))  # not text: refused
        text.require_unicode(f"attribute {key!r}", str(value))
        k, k_changed = clean_text(str(key))
        k = attr_key(k)
        if not k:
            raise ValidationError("attribute names must not be empty")
        v, v_changed = clean_text(str(value))
        if k_changed or v_changed:
            notes.append(f"stripped control characters from attribute {k!r}")
        out[k] = v
    return out


class SqliteStore(Store):
    """The subscriber store in one SQLite file (``path``), migrated on open."""

    backend = "sqlite"  # PostgresStore: "postgresql" (for the few engine-specific settings)
    FIND_IN = "instr"  # SQL function: the position of a substring (PostgreSQL: strpos, same arguments)

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.conn = db.connect(self.path)
        try:  # an import whose process died half-way is undone before anything reads the lists
            if self.conn.execute("SELECT 1 FROM imports LIMIT 1").fetchone():
                from newsletter.store.sqlite_import import recover_imports

                recover_imports(self)
        except BaseException:
            self.conn.close()
            raise

    def close(self) -> None:
        self.conn.close()

    def transaction(self) -> "AbstractContextManager[sqlite3.Connection]":
        """One write transaction (``BEGIN IMMEDIATE``): committed on success, rolled back on
        any exception (KeyboardInterrupt included); a failed statement is one ``StoreError``
        line naming the file."""
        return connection.write(self.conn, where=self.path)

    def reader_transaction(self, subscriber_id: int) -> "AbstractContextManager[sqlite3.Connection]":
        """A write transaction that changes one reader's own rows, by conditional statements only
        (nothing read and then decided): an unsubscribe. On SQLite the same as ``transaction``;
        PostgreSQL lets such writes of different readers commit side by side."""
        return self.transaction()

    # -- lists -----------------------------------------------------------------------------
    def create_list(self, name: str, *, description: str = "", double_opt_in: bool = False,
                    public: bool = False) -> MailingList:
        if not LIST_NAME_RE.fullmatch(name or ""):
            raise ValidationError(f"list name {name!r} must be 1-64 letters, digits, '.', '_' or "
                                  "'-', starting with a letter or digit")
        description, _ = clean_text(text.require_unicode("the description", description))
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM lists WHERE name = ?", (name,)).fetchone():
                raise ValidationError(f"list {name!r} already exists")
            conn.execute(
                "INSERT INTO lists (name, description, optin, public, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, description, "double" if double_opt_in else "single", bool(public),
                 utc_now()),
            )
        return self.get_list(name)

    def get_list(self, name: str) -> MailingList | None:
        if text.problem(name):  # a NUL or a lone surrogate: no list is called that
            return None
        row = self.conn.execute("SELECT * FROM lists WHERE name = ?", (name,)).fetchone()
        return _mailing_list(row) if row else None

    def get_list_by_id(self, list_id: int) -> MailingList | None:
        row = self.conn.execute("SELECT * FROM lists WHERE id = ?", (list_id,)).fetchone()
        return _mailing_list(row) if row else None

    def lists(self, *, public_only: bool = False) -> list[MailingList]:
        sql = "SELECT * FROM lists" + (" WHERE public" if public_only else "") + " ORDER BY name"
        return [_mailing_list(r) for r in self.conn.execute(sql)]

    def list_counts(self) -> dict[str, dict[str, int]]:
        counts = {l.name: {s.value: 0 for s in MembershipStatus} for l in self.lists()}
        for row in self.conn.execute(
            "SELECT l.name, m.status, count(*) AS n FROM memberships m "
            "JOIN lists l ON l.id = m.list_id GROUP BY l.name, m.status"
        ):
            counts[row["name"]][row["status"]] = row["n"]
        return counts

    def delete_list(self, name: str) -> None:
        self.require_list(name)
        with self.transaction() as conn:
            conn.execute("DELETE FROM lists WHERE name = ?", (name,))

    # -- subscribers -----------------------------------------------------------------------
    def add_subscriber(self, email: str, *, name: str = "", lists: Iterable[str] = (),
                       attributes: dict[str, str] | None = None, source: str = "cli",
                       resubscribe: bool = False, check_dns: bool = False) -> AddResult:
        address = parse_address(email, check_dns=check_dns)
        notes: list[str] = []
        name, changed = clean_text(text.require_unicode("the name", name))
        if changed:
            notes.append("stripped control characters from name")
        if len(name) > MAX_NAME:
            raise ValidationError(f"the name is {len(name)} characters long: at most {MAX_NAME} "
                                  "(it goes into the To: line of every message)")
        attrs = _clean_attributes(attributes, notes)
        targets = [self.require_list(n) for n in dict.fromkeys(lists)]
        with self.transaction():
            return self._add(address, name, attrs, targets, source, resubscribe, notes)

    def _add(self, address: Address, name: str, attrs: dict[str, str],
             targets: list[MailingList], source: str, resubscribe: bool,
             notes: list[str]) -> AddResult:
        conn, now = self.conn, utc_now()
        if self._suppressed_hash(address.hash):
            notes.append("the address is on the suppression list")
            return AddResult(self.get_subscriber(address.email), "kept-by-consent", notes)
        row = conn.execute(f"SELECT {_SUB_COLUMNS} FROM subscribers WHERE email_key = ?",
                           (address.key,)).fetchone()
        if row is None:
            new_id = conn.execute(
                "INSERT INTO subscribers (email, email_key, name, attributes, status, source, "
                "created_at, confirmed_at) VALUES (?, ?, ?, ?, 'active', ?, ?, ?) RETURNING id",
                (address.email, address.key, name, json.dumps(attrs, ensure_ascii=False), source,
                 now, now),
            ).fetchall()[0][0]
            for target in targets:
                self._set_membership(new_id, target.id, "active", now)
            return AddResult(self.get_subscriber_by_id(new_id), "added", notes)
        current = _subscriber(row)
        if current.status.value in OPTED_OUT:
            # --resubscribe lifts an unsubscribe or a bounce, never a complaint
            if not resubscribe or current.status == SubscriberStatus.COMPLAINED:
                notes.append(f"the subscriber is {current.status.value}")
                return AddResult(current, "kept-by-consent", notes)
        return self._update_existing(current, name, attrs, targets, resubscribe, notes, now)

    def _update_existing(self, current: Subscriber, name: str, attrs: dict[str, str],
                         targets: list[MailingList], resubscribe: bool, notes: list[str],
                         now: str) -> AddResult:
        conn, changed, kept = self.conn, False, False
        merged = {**current.attributes, **attrs}
        if (name and name != current.name) or merged != current.attributes:
            conn.execute("UPDATE subscribers SET name = ?, attributes = ? WHERE id = ?",
                         (name or current.name, json.dumps(merged, ensure_ascii=False), current.id))
            changed = True
        if current.status != SubscriberStatus.ACTIVE:
            conn.execute("UPDATE subscribers SET status = 'active', confirmed_at = ?, "
                         "unsubscribed_at = NULL WHERE id = ?", (now, current.id))
            changed = True
        existing = {m.list_id: m.status for m in self.memberships(current.id)}
        for target in targets:
            status = existing.get(target.id)
            if status == MembershipStatus.ACTIVE:
                continue
            if status == MembershipStatus.UNSUBSCRIBED and not resubscribe:
                notes.append(f"unsubscribed from {target.name!r}: kept")
                kept = True
                continue
            self._set_membership(current.id, target.id, "active", now)
            changed = True
        outcome = "updated" if changed else ("kept-by-consent" if kept else "unchanged")
        return AddResult(self.get_subscriber_by_id(current.id), outcome, notes)

    def _set_membership(self, subscriber_id: int, list_id: int, status: str, now: str) -> None:
        self.conn.execute(
            "INSERT INTO memberships (subscriber_id, list_id, status, created_at, confirmed_at, "
            "unsubscribed_at) VALUES (?1, ?2, ?3, ?4, CASE WHEN ?3 = 'active' THEN ?4 END, "
            "CASE WHEN ?3 = 'unsubscribed' THEN ?4 END) "
            "ON CONFLICT (subscriber_id, list_id) DO UPDATE SET status = excluded.status, "
            "confirmed_at = coalesce(excluded.confirmed_at, memberships.confirmed_at), "
            "unsubscribed_at = excluded.unsubscribed_at",
            (subscriber_id, list_id, status, now),
        )

    def import_rows(self, rows: Iterable[ImportRow], *, list_name: str, dry_run: bool = False,
                    source: str = "import",
                    summary: ImportSummary | None = None) -> ImportSummary:
        from newsletter.store.sqlite_import import import_rows

        target = self.require_list(list_name)
        return import_rows(self, rows, target, dry_run=dry_run, source=source,
                           summary=summary or ImportSummary(dry_run=dry_run))

    def get_subscriber(self, email: str) -> Subscriber | None:
        try:
            key = parse_address(email).key
        except ValidationError:
            return None
        row = self.conn.execute(f"SELECT {_SUB_COLUMNS} FROM subscribers WHERE email_key = ?",
                                (key,)).fetchone()
        return _subscriber(row) if row else None

    def get_subscriber_by_id(self, subscriber_id: int) -> Subscriber | None:
        row = self.conn.execute(f"SELECT {_SUB_COLUMNS} FROM subscribers WHERE id = ?",
                                (subscriber_id,)).fetchone()
        return _subscriber(row) if row else None

    def memberships(self, subscriber_id: int) -> list[Membership]:
        return [
            Membership(list_id=r["list_id"], list_name=r["name"],
                       status=MembershipStatus(r["status"]), created_at=r["created_at"],
                       confirmed_at=r["confirmed_at"], unsubscribed_at=r["unsubscribed_at"])
            for r in self.conn.execute(
                "SELECT m.*, l.name FROM memberships m JOIN lists l ON l.id = m.list_id "
                "WHERE m.subscriber_id = ? ORDER BY l.name", (subscriber_id,))
        ]

    def unsubscribe(self, subscriber_id: int, list_id: int | None = None) -> bool:
        now = utc_now()
        with self.reader_transaction(subscriber_id) as conn:
            sql = ("UPDATE memberships SET status = 'unsubscribed', unsubscribed_at = ? "
                   "WHERE subscriber_id = ? AND status <> 'unsubscribed'")
            args: tuple = (now, subscriber_id)
            if list_id is not None:
                sql, args = sql + " AND list_id = ?", args + (list_id,)
            changed = conn.execute(sql, args).rowcount > 0
            if list_id is None:
                changed |= conn.execute(
                    "UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = ? "
                    "WHERE id = ? AND status IN ('active', 'unconfirmed')", (now, subscriber_id),
                ).rowcount > 0
        return changed

    def imports_running(self, list_name: str) -> list[int]:
        """Imports into ``list_name`` still being applied by a live process (an unfinished one
        whose process is gone is undone first)."""
        from newsletter.store.sqlite_import import recover_imports

        return recover_imports(self, self.require_list(list_name).id)

    def erase(self, email: str) -> bool:
        from newsletter.store.sqlite_import import erase

        return erase(self, parse_address(email))

    def _filter(self, list_name: str | None,
                status: SubscriberStatus | None, conditions: Iterable[Condition] = ()) -> tuple[str, str, list]:
        """FROM/WHERE for listing: with a list, a subscriber's status on it is the stronger of
        the global opt-out and the membership's status."""
        source, where, args = self._filter_list(list_name, status)
        extra, extra_args = self._conditions_sql(conditions)
        if extra:
            where = (where + " AND " if where else "WHERE ") + extra
            args = args + extra_args
        return source, where, args

    def _filter_list(self, list_name: str | None, status: SubscriberStatus | None) -> tuple[str, str, list]:
        if list_name is None:
            where, args = ("WHERE s.status = ?", [SubscriberStatus(status).value]) if status else ("", [])
            return "subscribers s", where, args
        target = self.require_list(list_name)
        effective = ("CASE WHEN s.status IN ('unsubscribed', 'bounced', 'complained') "
                     "THEN s.status ELSE m.status END")
        where, args = "WHERE m.list_id = ?", [target.id]
        if status:
            where, args = where + f" AND {effective} = ?", args + [SubscriberStatus(status).value]
        return "memberships m JOIN subscribers s ON s.id = m.subscriber_id", where, args

    def iter_subscribers(self, *, list_name: str | None = None,
                         status: SubscriberStatus | None = None,
                         where: Iterable[Condition] = ()) -> Iterator[Subscriber]:
        conditions = where
        source, where, args = self._filter(list_name, status, conditions)
        columns = ", ".join(f"s.{c.strip()}" for c in _SUB_COLUMNS.split(","))
        if list_name is not None:
            columns = columns.replace(
                "s.status", "CASE WHEN s.status IN ('unsubscribed', 'bounced', 'complained') "
                "THEN s.status ELSE m.status END AS status")
        order = "m.subscriber_id" if list_name is not None else "s.id"  # index order: no sort
        for batch in self._batches(f"SELECT {columns} FROM {source} {where} ORDER BY {order}", args):
            yield from map(_subscriber, batch)

    def _batches(self, sql: str, args) -> Iterator[list]:
        """The rows of a query, a few thousand at a time (constant memory)."""
        cur = self.conn.execute(sql, args)
        while batch := cur.fetchmany(_FETCH):
            yield batch

    def count_subscribers(self, *, list_name: str | None = None,
                          status: SubscriberStatus | None = None,
                          where: Iterable[Condition] = ()) -> int:
        conditions = where
        source, where, args = self._filter(list_name, status, conditions)
        return self.conn.execute(f"SELECT count(*) FROM {source} {where}", args).fetchone()[0]

    # -- the readers' side -----------------------------------------------------------------
    def subscribe(self, email: str, *, name: str = "", list_ids: Iterable[int],
                  source: str = "web") -> SubscribeResult:
        from newsletter.store.readers import subscribe

        return subscribe(self, parse_address(email), clean_text(name)[0], list(list_ids), source)

    def confirm(self, subscriber_id: int, list_id: int = 0) -> bool:
        from newsletter.store.readers import confirm

        return confirm(self, subscriber_id, list_id)

    def update_subscriber(self, subscriber_id: int, *, name: str | None = None,
                          list_ids: Iterable[int] | None = None) -> Subscriber:
        from newsletter.store.readers import update_subscriber

        return update_subscriber(self, subscriber_id, name,
                                 None if list_ids is None else list(list_ids))

    def export_subscriber(self, subscriber_id: int) -> dict:
        from newsletter.store.readers import export_subscriber

        return export_subscriber(self, subscriber_id)

    # -- sending and events ----------------------------------------------------------------
    def recipients(self, list_name: str) -> Iterator[Recipient]:
        target = self.require_list(list_name)
        for batch in self._batches(
            "SELECT s.id, s.email, s.email_key, s.name, s.attributes, s.uid FROM memberships m "
            "JOIN subscribers s ON s.id = m.subscriber_id "
            "WHERE m.list_id = ? AND m.status = 'active' AND s.status = 'active' "
            "AND NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.email = s.email_key) "
            "ORDER BY m.subscriber_id", (target.id,)):  # the index's order: no sort, no memory
            for row in batch:
                yield Recipient(subscriber_id=row["id"], email=envelope_address(row["email"]),
                                name=row["name"], attributes=json.loads(row["attributes"]),
                                uid=uid_hex(row["uid"]))

    def audience_recipients(self, audience: Audience) -> Iterator[Recipient]:
        """The audience's readers, each once (by id), with the first of its lists they are on."""
        lists = [self.require_list(n).id for n in audience.lists]
        sql, args = self._audience_sql(lists, [self.require_list(n).id for n in audience.exclude],
                                       audience.where, "s.id, s.email, s.name, s.attributes, u.pos, s.uid")
        cur = self.conn.execute(sql + " ORDER BY s.id", args)
        while batch := cur.fetchmany(_FETCH):
            for row in batch:
                yield Recipient(subscriber_id=row[0], email=envelope_address(row[1]), name=row[2],
                                attributes=json.loads(row[3]), list_id=lists[row[4]], uid=uid_hex(row[5]))

    def audience_select(self, audience: Audience) -> AudienceSelect:
        """The audience as one SELECT of ``(subscriber_id, email as stored, list_id)`` in id
        order, for the ledger to freeze in a single ``INSERT … SELECT`` on the same database."""
        lists = [self.require_list(n).id for n in audience.lists]
        sql, args = self._audience_sql(lists, [self.require_list(n).id for n in audience.exclude],
                                       audience.where, f"s.id, s.email, {self._AUDIENCE_LIST_ID}")
        return AudienceSelect(sql, [self._id_list(lists), *args], lists)

    # the list id of a reader's first list (``u.pos``) from the list of ids in a parameter
    _AUDIENCE_LIST_ID = "json_extract(?, '$[' || u.pos || ']')"
    # A list of ids as one parameter (``_id_list``): its rows, each row's id and 0-based position,
    # and "is one of them" (PostgreSQL: unnest … WITH ORDINALITY and = ANY of a bigint array).
    _LIST_ROWS = "json_each(?) l"
    _LIST_ROW_ID = "l.value"
    _LIST_POS = "l.key"
    _IN_LIST = "IN (SELECT value FROM json_each(?))"

    @staticmethod
    def _id_list(ids: list[int]):
        """A list of ids as one parameter (SQLite: a JSON array, read with json_each)."""
        return json.dumps(ids)

    @staticmethod
    def _conditions_sql(conditions: Iterable[Condition]) -> tuple[str, list]:
        return _conditions_sql(conditions)

    def audience_steps(self, audience: Audience) -> list[tuple[str, int]]:
        """The count of sendable readers after each step: each list added, each list left out,
        each condition (one query per step)."""
        lists = [self.require_list(n).id for n in audience.lists]
        exclude = [self.require_list(n).id for n in audience.exclude]
        steps: list[tuple[str, int]] = []

        def count(label: str, *parts: list) -> None:
            sql, args = self._audience_sql(*parts, "count(*)")
            steps.append((label, self.conn.execute(sql, args).fetchone()[0]))

        for i, name in enumerate(audience.lists):
            count(f"list {name}" if i == 0 else f"+ list {name}", lists[:i + 1], [], [])
        for i, name in enumerate(audience.exclude):
            count(f"− list {name}", lists, exclude[:i + 1], [])
        for i, condition in enumerate(audience.where):
            count(f"where {condition}", lists, exclude, list(audience.where[:i + 1]))
        return steps

    def _audience_sql(self, lists: list[int], exclude: list[int], conditions: Iterable[Condition],
                      columns: str) -> tuple[str, list]:
        """Members active on any of ``lists`` (deduplicated: one row per reader, ``pos`` = the
        first of the lists they are on), active and not suppressed, on none of ``exclude`` (any
        membership but an unsubscribed one), matching every condition."""
        extra, extra_args = self._conditions_sql(conditions)
        sql = (f"SELECT {columns} FROM (SELECT m.subscriber_id AS id, MIN({self._LIST_POS}) AS pos "
               f"FROM {self._LIST_ROWS} JOIN memberships m ON m.list_id = {self._LIST_ROW_ID} "
               "AND m.status = 'active' GROUP BY m.subscriber_id) u JOIN subscribers s ON s.id = u.id "
               "WHERE s.status = 'active' "
               "AND NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.email = s.email_key)")
        args: list = [self._id_list(lists)]
        if exclude:
            sql += (" AND NOT EXISTS (SELECT 1 FROM memberships e WHERE e.subscriber_id = s.id "
                    f"AND e.list_id {self._IN_LIST} AND e.status <> 'unsubscribed')")
            args.append(self._id_list(exclude))
        if extra:
            sql += " AND " + extra
            args += extra_args
        return sql, args

    def is_suppressed(self, email: str) -> bool:
        try:
            return self._suppressed_hash(parse_address(email).hash)
        except ValidationError:
            return False

    def _suppressed_hash(self, digest: str) -> bool:
        return self.conn.execute("SELECT 1 FROM suppressions WHERE email_hash = ?",
                                 (digest,)).fetchone() is not None

    def suppress(self, email: str, reason: str) -> None:
        address = parse_address(email)
        with self.transaction():
            self._suppress(address, reason)

    def _suppress(self, address: Address, reason: str) -> None:
        # ``email`` holds the normalised key, so recipients() can join on it cheaply.
        self.conn.execute(
            "INSERT INTO suppressions (email_hash, email, reason, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (email_hash) DO NOTHING",
            (address.hash, address.key, clean_text(reason)[0] or "suppressed", utc_now()))

    def set_status(self, email: str, status: SubscriberStatus, *, reason: str = "") -> bool:
        address, status, now = parse_address(email), SubscriberStatus(status), utc_now()
        with self.transaction() as conn:
            if status in (SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED):
                self._suppress(address, reason or status.value)
            row = conn.execute("SELECT id, status FROM subscribers WHERE email_key = ?",
                               (address.key,)).fetchone()
            if row is None or row["status"] == status.value:
                return False
            if status.value in OPTED_OUT:
                conn.execute("UPDATE subscribers SET status = ?, unsubscribed_at = ? WHERE id = ?",
                             (status.value, now, row["id"]))
            else:
                conn.execute("UPDATE subscribers SET status = ?, confirmed_at = coalesce("
                             "confirmed_at, ?) WHERE id = ?", (status.value, now, row["id"]))
        return True


def _conditions_sql(conditions: Iterable[Condition]) -> tuple[str, list]:
    """``--where`` conditions on ``s.attributes`` (JSON of strings), ANDed."""
    parts, args = [], []
    for c in conditions:
        path = f'$."{c.key}"'  # the key has no quotes or backslashes (audience.parse_condition)
        if c.op == "has":
            parts.append("COALESCE(json_extract(s.attributes, ?), '') != ''")
            args.append(path)
        elif c.op == "=":
            parts.append("json_extract(s.attributes, ?) = ? COLLATE NOCASE")
            args += [path, c.value]
        else:
            parts.append("COALESCE(json_extract(s.attributes, ?), '') != ? COLLATE NOCASE")
            args += [path, c.value]
    return " AND ".join(parts), args


def envelope_address(email: str) -> str:
    """The address as it goes on the envelope: the domain in its ASCII (IDNA) form."""
    if email.isascii():
        return email
    return parse_address(email).ascii_email
