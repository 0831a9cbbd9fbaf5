"""Bulk import and erasure for the SQLite store.

Every row is first appended to a temporary table, before the write lock is taken (no index: an
append is cheap, and memory stays flat however large the file). Up to ``CHUNK`` addresses are
then applied in one transaction; more, in chunks of ``CHUNK`` addresses in address order, each
its own short transaction with an undo journal, so that web writers wait for a chunk at most
(see ``import_rows``). Rows are then checked against
the suppression list and the existing subscribers with set-based SQL; new addresses go into
``subscribers`` with one INSERT … SELECT sorted by address, so that the unique index on the
address is built by appending instead of by random inserts (the difference between seconds
and minutes for a million rows), merging duplicates as they meet; their memberships follow in
one more statement. Rows naming an existing subscriber go through the consent rules in
``decide``, grouped by address.

A first import into an empty database (no subscriber, no suppression: nothing to check, and
nobody yet whose unsubscribe could wait) takes a shorter road in one transaction, whatever its
size: ``newsletter.store.sqlite_bulk``. All
roads give the same result (tested).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from newsletter.audience.addresses import Address, address_hash
from newsletter.store.base import ImportRow, ImportSummary
from newsletter.store import sqlite_bulk
from newsletter.store.sqlite_bulk import finish_new
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

# Merging a duplicate: the later row is kept whole (its spelling of the address, its name and
# attributes: never one row's spelling with another's values), an opt-out wins. In an upsert
# every unqualified column is the stored row's value; excluded.* is the incoming one.
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
    email = excluded.email,
    name = excluded.name,
    attributes = excluded.attributes,
    status = {_STATUS},
    confirmed_at = CASE WHEN {_STATUS} = 'active' THEN subscribers.created_at END,
    unsubscribed_at = CASE WHEN {_STATUS} IN {_OPTED_OUT_SQL} THEN subscribers.created_at END
WHERE subscribers.id > ?3"""


def import_rows(store: "SqliteStore", rows: Iterable[ImportRow], target: MailingList, *,
                dry_run: bool, source: str, summary: ImportSummary) -> ImportSummary:
    """Import ``rows``: all or nothing (rolled back for a dry run or on any exception).

    Reading, parsing, validating and hashing the file happen before the write lock is taken:
    the rows go to a TEMP table (this connection's own temporary database, which locks nothing
    of the main one). Up to ``CHUNK`` addresses are then applied in one short transaction; a
    larger file in chunks of ``CHUNK`` addresses (in address order), each its own transaction
    journalled for undo, so that web writers (a one-click unsubscribe) wait for one chunk at
    most, and a failure — or a crash, found when the database is next opened — is undone. (A
    first import into an empty database stays one transaction: see ``_chunk_boundaries``.)"""
    from newsletter.store.db import utc_now

    now = utc_now()
    recover_imports(store)
    try:
        _stage_unlocked(store.conn, rows)
        if not dry_run:
            boundaries = _chunk_boundaries(store.conn)
            if boundaries is not None:
                _import_in_chunks(store, target, source, now, summary, boundaries)
                return summary
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
        store.conn.execute("DROP TABLE IF EXISTS temp.import_all")
    return summary


# addresses per transaction of a large import (about 0.3 s of write lock each); the environment
# variable is a test hook
CHUNK = int(os.environ.get("NEWSLETTER_IMPORT_CHUNK") or 50_000)


def _chunk_boundaries(conn) -> list[tuple[int, int]] | None:
    """Row ranges of ``temp.import_all`` (the staged rows sorted by address), one per chunk of
    about ``CHUNK`` rows, never splitting an address; None when one transaction will do (at
    most ``CHUNK`` rows, or a first import into an empty database: its bulk road appends and
    indexes in one go, and there is nobody yet whose unsubscribe could wait). Outside the lock."""
    total = conn.execute("SELECT count(*) FROM temp.import_rows").fetchone()[0]
    if total <= CHUNK or (not conn.execute("SELECT 1 FROM subscribers LIMIT 1").fetchone()
                          and not conn.execute("SELECT 1 FROM suppressions LIMIT 1").fetchone()):
        return None
    conn.execute("DROP TABLE IF EXISTS temp.import_all")
    conn.execute("CREATE TEMP TABLE import_all AS SELECT * FROM temp.import_rows ORDER BY key, rowid")
    conn.execute("DROP TABLE temp.import_rows")
    ranges, first = [], 1
    while first <= total:
        last = min(total, first + CHUNK - 1)
        if last < total:  # the chunk ends after the last row of its last address
            key = conn.execute("SELECT key FROM temp.import_all WHERE rowid = ?", (last,)).fetchone()[0]
            after = conn.execute("SELECT rowid FROM temp.import_all WHERE rowid > ? AND key <> ? ORDER BY rowid "
                                 "LIMIT 1", (last, key)).fetchone()
            last = after[0] - 1 if after else total
        ranges.append((first, last))
        first = last + 1
    return ranges


