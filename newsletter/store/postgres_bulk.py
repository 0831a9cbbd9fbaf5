"""The first import into an empty PostgreSQL database: COPY straight into ``subscribers``, then
index and check once.

With no subscriber and no suppression yet there is nothing to check a row against, so inside
the import's transaction (everything below is undone by a rollback, DDL included):

- the unique address index is dropped, the rows are copied into ``subscribers`` in file order
  with ``COPY`` (ids numbered on the way, the identity sequence moved once) (while Python parses the file, the server stores the previous rows), and the
  index is built again in one sort. Duplicates within the file make that fail (inside a
  savepoint); they are then merged (the last row kept whole: its spelling, name and attributes; an
  opt-out in any row wins; the first id stays; ``sqlite_import.merge_rows``) and the index is built again;
- the memberships' foreign keys and indexes are dropped while the list's memberships are added
  (a second ``COPY``, from the runs of statuses the first one saw; after a merge of duplicates,
  one ``INSERT … SELECT``), then added back, which checks every row in one join instead of two
  trigger calls per row.

The cost: until the import commits, readers of ``subscribers`` and ``memberships`` wait (the
DDL locks them). Only the first import into an empty database takes this road; every later one
is the general path (``newsletter.store.postgres_import``).
"""

from __future__ import annotations

import itertools
from itertools import repeat
import json
from collections.abc import Iterable

from newsletter.store import pg, sqlite_bulk, sqlite_import
from newsletter.store.base import ImportRow, ImportSummary
from newsletter.store.models import MailingList

KEY_INDEX = "subscribers_by_key"
_CREATE_KEY_INDEX = f"CREATE UNIQUE INDEX {KEY_INDEX} ON subscribers (email_key)"
MEMBERSHIP_INDEX = "memberships_by_list"
_CREATE_MEMBERSHIP_INDEX = (f"CREATE INDEX {MEMBERSHIP_INDEX} ON memberships "
                            "(list_id, subscriber_id, status)")
_FOREIGN_KEYS = {
    "memberships_subscriber_fk": "FOREIGN KEY (subscriber_id) REFERENCES subscribers (id) "
                                 "ON DELETE CASCADE",
    "memberships_list_fk": "FOREIGN KEY (list_id) REFERENCES lists (id) ON DELETE CASCADE",
}
_COPY = ("COPY subscribers (id, email_key, email, name, attributes, status, source, created_at, "
         "confirmed_at, unsubscribed_at, uid) FROM STDIN")
_COPY_TYPES = ("int8", "text", "text", "text", "text", "text", "text", "text", "text", "text",
               "bytea")  # binary COPY (pg.copy_rows)
_OPTED_OUT_SQL = "('unsubscribed', 'bounced', 'complained')"
_BATCH = 5000
_COPY_MEMBERSHIPS = ("COPY memberships (subscriber_id, list_id, status, created_at, confirmed_at, "
                     "unsubscribed_at) FROM STDIN")
_MEMBERSHIP_TYPES = ("int8", "int8", "text", "text", "text", "text")
_MAX_RUNS = 1000  # statuses changing more often than this: memberships by INSERT … SELECT
SORT_MEMORY = "256MB"  # server memory for this import's sorts (a million keys fit)


def can_bulk_load(conn: pg.PgConnection) -> bool:
    """Whether the address index and the memberships' foreign keys are the named ones this
    module drops and re-adds."""
    index = conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                         "AND indexname = ?", (KEY_INDEX,)).fetchone()
    keys = {r[0] for r in conn.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'memberships'::regclass "
        "AND contype = 'f'")}
    return (index is not None and "UNIQUE INDEX" in index[0]
            and keys == set(_FOREIGN_KEYS))


