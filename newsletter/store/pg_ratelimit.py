"""The readers' endpoints' sliding-window limits in PostgreSQL: the same ``rate_events``
table, the same SQL and the same answers as ``SqliteRateLimiter`` (store/sqlite_ratelimit.py),
so that several web workers on several hosts share one count.

Counting and recording happen in one transaction holding an advisory lock on the bucket, so
two workers cannot both slip under a limit (other buckets do not wait)."""

from __future__ import annotations

from newsletter.store import pg
from newsletter.store.sqlite_ratelimit import KEEP_SECONDS, PRUNE_EVERY, SqliteRateLimiter

__all__ = ["PostgresRateLimiter", "KEEP_SECONDS", "PRUNE_EVERY"]


class PostgresRateLimiter(SqliteRateLimiter):
    """``hit`` / ``count`` / ``prune`` / ``close`` as ``SqliteRateLimiter``; one connection per
    thread."""

    def __init__(self, url: str):
        super().__init__(url)
        self._url = url

    def _open(self) -> pg.PgConnection:
        return pg.connect(self._url)

    def _lock_bucket(self, conn: pg.PgConnection, bucket: str) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (bucket,))