def _import_in_chunks(store: "SqliteStore", target: MailingList, source: str, now: str,
                      summary: ImportSummary, boundaries: list[tuple[int, int]]) -> None:
    """Each chunk: its rows copied into ``temp.import_rows`` (no lock), then applied in one
    transaction together with its undo journal. Any exception undoes the chunks done so far."""
    import_id = _register_import(store, target)
    try:
        for first, last in boundaries:
            conn = store.conn
            conn.execute("DROP TABLE IF EXISTS temp.import_rows")
            conn.execute("CREATE TEMP TABLE import_rows AS SELECT * FROM temp.import_all "
                         "WHERE rowid BETWEEN ? AND ?", (first, last))
            with _sort_threads(conn), store.transaction():
                _apply_chunk(store, target, source, now, summary, import_id)
        with store.transaction() as conn:  # the moment the import counts as done
            conn.execute("UPDATE imports SET state = 'done' WHERE id = ?", (import_id,))
    except BaseException:
        try:
            undo_import(store, import_id)
        except Exception:  # e.g. the disk is still full: the next import or send undoes it
            pass
        raise
    _drop_journal(store, import_id)


def _apply_chunk(store: "SqliteStore", target: MailingList, source: str, now: str,
                 summary: ImportSummary, import_id: int) -> None:
    """The one-transaction import, for the rows of this chunk, plus its undo journal."""
    conn = store.conn
    first_new = conn.execute("SELECT coalesce(max(id), 0) FROM subscribers").fetchone()[0]
    conn.execute("UPDATE temp.import_rows SET blocked = 1 WHERE hash IN (SELECT email_hash FROM suppressions)")
    if first_new:
        conn.execute("UPDATE temp.import_rows SET sub_id = s.id FROM subscribers s "
                     "WHERE s.email_key = import_rows.key AND import_rows.blocked = 0")
        conn.execute(_JOURNAL_BEFORE, (import_id, target.id))
    _insert_new(conn, target, source, first_new, now, summary)
    # holding the write lock, the ids this chunk added are exactly first_new+1 … max(id)
    conn.execute("INSERT INTO import_undo (import_id, kind, subscriber_id, last_id) SELECT ?1, 'new', ?2 + 1, max(id) "
                 "FROM subscribers WHERE id > ?2 HAVING count(*) > 0", (import_id, first_new))
    _count_blocked(conn, summary)
    if first_new:
        _apply_existing(store, target, now, summary)
    conn.execute("UPDATE imports SET heartbeat_at = ? WHERE id = ?", (time.time(), import_id))


_JOURNAL_BEFORE = """
INSERT INTO import_undo (import_id, subscriber_id, kind, before)
SELECT ?1, s.id, 'changed', json_object(
    'name', s.name, 'attributes', s.attributes, 'status', s.status, 'confirmed_at', s.confirmed_at,
    'unsubscribed_at', s.unsubscribed_at, 'membership', (
        SELECT json_object('status', m.status, 'created_at', m.created_at,
                           'confirmed_at', m.confirmed_at, 'unsubscribed_at', m.unsubscribed_at)
        FROM memberships m WHERE m.subscriber_id = s.id AND m.list_id = ?2))
FROM subscribers s WHERE s.id IN (SELECT sub_id FROM temp.import_rows WHERE sub_id IS NOT NULL)"""


def _register_import(store: "SqliteStore", target: MailingList) -> int:
    import socket

    from newsletter.send.liveness import process_key
    from newsletter.store.db import utc_now

    with store.transaction() as conn:
        cur = conn.execute("INSERT INTO imports (list_id, host, pid, process_key, heartbeat_at, started_at) "
                           "VALUES (?, ?, ?, ?, ?, ?)", (target.id, socket.gethostname(), os.getpid(),
                                                         process_key(os.getpid()), time.time(), utc_now()))
        return cur.lastrowid


def _drop_journal(store: "SqliteStore", import_id: int) -> None:
    """A finished import's journal, deleted a chunk at a time (the import already counts)."""
    while True:
        with store.transaction() as conn:
            gone = conn.execute("DELETE FROM import_undo WHERE seq IN (SELECT seq FROM import_undo "
                                "WHERE import_id = ? LIMIT ?)", (import_id, CHUNK)).rowcount
            if not gone:
                conn.execute("DELETE FROM imports WHERE id = ?", (import_id,))
                return