def bulk_load(conn: pg.PgConnection, rows: Iterable[ImportRow], target: MailingList,
              source: str, now: str, summary: ImportSummary) -> None:
    """Copy ``rows`` into the empty ``subscribers`` table, index, merge duplicates, add the
    memberships. The caller holds the transaction."""
    import psycopg

    # for this transaction only: sort the index builds and the key checks in memory (the
    # server's defaults spill a million keys to temporary files)
    conn.execute(f"SET LOCAL maintenance_work_mem = '{SORT_MEMORY}'")
    conn.execute(f"SET LOCAL work_mem = '{SORT_MEMORY}'")
    for name in _FOREIGN_KEYS:
        conn.execute(f"ALTER TABLE memberships DROP CONSTRAINT {name}")
    conn.execute(f"DROP INDEX {KEY_INDEX}")
    statuses: set[str] = set()
    seen = statuses.add
    runs: list[tuple[int, str]] = []  # (first id, status) of each run of rows of one status

    # Ids numbered here, in file order, from the identity sequence's next value (nobody else
    # can insert subscribers: we hold the write lock): the sequence is moved once afterwards
    # instead of being called once per row, which more than doubled the COPY's time.
    first_id = conn.execute("SELECT nextval(pg_get_serial_sequence('subscribers', 'id'))"
                            ).fetchone()[0]

    def shaped():
        uids = pg.random_uids()
        last = None
        for new_id, (key, _line, email, name, attributes, status) in enumerate(rows, first_id):
            if status != last:
                seen(status)
                last = status
                if len(runs) <= _MAX_RUNS:
                    runs.append((new_id, status))
            yield (new_id, key, email, name, attributes, status, source, now,
                   now if status == "active" else None,
                   None if status == "active" or status == "unconfirmed" else now, next(uids))

    sent = pg.copy_rows(conn, _COPY, shaped(), _COPY_TYPES)
    if sent:
        conn.execute("SELECT setval(pg_get_serial_sequence('subscribers', 'id'), ?)",
                     (first_id + sent - 1,))
    conn.execute("SAVEPOINT key_index")
    try:
        conn.execute(_CREATE_KEY_INDEX)
        added = sent
    except psycopg.errors.UniqueViolation:  # duplicates within the file
        conn.execute("ROLLBACK TO SAVEPOINT key_index")
        _merge_duplicates(conn)
        conn.execute(_CREATE_KEY_INDEX)
        added = conn.execute("SELECT count(*) FROM subscribers").fetchone()[0]
    conn.execute("RELEASE SAVEPOINT key_index")
    summary.added += added
    summary.duplicates += sent - added
    # the memberships table is empty too (no subscriber yet): its indexes are built once,
    # after the rows, instead of being kept up to date row by row
    conn.execute("ALTER TABLE memberships DROP CONSTRAINT memberships_pkey")
    conn.execute(f"DROP INDEX {MEMBERSHIP_INDEX}")
    if added == sent and len(runs) <= _MAX_RUNS:
        # every id from first_id on is a subscriber, its status known from the runs: the
        # memberships are COPYed in (batched inserts) rather than INSERT … SELECTed (one heap
        # insert and WAL record per row), a third less of the server's time
        pg.copy_rows(conn, _COPY_MEMBERSHIPS, _memberships(runs, first_id + sent, target.id, now),
                     _MEMBERSHIP_TYPES)
    else:  # duplicates merged (ids deleted) or statuses mixed row by row: read them back
        sqlite_bulk.add_memberships(conn, target, 0, now)
    conn.execute("ALTER TABLE memberships ADD CONSTRAINT memberships_pkey "
                 "PRIMARY KEY (subscriber_id, list_id)")
    conn.execute(_CREATE_MEMBERSHIP_INDEX)
    for name, definition in _FOREIGN_KEYS.items():
        # Adding a foreign key checks every row with one anti-join. For the subscribers',
        # a hash join hashes the million subscribers first (0.5 s of CPU here); a merge join
        # walks the two primary-key indexes just built, in order (half that). A planner
        # setting, for this statement only: the check and its result are the same.
        merge = name == "memberships_subscriber_fk"
        if merge:
            conn.execute("SET LOCAL enable_hashjoin = off")
        conn.execute(f"ALTER TABLE memberships ADD CONSTRAINT {name} {definition}")
        if merge:
            conn.execute("SET LOCAL enable_hashjoin TO DEFAULT")
    if "bounced" in statuses or "complained" in statuses:
        sqlite_bulk.add_suppressions(conn, 0, now)


def _memberships(runs: list[tuple[int, str]], end: int, list_id: int, now: str):
    """The memberships ``sqlite_bulk.add_memberships`` would add for subscribers numbered
    from ``runs[0]``'s id to ``end`` (exclusive), whose statuses come in ``runs``."""
    for (start, status), (stop, _next) in zip(runs, [*runs[1:], (end, None)]):
        opted_in = status == "active" or status == "unconfirmed"
        yield from zip(range(start, stop), repeat(list_id),
                       repeat(status if opted_in else "unsubscribed"), repeat(now),
                       repeat(now if status == "active" else None),
                       repeat(None if opted_in else now))


def _merge_duplicates(conn: pg.PgConnection) -> None:
    """Fold every later row of an address into its first one, then delete the later ones."""
    import psycopg

    conn.execute("CREATE TEMP TABLE bulk_dups ON COMMIT DROP AS "
                 "SELECT email_key, id, name, attributes, status, id AS line, email FROM subscribers "
                 "WHERE email_key IN (SELECT email_key FROM subscribers GROUP BY email_key "
                 "HAVING count(*) > 1)")
    updates, deletes = [], []
    with psycopg.RawServerCursor(conn.raw, "nl_bulk_dups") as cur:
        cur.execute("SELECT * FROM bulk_dups ORDER BY email_key, id")
        rows = itertools.chain.from_iterable(iter(lambda: cur.fetchmany(_BATCH), []))
        for _key, group in itertools.groupby(rows, key=lambda r: r[0]):
            group = [tuple(r) for r in group]
            merged = sqlite_import.merge_rows(group)
            updates.append((merged["name"], json.dumps(merged["attributes"], ensure_ascii=False),
                            merged["wanted"], group[0][1], group[-1][6]))
            deletes.extend((r[1],) for r in group[1:])
            if len(updates) >= _BATCH:
                _write(conn, updates, deletes)
                updates, deletes = [], []
    _write(conn, updates, deletes)


def _write(conn: pg.PgConnection, updates: list[tuple], deletes: list[tuple]) -> None:
    if updates:
        conn.executemany(
            "UPDATE subscribers SET name = ?1, attributes = ?2, status = ?3, email = ?5, "
            "confirmed_at = CASE WHEN ?3 = 'active' THEN created_at END, "
            f"unsubscribed_at = CASE WHEN ?3 IN {_OPTED_OUT_SQL} THEN created_at END "
            "WHERE id = ?4", updates)
    if deletes:
        conn.executemany("DELETE FROM subscribers WHERE id = ?", deletes)
