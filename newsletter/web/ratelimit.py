"""Sliding-window abuse limits for the readers' endpoints, kept in the ``rate_events`` table.

Each allowed action leaves one row ``(bucket, at)``; an action is allowed while its bucket holds
fewer than ``limit`` rows younger than ``window`` seconds. Counting and recording happen in one
``BEGIN IMMEDIATE`` transaction, so two server processes sharing the database cannot both slip
under the limit. Rows older than the longest window are pruned now and then.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

from newsletter.store.db import connect, store_error

PRUNE_EVERY = 500  # allowed actions between two prunes of expired rows
KEEP_SECONDS = 2 * 86400  # longer than any window we use


def address_bucket(kind: str, email: str) -> str:
    """A bucket for an email address that does not store the address itself."""
    digest = hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()[:32]
    return f"{kind}:{digest}"


class RateLimiter:
    """Limits backed by one SQLite file; safe to share between threads (one connection each)."""

    def __init__(self, path: str | Path, *, busy_ms: int | None = None):
        self._path = Path(path)
        self._busy_ms = busy_ms  # how long a hit waits for the write lock (None: the default)
        self._local = threading.local()
        self._allowed = 0

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self._path)
            if self._busy_ms is not None:
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_ms)}")
            self._local.conn = conn
        return conn

    def hit(self, bucket: str, limit: int, window: float, *, now: float | None = None) -> bool:
        """Record one action in ``bucket`` and return True, or return False (nothing recorded)
        when ``limit`` actions already happened in the last ``window`` seconds. ``limit`` ≤ 0
        means no limit."""
        if limit <= 0:
            return True
        now = time.time() if now is None else now
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                allowed = self.count(bucket, window, now=now) < limit
                if allowed:
                    conn.execute("INSERT INTO rate_events (bucket, at) VALUES (?, ?)", (bucket, now))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as err:  # busy or full: a one-line StoreError (the web answers 503)
            raise store_error(err, self._path) from None
        if allowed:
            self._allowed += 1
            if self._allowed % PRUNE_EVERY == 0:
                self.prune(now=now)
        return allowed

    def count(self, bucket: str, window: float, *, now: float | None = None) -> int:
        """How many actions ``bucket`` holds in the last ``window`` seconds."""
        now = time.time() if now is None else now
        (count,) = self._conn().execute(
            "SELECT count(*) FROM rate_events WHERE bucket = ? AND at > ?", (bucket, now - window)
        ).fetchone()
        return count

    def prune(self, *, now: float | None = None) -> int:
        """Delete rows older than any window; return how many went."""
        now = time.time() if now is None else now
        cur = self._conn().execute("DELETE FROM rate_events WHERE at < ?", (now - KEEP_SECONDS,))
        return cur.rowcount

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