_RESTORE_SUBSCRIBER = f"""
UPDATE subscribers SET name = ?2 ->> 'name', attributes = ?2 ->> 'attributes',
    status = CASE WHEN status IN {_OPTED_OUT_SQL} THEN status ELSE ?2 ->> 'status' END,
    confirmed_at = CASE WHEN status IN {_OPTED_OUT_SQL} THEN confirmed_at ELSE ?2 ->> 'confirmed_at' END,
    unsubscribed_at = CASE WHEN status IN {_OPTED_OUT_SQL} THEN unsubscribed_at ELSE ?2 ->> 'unsubscribed_at' END
WHERE id = ?1"""
_RESTORE_MEMBERSHIP = """
UPDATE memberships SET
    status = CASE WHEN status = 'unsubscribed' THEN status ELSE ?3 ->> '$.membership.status' END,
    confirmed_at = CASE WHEN status = 'unsubscribed' THEN confirmed_at ELSE ?3 ->> '$.membership.confirmed_at' END,
    unsubscribed_at = CASE WHEN status = 'unsubscribed' THEN unsubscribed_at
                           ELSE ?3 ->> '$.membership.unsubscribed_at' END
WHERE subscriber_id = ?1 AND list_id = ?2"""


def undo_import(store: "SqliteStore", import_id: int) -> None:
    """Take back what an unfinished import wrote, newest first, a chunk per transaction. It
    never re-subscribes anyone: a reader who opted out meanwhile (a one-click unsubscribe
    during the import) stays opted out, and an added reader who did so is kept; suppressions
    stay."""
    row = store.conn.execute("SELECT list_id FROM imports WHERE id = ?", (import_id,)).fetchone()
    if row is None:
        return
    list_id = row[0]
    while True:
        with store.transaction() as conn:
            batch = conn.execute("SELECT seq, subscriber_id, kind, before, last_id FROM import_undo "
                                 "WHERE import_id = ? ORDER BY seq DESC LIMIT ?", (import_id, CHUNK)).fetchall()
            if not batch:
                conn.execute("DELETE FROM imports WHERE id = ?", (import_id,))
                return
            new = [(r[1], r[4]) for r in batch if r[2] == "new"]
            conn.executemany(
                "DELETE FROM subscribers AS s WHERE s.id BETWEEN ?1 AND ?2 AND s.status IN ('active', 'unconfirmed') "
                "AND NOT EXISTS (SELECT 1 FROM memberships m WHERE m.subscriber_id = s.id "
                "AND m.status = 'unsubscribed')", new)
            changed = [(r[1], r[3]) for r in batch if r[2] == "changed"]
            conn.executemany(_RESTORE_SUBSCRIBER, changed)
            conn.executemany(_RESTORE_MEMBERSHIP, [(s, list_id, b) for s, b in changed
                                                   if json.loads(b).get("membership")])
            conn.executemany("DELETE FROM memberships WHERE subscriber_id = ? AND list_id = ? AND status <> "
                             "'unsubscribed'", [(s, list_id) for s, b in changed if not json.loads(b).get("membership")])
            conn.execute("DELETE FROM import_undo WHERE seq >= ? AND import_id = ?", (batch[-1][0], import_id))


def recover_imports(store: "SqliteStore", list_id: int | None = None) -> list[int]:
    """Finish the bookkeeping of imports whose process is gone: a finished one's journal is
    dropped, an unfinished one is undone. Returns the ids of imports still running (on
    ``list_id``, or any)."""
    from newsletter.send.liveness import worker_alive

    running = []
    for r in store.conn.execute("SELECT id, list_id, host, pid, process_key, heartbeat_at, state "
                                "FROM imports").fetchall():
        if r["state"] == "done":
            _drop_journal(store, r["id"])
        elif not worker_alive(r["host"], r["pid"], r["process_key"], r["heartbeat_at"]):
            undo_import(store, r["id"])
        elif list_id is None or r["list_id"] == list_id:
            running.append(r["id"])
    return running


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
    """Duplicates of one address merged: the last row's name and attributes (the values of one
    row, never a mix), an opt-out in any of them wins."""
    status = "active"
    for row in group:
        status = row[4] if row[4] != "active" else status
    last = group[-1]
    return {"name": last[2], "attributes": json.loads(last[3]), "wanted": status}


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
    from newsletter.store.db import utc_now

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
        mentions = " OR ".join([f"{store.FIND_IN}(lower({{col}}), ?) > 0"] * len(forms))
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
