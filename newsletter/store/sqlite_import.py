"""Bulk import and erasure for the SQLite store.

An import is one transaction. Every row is first appended to a temporary table (no index: an
append is cheap, and memory stays flat however large the file). Rows are then checked against
the suppression list and the existing subscribers with set-based SQL; new addresses go into
``subscribers`` with one INSERT … SELECT sorted by address, so that the unique index on the
address is built by appending instead of by random inserts (the difference between seconds
and minutes for a million rows), merging duplicates as they meet; their memberships follow in
one more statement. Rows naming an existing subscriber go through the consent rules in
``decide``, grouped by address.

A first import into an empty database (no subscriber, no suppression: nothing to check) takes
a shorter road: ``newsletter.store.sqlite_bulk``. Both give the same result (tested).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from newsletter.addresses import Address, address_hash
from newsletter.store.base import ImportRow, ImportSummary
from newsletter.store import sqlite_bulk
from newsletter.store.models import MailingList

if TYPE_CHECKING:
    from newsletter.store.sqlite import SqliteStore

_BATCH = 5000
OPTED_OUT = ("unsubscribed", "bounced", "complained")
_OPTED_OUT_SQL = "('unsubscribed', 'bounced', 'complained')"

_STAGE = """
CREATE TEMP TABLE import_rows (
    key TEXT NOT NULL, email TEXT, name TEXT NOT NULL,  -- email NULL: the same as key
    attributes TEXT NOT NULL, status TEXT NOT NULL, hash TEXT,
    blocked INTEGER NOT NULL DEFAULT 0, sub_id INTEGER
)"""

# Merging a duplicate: later non-empty values win, an opt-out wins. In an upsert every
# unqualified column is the stored row's value; excluded.* is the incoming one.
_STATUS = ("CASE WHEN excluded.status <> 'active' THEN excluded.status "
           "ELSE subscribers.status END")
_NEW_INSERT = f"""
INSERT INTO subscribers (email_key, email, name, attributes, status, source, created_at,
                         confirmed_at, unsubscribed_at)
SELECT key, coalesce(email, key), name, attributes, status, ?1, ?2,
       CASE WHEN status = 'active' THEN ?2 END,
       CASE WHEN status IN {_OPTED_OUT_SQL} THEN ?2 END
FROM temp.import_rows WHERE blocked = 0 AND sub_id IS NULL ORDER BY key, rowid
ON CONFLICT (email_key) DO UPDATE SET
    name = CASE WHEN excluded.name <> '' THEN excluded.name ELSE subscribers.name END,
    attributes = CASE WHEN excluded.attributes = '{{}}' THEN subscribers.attributes
                      ELSE json_patch(subscribers.attributes, excluded.attributes) END,
    status = {_STATUS},
    confirmed_at = CASE WHEN {_STATUS} = 'active' THEN subscribers.created_at END,
    unsubscribed_at = CASE WHEN {_STATUS} IN {_OPTED_OUT_SQL} THEN subscribers.created_at END
