"""What `newsletter doctor` reads from the project's database, on either engine: the schema
version against the newest this program ships (each engine has its own migration sequence:
``db.py`` / ``pg.py``), how many subscribers there are, when the last SES event arrived and how
many queue messages were kept aside. Read-only: nothing here migrates or writes."""

from __future__ import annotations

from newsletter.store.connection import Connection, is_postgres


def versions(conn: Connection) -> tuple[int, int]:
    """``(the database's schema version, the newest this program ships)`` for its engine."""
    if is_postgres(conn):
        from newsletter.store import pg

        return pg.schema_version(conn), pg.latest_version()
    from newsletter.store import db

    return db.schema_version(conn), db.latest_version()  # type: ignore[arg-type]


def subscriber_count(conn: Connection, *, status: str | None = None) -> int:
    """Subscribers in the database (``status``: only those, e.g. ``"active"``)."""
    if status is None:
        return conn.execute("SELECT count(*) FROM subscribers").fetchone()[0]
    return conn.execute("SELECT count(*) FROM subscribers WHERE status = ?", (status,)).fetchone()[0]


def events_overview(conn: Connection) -> tuple[str | None, int]:
    """``(when the last SES event was received, or None; queue messages kept aside)``."""
    last = conn.execute("SELECT max(received_at) FROM events").fetchone()[0]
    kept = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    return last, kept
