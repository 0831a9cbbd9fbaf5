"""Bulk import and erasure for the SQLite store.

An import is one transaction: rows are staged in a temporary table (which merges duplicates by
key and keeps memory flat however large the file), classified against the suppression list and
the existing subscribers, then applied with set-based SQL. New subscribers, the common case,
never make a round trip through Python; existing ones go through ``decide`` in batches.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from newsletter.addresses import Address
from newsletter.store.base import ImportRow, ImportSummary
from newsletter.store.models import MailingList

if TYPE_CHECKING:
    from newsletter.store.sqlite import SqliteStore

_BATCH = 5000
OPTED_OUT = ("unsubscribed", "bounced", "complained")

_STAGE = """
CREATE TEMP TABLE import_rows (
    key TEXT NOT NULL UNIQUE, line INTEGER NOT NULL, email TEXT NOT NULL, hash TEXT NOT NULL,
    name TEXT NOT NULL, attributes TEXT NOT NULL, status TEXT NOT NULL,
    dups INTEGER NOT NULL DEFAULT 0, sub_id INTEGER, outcome TEXT
)"""

# A duplicate merges into the first occurrence: later non-empty values win.
_INSERT = """
INSERT INTO temp.import_rows (key, line, email, hash, name, attributes, status)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET
    dups = dups + 1,
    name = CASE WHEN excluded.name <> '' THEN excluded.name ELSE name END,
    attributes = CASE WHEN excluded.attributes = '{}' THEN attributes
                      ELSE json_patch(attributes, excluded.attributes) END,
    status = CASE WHEN excluded.status <> 'active' THEN excluded.status ELSE status END
