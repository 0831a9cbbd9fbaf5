"""Bulk import and erasure for the PostgreSQL store.

An import is one transaction (all or nothing; a dry run is rolled back). The rows are streamed
into a temporary table with ``COPY … FROM STDIN`` (psycopg's ``cursor.copy``: no statement per
row, and memory stays flat however large the file) before the store's write lock is taken; then,
holding it, they are merged with set-based SQL:

1. rows whose address is on the suppression list are set aside (kept by consent);
2. rows naming an existing subscriber go through the same consent rules as on SQLite
   (``sqlite_import.decide``), one address at a time;
3. every other row is a new subscriber: one ``INSERT … SELECT DISTINCT ON (key)`` sorted by
   address (the index on it is then filled in order; the first spelling of an address wins);
   addresses the file names more than once are then merged in place: the last row kept whole
   (its spelling, name and attributes), an opt-out in any row winning (``sqlite_import.merge_rows``); their memberships and (for imported bounces and complaints)
   suppressions follow in one statement each (``sqlite_bulk.finish_new``).

A first import into an empty database (nothing to check against) takes a shorter road:
``newsletter.store.postgres_bulk``. Both give the same result (tested).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from newsletter.store import pg, postgres_bulk, sqlite_bulk, sqlite_import
from newsletter.store.base import ImportRow, ImportSummary
from newsletter.store.models import MailingList

if TYPE_CHECKING:
    from newsletter.store.postgres import PostgresStore

_BATCH = 5000
_OPTED_OUT_SQL = "('unsubscribed', 'bounced', 'complained')"

# line: the row's line in the file, i.e. its order; email NULL when it equals the key
_STAGE = """CREATE TEMP TABLE import_rows (
    key text COLLATE "C" NOT NULL, line bigint NOT NULL, email text, name text NOT NULL,
    attributes text NOT NULL, status text NOT NULL, uid bytea NOT NULL
) ON COMMIT DROP"""
_COPY = "COPY import_rows (key, line, email, name, attributes, status, uid) FROM STDIN"
_COPY_TYPES = ("text", "int8", "text", "text", "text", "text", "bytea")  # binary COPY
# ``addresses.address_hash`` in SQL (hex SHA-256 of the key's UTF-8 bytes; tested equal):
# what the suppression list is keyed by, computed by the server under the write lock, only
# when there are suppressions to check
ADDRESS_HASH_SQL = "encode(sha256(convert_to({}, 'UTF8')), 'hex') COLLATE \"C\""
# ids numbered from ?3 (the sequence's next value) in address order: one sequence update for
# the whole insert instead of one nextval() per row
_NEW = f"""
INSERT INTO subscribers (id, email_key, email, name, attributes, status, source, created_at,
                         confirmed_at, unsubscribed_at, uid)
SELECT ?3 - 1 + row_number() OVER (ORDER BY key), key, coalesce(email, key), name, attributes,
       status, ?1, ?2, CASE WHEN status = 'active' THEN ?2 END,
       CASE WHEN status IN {_OPTED_OUT_SQL} THEN ?2 END, uid
