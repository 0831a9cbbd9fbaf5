"""Sliding-window abuse limits for the readers' endpoints, kept in the ``rate_events`` table.

Each allowed action leaves one row ``(bucket, at)``; an action is allowed while its bucket holds
fewer than ``limit`` rows younger than ``window`` seconds. Counting and recording happen in one
write transaction (``store.connection.write``: SQLite's ``BEGIN IMMEDIATE``), so two server
processes sharing the database cannot both slip under the limit. Rows older than the longest
window are pruned now and then.

The SQL is written once: ``PostgresRateLimiter`` (``store/pg_ratelimit.py``) runs it on
PostgreSQL and adds only what differs there (its connections, and a lock per bucket in place of
SQLite's one write lock).
"""

from __future__ import annotations

import time
from pathlib import Path

from newsletter.store.connection import Connection, PerThread, write

PRUNE_EVERY = 500  # allowed actions between two prunes of expired rows
KEEP_SECONDS = 2 * 86400  # longer than any window we use

_COUNT = "SELECT count(*) FROM rate_events WHERE bucket = ? AND at > ?"
_RECORD = "INSERT INTO rate_events (bucket, at) VALUES (?, ?)"
_PRUNE = "DELETE FROM rate_events WHERE at < ?"


class SqliteRateLimiter:
    """Limits backed by the project's SQLite file; safe to share between threads (one
    connection each). A hit waits ``busy_ms`` for the write lock (None: the connection's
    default), then raises ``StoreBusy`` (the web answers 503)."""

    def __init__(self, path: str | Path, *, busy_ms: int | None = None):
        self._path = Path(path)
        self._busy_ms = busy_ms
        self._conns = PerThread(self._open)
        self._allowed = 0

    # -- what the engines do differently ---------------------------------------------------
    def _open(self) -> Connection:
        from newsletter.store.db import connect

        conn = connect(self._path)
        if self._busy_ms is not None:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_ms)}")
        return conn

    def _lock_bucket(self, conn: Connection, bucket: str) -> None:
        """Serialise the hits of one bucket inside the write transaction: SQLite's
        ``BEGIN IMMEDIATE`` already holds the one write lock."""

    # -- the limiter -----------------------------------------------------------------------
    def _conn(self) -> Connection:
        return self._conns.get()

    def hit(self, bucket: str, limit: int, window: float, *, now: float | None = None) -> bool:
        """Record one action in ``bucket`` and return True, or return False (nothing recorded)
        when ``limit`` actions already happened in the last ``window`` seconds. ``limit`` ≤ 0
        means no limit. A database that refuses the write (busy, full) is one ``StoreError``."""
        if limit <= 0:
            return True
        now = time.time() if now is None else float(now)
        with write(self._conn(), exclusive=False) as conn:
            self._lock_bucket(conn, bucket)
            allowed = conn.execute(_COUNT, (bucket, now - window)).fetchone()[0] < limit
            if allowed:
                conn.execute(_RECORD, (bucket, now))
        if allowed:
            self._allowed += 1
            if self._allowed % PRUNE_EVERY == 0:
                self.prune(now=now)
        return allowed

    def count(self, bucket: str, window: float, *, now: float | None = None) -> int:
        """How many actions ``bucket`` holds in the last ``window`` seconds."""
        now = time.time() if now is None else float(now)
        return self._conn().execute(_COUNT, (bucket, now - window)).fetchone()[0]

    def prune(self, *, now: float | None = None) -> int:
        """Delete rows older than any window; return how many went."""
        now = time.time() if now is None else float(now)
        return self._conn().execute(_PRUNE, (now - KEEP_SECONDS,)).rowcount

    def close(self) -> None:
        """Close every thread's connection (the web app calls this once, on shutdown)."""
        self._conns.close()
