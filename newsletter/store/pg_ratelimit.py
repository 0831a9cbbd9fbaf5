"""The readers' endpoints' sliding-window limits in PostgreSQL: the same ``rate_events``
table and the same answers as ``newsletter.web.ratelimit.RateLimiter`` (SQLite), so that several
web workers on several hosts share one count.

Counting and recording happen in one transaction holding an advisory lock on the bucket, so
two workers cannot both slip under a limit (other buckets do not wait)."""

from __future__ import annotations

import threading
import time

from newsletter.store import pg

PRUNE_EVERY = 500  # allowed actions between two prunes of expired rows
KEEP_SECONDS = 2 * 86400  # longer than any window we use


class PostgresRateLimiter:
    """``hit`` / ``count`` / ``prune`` / ``close`` as ``RateLimiter``; one connection per
    thread."""

    def __init__(self, url: str):
        self._url = url
        self._local = threading.local()
        self._conns: list[pg.PgConnection] = []
        self._lock = threading.Lock()
        self._allowed = 0

    def _conn(self) -> pg.PgConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = pg.connect(self._url)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def hit(self, bucket: str, limit: int, window: float, *, now: float | None = None) -> bool:
        """Record one action in ``bucket`` and return True, or return False (nothing recorded)
        when ``limit`` actions already happened in the last ``window`` seconds. ``limit`` <= 0
        means no limit."""
        if limit <= 0:
            return True
        now = time.time() if now is None else now
        conn = self._conn()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (bucket,))
            allowed = self.count(bucket, window, now=now) < limit
            if allowed:
                conn.execute("INSERT INTO rate_events (bucket, at) VALUES (?, ?)", (bucket, now))
        if allowed:
            self._allowed += 1
            if self._allowed % PRUNE_EVERY == 0:
                self.prune(now=now)
        return allowed

    def count(self, bucket: str, window: float, *, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return self._conn().execute(
            "SELECT count(*) FROM rate_events WHERE bucket = ? AND at > ?",
            (bucket, float(now - window))).fetchone()[0]

    def prune(self, *, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return self._conn().execute("DELETE FROM rate_events WHERE at < ?",
                                    (float(now - KEEP_SECONDS),)).rowcount

    def close(self) -> None:
        """Close every thread's connection (the web app calls this once, on shutdown)."""
        with self._lock:
            for conn in self._conns:
                try:
                    conn.close()
                except Exception:  # closed under another thread's feet: we are exiting
                    pass
            self._conns.clear()
        self._local = threading.local()
