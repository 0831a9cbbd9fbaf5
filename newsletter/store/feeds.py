"""Feed polling state for `newsletter gather`, on either engine: the ``feeds`` table (validators
for conditional GET, the last status), ``feed_entries`` (what each feed listed last time it
answered 200, so a 304 still lists its candidates) and ``gather_candidates`` (the numbered list
the last `gather` printed, which `gather --add 3 5 EDITION` reads) — and the one ledger question
`gather` asks: when did the last edition go out?

Plain data in and out (``PolledFeed``, ``StoredEntry``, ``ListedCandidate``); fetching, parsing
and choosing the candidates stay in ``newsletter.sources.gather``. The SQL is written once
(SQLite SQL with ``?`` placeholders, run on PostgreSQL by ``pg.PgConnection``); the one engine
fragment is the lock that queues two `gather` runs on PostgreSQL (SQLite's ``BEGIN IMMEDIATE``
already does).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from newsletter.store.connection import Connection, is_postgres, store_error, write

FEEDS_LOCK = 0x6E6C6664  # pg_advisory_xact_lock key of the feed state's writes ("nlfd")


class StoredEntry(NamedTuple):
    url: str
    url_key: str
    title: str
    summary: str
    published_at: str | None  # ISO 8601 UTC


class PolledFeed(NamedTuple):
    url: str
    status: str                        # "200", "304" or "error"
    title: str = ""
    etag: str | None = None
    last_modified: str | None = None
    error: str | None = None
    entries: Sequence[StoredEntry] = ()  # read when status is "200": they replace the stored ones


class ListedCandidate(NamedTuple):
    number: int
    feed_url: str
    url: str
    title: str
    summary: str
    published_at: str | None


def _errors():
    from newsletter.store.connection import errors

    return errors()


def _read(conn: Connection, sql: str, args: Sequence = ()) -> list:
    try:
        return conn.execute(sql, args).fetchall()
    except _errors() as err:
        raise store_error(err, conn, "cannot read") from None


def _lock(conn: Connection) -> None:
    if is_postgres(conn):
        conn.execute("SELECT pg_advisory_xact_lock(?)", (FEEDS_LOCK,))


def validators(conn: Connection) -> dict[str, tuple[str | None, str | None]]:
    """``url -> (etag, last_modified)`` each feed sent last time."""
    return {r[0]: (r[1], r[2]) for r in _read(conn, "SELECT url, etag, last_modified FROM feeds")}


def remember(conn: Connection, polled: Iterable[PolledFeed], now: str) -> None:
    """Store one poll of the feeds, in one transaction: validators and status for every feed
    (a failed feed keeps its validators and entries), and the entries of each feed that
    answered 200 in place of those it listed before."""
    with write(conn, exclusive=False):
        _lock(conn)
        for feed in polled:
            if feed.status == "error":
                conn.execute("INSERT INTO feeds (url, checked_at, status) VALUES (?, ?, ?) "
                             "ON CONFLICT (url) DO UPDATE SET checked_at = excluded.checked_at, "
                             "status = excluded.status", (feed.url, now, f"error: {feed.error}"))
                continue
            conn.execute(
                "INSERT INTO feeds (url, title, etag, last_modified, checked_at, status) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (url) DO UPDATE SET "
                "title = CASE WHEN excluded.title <> '' THEN excluded.title ELSE feeds.title END, "
                "etag = excluded.etag, last_modified = excluded.last_modified, "
                "checked_at = excluded.checked_at, status = excluded.status",
                (feed.url, feed.title, feed.etag, feed.last_modified, now, feed.status))
            if feed.status == "200":
                conn.execute("DELETE FROM feed_entries WHERE feed_url = ?", (feed.url,))
                rows = [(feed.url, e.url, e.url_key, e.title, e.summary, e.published_at)
                        for e in feed.entries]
                if rows:
                    conn.executemany(
                        "INSERT INTO feed_entries (feed_url, url, url_key, title, summary, "
                        "published_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", rows)


def stored_entries(conn: Connection, feed_url: str) -> list[StoredEntry]:
    """What ``feed_url`` listed the last time it answered 200."""
    return [StoredEntry(*r) for r in _read(
        conn, "SELECT url, url_key, title, summary, published_at FROM feed_entries "
              "WHERE feed_url = ? ORDER BY url_key", (feed_url,))]


def keep_candidates(conn: Connection, candidates: Iterable[ListedCandidate], listed_at: str) -> None:
    """Replace the last numbered list with ``candidates`` (one transaction: `--add` reads either
    the old list or the new one, whole)."""
    rows = [(c.number, c.feed_url, c.url, c.title, c.summary, c.published_at, listed_at)
            for c in candidates]
    with write(conn, exclusive=False):
        _lock(conn)
        conn.execute("DELETE FROM gather_candidates")
        if rows:
            conn.executemany(
                "INSERT INTO gather_candidates (number, feed_url, url, title, summary, "
                "published_at, listed_at) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)


def listed_candidates(conn: Connection) -> dict[int, ListedCandidate]:
    """The numbered list the last `gather` printed, by number."""
    return {r[0]: ListedCandidate(*r) for r in _read(
        conn, "SELECT number, feed_url, url, title, summary, published_at FROM gather_candidates "
              "ORDER BY number")}


def last_sent_at(conn: Connection) -> str | None:
    """When the last edition went out (its first message; ISO 8601 UTC), from the ledger: an
    edition's later sends (another list, people who joined since) do not move it. Sends recorded
    without an edition count by their slug."""
    rows = _read(conn, "SELECT max(first_at) FROM ("
                       "SELECT min(coalesce(first_sent_at, created_at)) AS first_at FROM sends "
                       "GROUP BY edition_id, CASE WHEN edition_id IS NULL THEN slug END) AS per_edition")
    return rows[0][0] if rows and rows[0][0] else None