"""

_MEMBERSHIP_STATUS = ("CASE status WHEN 'active' THEN 'active' WHEN 'unconfirmed' THEN "
                      "'unconfirmed' ELSE 'unsubscribed' END")


def import_rows(store: "SqliteStore", rows: Iterable[ImportRow], target: MailingList, *,
                dry_run: bool, source: str, summary: ImportSummary) -> ImportSummary:
    """Stage, classify and apply ``rows`` in one transaction (rolled back for a dry run)."""
    try:
        with store.transaction() as conn:
            conn.execute("DROP TABLE IF EXISTS temp.import_rows")
            conn.execute(_STAGE)
            rows = iter(rows)
            while batch := list(itertools.islice(rows, _BATCH)):
                conn.executemany(_INSERT, batch)
            _classify(conn)
            _apply_new(conn, target, source)
            _apply_existing(store, target)
            _count(conn, summary)
            conn.execute("DROP TABLE temp.import_rows")
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    return summary


class _DryRun(Exception):
    """Raised inside the transaction to roll a dry run back."""


def _classify(conn) -> None:
    if conn.execute("SELECT 1 FROM suppressions LIMIT 1").fetchone():
        conn.execute("UPDATE temp.import_rows SET outcome = 'kept-by-consent' "
                     "WHERE hash IN (SELECT email_hash FROM suppressions)")
    if conn.execute("SELECT 1 FROM subscribers LIMIT 1").fetchone():
        conn.execute("UPDATE temp.import_rows SET sub_id = (SELECT id FROM subscribers s "
                     "WHERE s.email_key = import_rows.key) WHERE outcome IS NULL")
    conn.execute("UPDATE temp.import_rows SET outcome = 'added' "
                 "WHERE outcome IS NULL AND sub_id IS NULL")


def _count(conn, summary: ImportSummary) -> None:
    summary.duplicates += conn.execute(
        "SELECT coalesce(sum(dups), 0) FROM temp.import_rows").fetchone()[0]
    for outcome, n in conn.execute(
            "SELECT outcome, count(*) FROM temp.import_rows WHERE outcome IS NOT NULL "
            "GROUP BY outcome"):
        field = outcome.replace("-", "_")
        setattr(summary, field, getattr(summary, field) + n)


def _apply_new(conn, target: MailingList, source: str) -> None:
    from newsletter.store.sqlite import utc_now

    now = utc_now()
    first_new = conn.execute("SELECT coalesce(max(id), 0) FROM subscribers").fetchone()[0]
    # One INSERT … SELECT in file order hands out consecutive ids, so the memberships of the
    # new subscribers are exactly the id range above ``first_new``.
    conn.execute(
        "INSERT INTO subscribers (email, email_key, name, attributes, status, source, created_at, "
        "confirmed_at, unsubscribed_at) "
        "SELECT email, key, name, attributes, status, ?1, ?2, "
        "CASE WHEN status = 'active' THEN ?2 END, "
        "CASE WHEN status IN ('unsubscribed', 'bounced', 'complained') THEN ?2 END "
        "FROM temp.import_rows WHERE outcome = 'added' ORDER BY rowid", (source, now))
    conn.execute(
        "INSERT INTO memberships (subscriber_id, list_id, status, created_at, confirmed_at, "
        f"unsubscribed_at) SELECT id, ?1, {_MEMBERSHIP_STATUS}, ?2, confirmed_at, "
        "unsubscribed_at FROM subscribers WHERE id > ?3", (target.id, now, first_new))
    conn.execute(
        "INSERT INTO suppressions (email_hash, email, reason, created_at) "
        "SELECT hash, key, status, ?1 FROM temp.import_rows "
        "WHERE outcome = 'added' AND status IN ('bounced', 'complained') "
        "ON CONFLICT (email_hash) DO NOTHING", (now,))


def _apply_existing(store: "SqliteStore", target: MailingList) -> None:
    """Rows naming a subscriber already in the database, in batches of ``_BATCH`` rows."""
    conn, last = store.conn, 0
    while True:
        batch = conn.execute(
            "SELECT r.rowid AS rid, r.key, r.name, r.attributes, r.status AS wanted, s.id, "
            "s.name AS old_name, s.attributes AS old_attributes, s.status, m.status AS membership "
            "FROM temp.import_rows r JOIN subscribers s ON s.id = r.sub_id "
            "LEFT JOIN memberships m ON m.subscriber_id = s.id AND m.list_id = ? "
            "WHERE r.rowid > ? AND r.outcome IS NULL ORDER BY r.rowid LIMIT ?",
            (target.id, last, _BATCH)).fetchall()
        if not batch:
            return
        last = batch[-1]["rid"]
        for row in batch:
            _apply_one(store, target, row, decide(row))


def decide(row) -> str:
    """The outcome for a row naming an existing subscriber (pure: consent rules live here).

    An opt-out in the file is applied (honouring it never overrides consent); an opted-out
    subscriber, or one who left this list, is never brought back by an import."""
    wanted, status, membership = row["wanted"], row["status"], row["membership"]
    if wanted in OPTED_OUT:
        if status == wanted or status in ("bounced", "complained"):
            return "unchanged" if membership in (None, "unsubscribed") else "opt-out"
        return "opt-out"
    if status in OPTED_OUT or membership == "unsubscribed":
        return "kept-by-consent"
    merged = {**json.loads(row["old_attributes"]), **json.loads(row["attributes"])}
    if ((row["name"] and row["name"] != row["old_name"])
            or merged != json.loads(row["old_attributes"])
            or (wanted == "active" and (status != "active" or membership != "active"))
            or membership is None):
        return "updated"
    return "unchanged"


def _apply_one(store: "SqliteStore", target: MailingList, row, outcome: str) -> None:
    from newsletter.store.sqlite import utc_now

    conn, now, sub_id = store.conn, utc_now(), row["id"]
    if outcome == "opt-out":
        if row["status"] not in ("bounced", "complained"):
            conn.execute("UPDATE subscribers SET status = ?, unsubscribed_at = ? WHERE id = ?",
                         (row["wanted"], now, sub_id))
        store._set_membership(sub_id, target.id, "unsubscribed", now)
        if row["wanted"] != "unsubscribed":
            conn.execute("INSERT INTO suppressions (email_hash, email, reason, created_at) "
                         "SELECT hash, key, status, ? FROM temp.import_rows WHERE rowid = ? "
                         "ON CONFLICT (email_hash) DO NOTHING", (now, row["rid"]))
        outcome = "updated"
    elif outcome == "updated":
        merged = {**json.loads(row["old_attributes"]), **json.loads(row["attributes"])}
        conn.execute("UPDATE subscribers SET name = ?, attributes = ? WHERE id = ?",
                     (row["name"] or row["old_name"], json.dumps(merged, ensure_ascii=False),
                      sub_id))
        if row["wanted"] == "active" and row["status"] != "active":
            conn.execute("UPDATE subscribers SET status = 'active', confirmed_at = ?, "
                         "unsubscribed_at = NULL WHERE id = ?", (now, sub_id))
        membership = "unconfirmed" if row["wanted"] == "unconfirmed" else "active"
        if row["membership"] != "active":
            store._set_membership(sub_id, target.id, membership, now)
    conn.execute("UPDATE temp.import_rows SET outcome = ? WHERE rowid = ?", (outcome, row["rid"]))


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
        if sub_id is not None:
            conn.execute("DELETE FROM subscribers WHERE id = ?", (sub_id,))
        found |= conn.execute("SELECT 1 FROM suppressions WHERE email_hash = ?",
                              (address.hash,)).fetchone() is not None
        conn.execute(
            "INSERT INTO suppressions (email_hash, email, reason, created_at) "
            "VALUES (?, NULL, 'erased', ?) ON CONFLICT (email_hash) DO UPDATE SET email = NULL",
            (address.hash, utc_now()))
    return found