FROM (SELECT DISTINCT ON (key) * FROM import_rows r {{where}} ORDER BY key, line) first_rows"""


class _DryRun(Exception):
    """Raised inside the transaction to roll a dry run back."""


def import_rows(store: "PostgresStore", rows: Iterable[ImportRow], target: MailingList, *,
                dry_run: bool, source: str, summary: ImportSummary) -> ImportSummary:
    """Import ``rows`` in one transaction (rolled back for a dry run or on any exception).

    The rows are parsed and copied into the staging table BEFORE the store's write lock is
    taken, so sign-ups and unsubscribes from the web wait only for the set-based merge, not
    for reading the file."""
    from newsletter.store.db import utc_now

    now = utc_now()
    try:
        with store.transaction(locked=False) as conn:
            if _is_empty(conn) and postgres_bulk.can_bulk_load(conn):
                store.lock_writes()
                if _is_empty(conn):  # still, now that nobody else can write
                    postgres_bulk.bulk_load(conn, rows, target, source, now, summary)
                    if dry_run:
                        raise _DryRun
                    return summary
            # this transaction's sorts and hashes (a file's worth of addresses) in memory
            conn.execute(f"SET LOCAL work_mem = '{postgres_bulk.SORT_MEMORY}'")
            staged = _stage(conn, rows)
            conn.execute("ANALYZE import_rows")
            store.lock_writes()
            # read under the lock: what other writers committed before is visible now
            first_new = conn.execute("SELECT coalesce(max(id), 0) FROM subscribers").fetchone()[0]
            has_suppressions = conn.execute("SELECT 1 FROM suppressions LIMIT 1").fetchone()
            skip = []
            set_aside = 0  # rows blocked by the suppression list or naming a subscriber
            if has_suppressions:
                conn.execute("CREATE TEMP TABLE import_blocked ON COMMIT DROP AS "
                             "SELECT DISTINCT r.key FROM import_rows r "
                             "JOIN suppressions x ON x.email_hash = "
                             + ADDRESS_HASH_SQL.format("r.key"))
                set_aside += _count_blocked(conn, summary)
                skip.append("NOT EXISTS (SELECT 1 FROM import_blocked b WHERE b.key = r.key)")
            if first_new:
                set_aside += conn.execute(
                    "CREATE TEMP TABLE import_existing ON COMMIT DROP AS "
                    "SELECT r.key, s.id AS sub_id, r.name, r.attributes, r.status, r.line "
                    "FROM import_rows r JOIN subscribers s ON s.email_key = r.key"
                    + "".join(f" WHERE {c}" for c in skip[:1])).rowcount
                skip.append("NOT EXISTS (SELECT 1 FROM subscribers s WHERE s.email_key = r.key)")
            _insert_new(conn, skip, staged - set_aside, source, first_new, now, summary)
            sqlite_bulk.finish_new(conn, target, first_new, now)
            if first_new:
                _apply_existing(store, target, now, summary)
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    return summary


def _is_empty(conn: pg.PgConnection) -> bool:
    """No subscriber and no suppression: nothing to check an import against."""
    return conn.execute("SELECT NOT EXISTS (SELECT 1 FROM subscribers) AND "
                        "NOT EXISTS (SELECT 1 FROM suppressions)").fetchone()[0]


def _stage(conn: pg.PgConnection, rows: Iterable[ImportRow]) -> int:
    """Copy ``rows`` into the staging table; returns how many."""
    conn.execute(_STAGE)
    # ImportRow's fields, then a uid for the subscriber the row may become: the COPY's column
    # order. (No address hash: the server computes it under the write lock, when it is known
    # whether there is a suppression list to check.)
    uids = pg.random_uids()
    return pg.copy_rows(conn, _COPY, (r + (next(uids),) for r in rows), _COPY_TYPES)


def _count_blocked(conn: pg.PgConnection, summary: ImportSummary) -> int:
    """Count the blocked addresses in ``summary``; returns the rows naming them."""
    distinct, total = conn.execute(
        "SELECT count(DISTINCT r.key), count(*) FROM import_rows r "
        "JOIN import_blocked b ON b.key = r.key").fetchone()
    summary.kept_by_consent += distinct
    summary.duplicates += total - distinct
    return total


def _insert_new(conn: pg.PgConnection, skip: list[str], sent: int, source: str, first_new: int,
                now: str, summary: ImportSummary) -> None:
    """``sent``: the staged rows ``skip`` leaves (every row but the blocked ones and those
    naming a subscriber: counted as those were set aside, not by another join)."""
    where = ("WHERE " + " AND ".join(skip)) if skip else ""
    first_id = conn.execute("SELECT nextval(pg_get_serial_sequence('subscribers', 'id'))"
                            ).fetchone()[0]
    added = conn.execute(_NEW.format(where=where), (source, now, first_id)).rowcount
    if added:  # the next id after the ones just used (we hold the write lock)
        conn.execute("SELECT setval(pg_get_serial_sequence('subscribers', 'id'), ?)",
                     (first_id + added - 1,))
    summary.added += added
    summary.duplicates += sent - added
    if sent != added:
        _merge_duplicates(conn, first_new)


def _merge_duplicates(conn: pg.PgConnection, first_new: int) -> None:
    """Fold every row of an address the file names more than once into the subscriber its
    first row created: the last row kept whole (its spelling, name and attributes), an opt-out
    in any row wins (``sqlite_import.merge_rows``), as on SQLite."""
    conn.execute("CREATE TEMP TABLE import_dups ON COMMIT DROP AS "
                 "SELECT r.key, s.id, r.name, r.attributes, r.status, r.line, "
                 "coalesce(r.email, r.key) AS email "
                 "FROM import_rows r JOIN subscribers s ON s.email_key = r.key "
                 "WHERE s.id > ? AND r.key IN (SELECT key FROM import_rows GROUP BY key "
                 "HAVING count(*) > 1)", (first_new,))
    updates = []
    for _key, group in _groups(conn, "SELECT * FROM import_dups ORDER BY key, line"):
        merged = sqlite_import.merge_rows(group)
        updates.append((merged["name"], json.dumps(merged["attributes"], ensure_ascii=False),
                        merged["wanted"], group[0][1], group[-1][6]))
        if len(updates) >= _BATCH:
            _write_merged(conn, updates)
            updates = []
    _write_merged(conn, updates)


def _write_merged(conn: pg.PgConnection, updates: list[tuple]) -> None:
    if updates:
        conn.executemany(
            "UPDATE subscribers SET name = ?1, attributes = ?2, status = ?3, email = ?5, "
            "confirmed_at = CASE WHEN ?3 = 'active' THEN created_at END, "
            f"unsubscribed_at = CASE WHEN ?3 IN {_OPTED_OUT_SQL} THEN created_at END "
            "WHERE id = ?4", updates)


def _groups(conn: pg.PgConnection, sql: str) -> Iterator[tuple[str, list]]:
    """Rows ``(key, id, name, attributes, status, line)`` grouped by key, streamed through a
    server-side cursor (inside the import's transaction)."""
    import psycopg

    with psycopg.RawServerCursor(conn.raw, "nl_import_groups") as cur:
        cur.itersize = _BATCH
        cur.execute(sql)
        rows = itertools.chain.from_iterable(iter(lambda: cur.fetchmany(_BATCH), []))
        for key, group in itertools.groupby(rows, key=lambda r: r[0]):
            yield key, [tuple(r) for r in group]


def _apply_existing(store: "PostgresStore", target: MailingList, now: str,
                    summary: ImportSummary) -> None:
    conn = store.conn
    # (a cursor reads the table as it was when opened: the updates below do not disturb it)
    for _key, group in _groups(conn, "SELECT * FROM import_existing ORDER BY key, line"):
        sub_id = group[0][1]
        current = conn.execute(
            "SELECT s.id, s.email_key, s.name AS old_name, s.attributes AS old_attributes, "
            "s.status, m.status AS membership FROM subscribers s LEFT JOIN memberships m "
            "ON m.subscriber_id = s.id AND m.list_id = ? WHERE s.id = ?",
            (target.id, sub_id)).fetchone()
        row = {**dict(current), **sqlite_import.merge_rows(group)}
        row["old_attributes"] = json.loads(row["old_attributes"])
        outcome = sqlite_import.decide(row)
        sqlite_import._apply_one(store, target, row, outcome, now)
        field = {"opt-out": "updated"}.get(outcome, outcome).replace("-", "_")
        setattr(summary, field, getattr(summary, field) + 1)
        summary.duplicates += len(group) - 1
