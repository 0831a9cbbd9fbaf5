"""The first import into an empty database: append, then index.

With no subscriber and no suppression yet there is nothing to check a row against, so rows
are appended to ``subscribers`` in file order with the unique index on the address dropped,
and the index is built again afterwards in one sort: far cheaper than keeping a B-tree up to
date through a million random inserts (or sorting whole rows, as the general path does).
Duplicates within the file make the rebuild fail; they are then merged (the last row's spelling,
name and attributes, an opt-out wins, the first id stays) and the index is built again. The rows
are parsed and staged in a TEMP table before the write lock is taken; the rest runs inside the
import's (short) transaction: the DROP INDEX is undone by a rollback like any write.
"""

from __future__ import annotations

import itertools
import operator
import sqlite3

from newsletter.audience.addresses import address_hash
from newsletter.store.base import ImportSummary
from newsletter.store.models import MailingList

KEY_INDEX = "subscribers_by_key"
_CREATE_KEY_INDEX = f"CREATE UNIQUE INDEX {KEY_INDEX} ON subscribers(email_key)"
_BATCH = 5000
# Rows handed to one executemany: small enough that a batch's tuples and strings stay in the
# CPU cache (a million rows read and batched: 1.30 s at 256 a call, 1.64 s at 5000).
ROWS_PER_CALL = 256
_STATUS = operator.itemgetter(5)  # ImportRow.status
_OPTED_OUT_SQL = "('unsubscribed', 'bounced', 'complained')"
_APPEND = f"""
INSERT INTO subscribers (email_key, email, name, attributes, status, source, created_at,
                         confirmed_at, unsubscribed_at)
VALUES (?1, ?3, ?4, ?5, ?6, ?7, ?8, CASE WHEN ?6 = 'active' THEN ?8 END,
        CASE WHEN ?6 <> 'active' AND ?6 <> 'unconfirmed' THEN ?8 END)"""
# (comparisons, not IN (…): an IN list costs a table built at every execution, i.e. every row)


def can_bulk_load(conn: sqlite3.Connection) -> bool:
    """Whether the address index is the named one this module can drop and rebuild (a
    database made before it was named keeps using the general path)."""
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?",
                       (KEY_INDEX,)).fetchone()
    return row is not None and " ".join(row[0].split()) == _CREATE_KEY_INDEX


def bulk_load_staged(conn: sqlite3.Connection, target: MailingList, source: str, now: str,
                     summary: ImportSummary) -> None:
    """Append the rows staged in ``temp.import_rows`` (parsed before the write lock was taken) to
    the empty ``subscribers`` table in file order, then index, merge duplicates and add the
    memberships. The caller holds the transaction."""

    conn.execute(f"DROP INDEX {KEY_INDEX}")
    conn.execute(
        "INSERT INTO subscribers (email_key, email, name, attributes, status, source, created_at, "
        "confirmed_at, unsubscribed_at) SELECT key, coalesce(email, key), name, attributes, status, ?1, ?2, "
        "CASE WHEN status = 'active' THEN ?2 END, "
        "CASE WHEN status <> 'active' AND status <> 'unconfirmed' THEN ?2 END "
        "FROM temp.import_rows ORDER BY rowid", (source, now))
    sent = conn.execute("SELECT count(*) FROM temp.import_rows").fetchone()[0]
    try:
        conn.execute(_CREATE_KEY_INDEX)
        added = sent
    except sqlite3.IntegrityError:  # duplicates within the file
        _merge_duplicates(conn)
        conn.execute(_CREATE_KEY_INDEX)
        added = conn.execute("SELECT count(*) FROM subscribers").fetchone()[0]
    summary.added += added
    summary.duplicates += sent - added
    add_memberships(conn, target, 0, now)
    if conn.execute("SELECT 1 FROM subscribers WHERE status = 'bounced' OR status = 'complained' "
                    "LIMIT 1").fetchone():
        add_suppressions(conn, 0, now)


def _literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _merge_duplicates(conn: sqlite3.Connection) -> None:
    """Fold every later row of an address into its first one, then delete the later ones."""
    # copied aside first (in SQLite, not in memory), so that reading them back is unaffected
    # by the updates and deletes that follow
    conn.execute(
        "CREATE TEMP TABLE bulk_dups AS SELECT id, email_key, name, attributes, status, email "
        "FROM subscribers WHERE email_key IN (SELECT email_key FROM subscribers "
        "GROUP BY email_key HAVING count(*) > 1) ORDER BY email_key, id")
    cur = conn.execute("SELECT * FROM temp.bulk_dups ORDER BY rowid")
    groups = itertools.chain.from_iterable(iter(lambda: cur.fetchmany(_BATCH), []))
    for _key, group in itertools.groupby(groups, key=lambda r: r[1]):
        group = list(group)
        # the last row is kept whole (spelling, name, attributes: one row's, never a mix)
        first, last, status = group[0], group[-1], "active"
        for row in group:
            status = row[4] if row[4] != "active" else status
        conn.execute(
            "UPDATE subscribers SET name = ?1, attributes = ?2, status = ?3, email = ?5, "
            "confirmed_at = CASE WHEN ?3 = 'active' THEN created_at END, "
            f"unsubscribed_at = CASE WHEN ?3 IN {_OPTED_OUT_SQL} THEN created_at END "
            "WHERE id = ?4",
            (last[2], last[3], status, first[0], last[5]))
        conn.executemany("DELETE FROM subscribers WHERE id = ?", [(r[0],) for r in group[1:]])
    conn.execute("DROP TABLE temp.bulk_dups")


_MEMBERSHIP_STATUS = ("CASE status WHEN 'active' THEN 'active' WHEN 'unconfirmed' THEN "
                      "'unconfirmed' ELSE 'unsubscribed' END")


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