WHERE subscribers.id > ?3"""

_MEMBERSHIP_STATUS = ("CASE status WHEN 'active' THEN 'active' WHEN 'unconfirmed' THEN "
                      "'unconfirmed' ELSE 'unsubscribed' END")


def import_rows(store: "SqliteStore", rows: Iterable[ImportRow], target: MailingList, *,
                dry_run: bool, source: str, summary: ImportSummary) -> ImportSummary:
    """Import ``rows`` in one transaction (rolled back for a dry run or on any exception)."""
    from newsletter.store.sqlite import utc_now

    now = utc_now()
    try:
        # Reading, parsing, validating and hashing the file happen before the write lock is
        # taken: the rows go to a TEMP table (this connection's own temporary database, which
        # locks nothing of the main one), so web writers (a one-click unsubscribe) are not kept
        # waiting by a big file. Only the short set-based statements below hold the lock.
        _stage_unlocked(store.conn, rows)
        with _sort_threads(store.conn), store.transaction() as conn:
            first_new = conn.execute("SELECT coalesce(max(id), 0) FROM subscribers").fetchone()[0]
            has_suppressions = conn.execute("SELECT 1 FROM suppressions LIMIT 1").fetchone()
            if not first_new and not has_suppressions and sqlite_bulk.can_bulk_load(conn):
                sqlite_bulk.bulk_load_staged(conn, target, source, now, summary)
                if dry_run:
                    raise _DryRun
                return summary
            if has_suppressions:
                conn.execute("UPDATE temp.import_rows SET blocked = 1 "
                             "WHERE hash IN (SELECT email_hash FROM suppressions)")
            if first_new:
                # UPDATE … FROM writes only the rows that match (not every staged row)
                conn.execute("UPDATE temp.import_rows SET sub_id = s.id FROM subscribers s "
                             "WHERE s.email_key = import_rows.key AND import_rows.blocked = 0")
            _insert_new(conn, target, source, first_new, now, summary)
            _count_blocked(conn, summary)
            if first_new:
                _apply_existing(store, target, now, summary)
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    finally:
        store.conn.execute("DROP TABLE IF EXISTS temp.import_rows")
    return summary


def _stage_unlocked(conn, rows: Iterable[ImportRow]) -> None:
    """Stage every row in one transaction on the temp database only (no lock on the main one)."""
    conn.execute("BEGIN")
    try:
        _stage(conn, rows, with_hash=True)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class _DryRun(Exception):
    """Raised inside the transaction to roll a dry run back."""


@contextmanager
def _sort_threads(conn) -> Iterator[None]:
    """Let SQLite's sorter use two helper threads: they sort runs of rows while the statement
    reads on (the address index build, the general path's ORDER BY key). A million rows: the
    index build ~0.45 s instead of ~0.65 s, the sorted insert ~0.3 s less. Each run is no
    larger than the page cache, so memory stays flat (+4 MiB)."""
    before = conn.execute("PRAGMA threads").fetchone()[0]
    conn.execute("PRAGMA threads = 2")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA threads = {int(before)}")


def _stage(conn, rows: Iterable[ImportRow], *, with_hash: bool) -> None:
    conn.execute("DROP TABLE IF EXISTS temp.import_rows")
    conn.execute(_STAGE)
    rows = iter(rows)
    if with_hash:  # only needed when there is a suppression list to check against
        rows = (r + (address_hash(r[0]),) for r in rows)
    # ?2 (the line number) is not kept: it only matters for messages, given while parsing
    sql = ("INSERT INTO temp.import_rows (key, email, name, attributes, status, hash) "
           f"VALUES (?1, nullif(?3, ?1), ?4, ?5, ?6, {'?7' if with_hash else 'NULL'})")
    while batch := list(itertools.islice(rows, sqlite_bulk.ROWS_PER_CALL)):
        conn.executemany(sql, batch)


def _insert_new(conn, target: MailingList, source: str, first_new: int, now: str,
                summary: ImportSummary) -> None:
    """New addresses, their memberships and (for imported bounces/complaints) suppressions.
    The subscribers added are exactly the id range above ``first_new``."""
    conn.execute(_NEW_INSERT, (source, now, first_new))
    sent = conn.execute("SELECT count(*) FROM temp.import_rows "
                        "WHERE blocked = 0 AND sub_id IS NULL").fetchone()[0]
    added = conn.execute("SELECT count(*) FROM subscribers WHERE id > ?", (first_new,)).fetchone()[0]
    summary.added += added
    summary.duplicates += sent - added
    finish_new(conn, target, first_new, now)


def finish_new(conn, target: MailingList, first_new: int, now: str) -> None:
    """Memberships of the subscribers just added (ids above ``first_new``), and suppressions
    for those imported as bounced or complained."""
    add_memberships(conn, target, first_new, now)
    add_suppressions(conn, first_new, now)


def add_memberships(conn, target: MailingList, first_new: int, now: str) -> None:
    """Memberships in ``target`` for the subscribers with ids above ``first_new``."""
    conn.execute(
        "INSERT INTO memberships (subscriber_id, list_id, status, created_at, confirmed_at, "
        f"unsubscribed_at) SELECT id, ?1, {_MEMBERSHIP_STATUS}, ?2, confirmed_at, "
        "unsubscribed_at FROM subscribers WHERE id > ?3", (target.id, now, first_new))


def add_suppressions(conn, first_new: int, now: str) -> None:
    """Subscribers above ``first_new`` imported as bounced or complained are suppressed."""
    found = conn.execute("SELECT email_key, status FROM subscribers WHERE id > ? "
                         "AND (status = 'bounced' OR status = 'complained')", (first_new,))
    conn.executemany("INSERT INTO suppressions (email_hash, email, reason, created_at) "
                     "VALUES (?, ?, ?, ?) ON CONFLICT (email_hash) DO NOTHING",
                     [(address_hash(k), k, status, now) for k, status in found])


def _count_blocked(conn, summary: ImportSummary) -> None:
    distinct, total = conn.execute("SELECT count(DISTINCT key), count(*) FROM temp.import_rows "
                                   "WHERE blocked = 1").fetchone()
    summary.kept_by_consent += distinct
    summary.duplicates += total - distinct


def _existing_groups(conn) -> Iterator[tuple[int, list]]:
    """(subscriber id, that address's rows in file order), streamed."""
    cur = conn.execute("SELECT key, sub_id, name, attributes, status, rowid FROM temp.import_rows "
                       "WHERE sub_id IS NOT NULL ORDER BY key, rowid")
    rows = itertools.chain.from_iterable(iter(lambda: cur.fetchmany(_BATCH), []))
    for _, group in itertools.groupby(rows, key=lambda r: r[0]):
        group = list(group)
        yield group[0][1], group


def merge_rows(group: list) -> dict:
    """Duplicates of one address merged: later non-empty values win, an opt-out wins."""
    name, attributes, status = "", {}, "active"
    for _key, _id, row_name, row_attributes, row_status, _rowid in group:
        name = row_name or name
        attributes.update(json.loads(row_attributes))
        status = row_status if row_status != "active" else status
    return {"name": name, "attributes": attributes, "wanted": status}


def _apply_existing(store: "SqliteStore", target: MailingList, now: str,
                    summary: ImportSummary) -> None:
    conn = store.conn
    for sub_id, group in _existing_groups(conn):
        current = conn.execute(
            "SELECT s.id, s.email_key, s.name AS old_name, s.attributes AS old_attributes, "
            "s.status, m.status AS membership FROM subscribers s LEFT JOIN memberships m "
            "ON m.subscriber_id = s.id AND m.list_id = ? WHERE s.id = ?",
            (target.id, sub_id)).fetchone()
        row = {**dict(current), **merge_rows(group)}
        row["old_attributes"] = json.loads(row["old_attributes"])
        outcome = decide(row)
        _apply_one(store, target, row, outcome, now)
        field = {"opt-out": "updated"}.get(outcome, outcome).replace("-", "_")
        setattr(summary, field, getattr(summary, field) + 1)
        summary.duplicates += len(group) - 1


def decide(row: dict) -> str:
    """The outcome for an existing subscriber named in the file (pure: the consent rules).

    ``row``: wanted (the file's status), name, attributes, and the stored status,
    membership (on the target list, or None), old_name, old_attributes. An opt-out in the
    file is applied (honouring it never overrides consent); an opted-out subscriber, or one
    who left this list, is never brought back by an import."""
    wanted, status, membership = row["wanted"], row["status"], row["membership"]
    if wanted in OPTED_OUT:
        if status == wanted or status in ("bounced", "complained"):
            return "unchanged" if membership in (None, "unsubscribed") else "opt-out"
        return "opt-out"
    if status in OPTED_OUT or membership == "unsubscribed":
        return "kept-by-consent"
    merged = {**row["old_attributes"], **row["attributes"]}
    if ((row["name"] and row["name"] != row["old_name"])
            or merged != row["old_attributes"]
            or (wanted == "active" and (status != "active" or membership != "active"))
            or membership is None):
        return "updated"
    return "unchanged"


def _apply_one(store: "SqliteStore", target: MailingList, row: dict, outcome: str,
               now: str) -> None:
    conn, sub_id = store.conn, row["id"]
    if outcome == "opt-out":
        if row["status"] not in ("bounced", "complained"):
            conn.execute("UPDATE subscribers SET status = ?, unsubscribed_at = ? WHERE id = ?",
                         (row["wanted"], now, sub_id))
        store._set_membership(sub_id, target.id, "unsubscribed", now)
        if row["wanted"] != "unsubscribed":
            conn.execute("INSERT INTO suppressions (email_hash, email, reason, created_at) "
                         "VALUES (?, ?, ?, ?) ON CONFLICT (email_hash) DO NOTHING",
                         (address_hash(row["email_key"]), row["email_key"], row["wanted"], now))
    elif outcome == "updated":
        merged = {**row["old_attributes"], **row["attributes"]}
        conn.execute("UPDATE subscribers SET name = ?, attributes = ? WHERE id = ?",
                     (row["name"] or row["old_name"], json.dumps(merged, ensure_ascii=False),
                      sub_id))
        if row["wanted"] == "active" and row["status"] != "active":
            conn.execute("UPDATE subscribers SET status = 'active', confirmed_at = ?, "
                         "unsubscribed_at = NULL WHERE id = ?", (now, sub_id))
        if row["membership"] != "active":
            membership = "unconfirmed" if row["wanted"] == "unconfirmed" else "active"
            store._set_membership(sub_id, target.id, membership, now)


def erase(store: "SqliteStore", address: Address) -> bool:
    """Delete everything personal about ``address``; keep only its hash on the suppression
    list so that no later import or sign-up can bring it back."""
    from newsletter.store.sqlite import utc_now

    forms = sorted({address.key, address.email.lower(), address.ascii_email.lower()})
    marks = ", ".join("?" * len(forms))
    with store.transaction() as conn:
        row = conn.execute("SELECT id FROM subscribers WHERE email_key = ?",
                           (address.key,)).fetchone()
        sub_id = row["id"] if row else None
        found = sub_id is not None
        found |= conn.execute(
            f"UPDATE deliveries SET email = NULL WHERE subscriber_id = ? OR lower(email) IN ({marks})",
            (sub_id, *forms)).rowcount > 0
        found |= conn.execute(
            f"UPDATE events SET email = NULL, payload = '{{\"erased\": true}}' "
            f"WHERE lower(email) IN ({marks})", forms).rowcount > 0
        # Provider messages quote the address too (errors, undecodable notifications).
        mentions = " OR ".join(["instr(lower({col}), ?) > 0"] * len(forms))
        conn.execute(f"UPDATE deliveries SET last_error = 'erased' "
                     f"WHERE {mentions.format(col='last_error')}", forms)
        conn.execute(f"UPDATE dead_letters SET body = '{{\"erased\": true}}' "
                     f"WHERE {mentions.format(col='body')}", forms)
        if sub_id is not None:
            conn.execute("DELETE FROM subscribers WHERE id = ?", (sub_id,))
        found |= conn.execute("SELECT 1 FROM suppressions WHERE email_hash = ?",
                              (address.hash,)).fetchone() is not None
        conn.execute(
            "INSERT INTO suppressions (email_hash, email, reason, created_at) "
            "VALUES (?, NULL, 'erased', ?) ON CONFLICT (email_hash) DO UPDATE SET email = NULL",
            (address.hash, utc_now()))
    return found
