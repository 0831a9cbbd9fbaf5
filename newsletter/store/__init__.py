"""Where every SQL statement lives: the subscriber store (subscribers, lists, memberships,
suppressions, consent), and in the same database the delivery ledger and send snapshots
(``ledger.py``), SES events and dead letters (``events.py``), stats (``stats.py``), feeds
(``feeds.py``), the web's rate limits (``sqlite_ratelimit.py`` / ``pg_ratelimit.py``) and the
health figures doctor reads (``health.py``). Nothing outside this package imports a driver.

Two engines: SQLite (a file path or ``sqlite:///`` URL; the default) and PostgreSQL
(``postgresql://user@host/dbname``; psycopg is imported only then); ``dburl`` says which a
setting names. ``open_store(config)`` gives the ``Store`` (``base.Store``: ``SqliteStore``, and
``PostgresStore`` overriding only what differs); the other concepts take a connection from
``connection.connect(config)`` and write their SQL once, as SQLite SQL with ``?``/``?N``
placeholders that ``pg.PgConnection`` rewrites for PostgreSQL, with small engine fragments
where the two differ (claims with ``FOR UPDATE SKIP LOCKED``, ``COPY``, ``json_each`` vs
arrays). Each engine has its own migrations (``migrations/``, ``pg_migrations/``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from newsletter.config import Config
    from newsletter.store.base import Store


def database_url(config: "Config | str") -> str:
    """The database setting to open (env ``NEWSLETTER_DATABASE_URL`` wins over the file's
    ``database``). A password written into the configuration file is refused: libpq reads it
    from ``PGPASSWORD``, ``~/.pgpass`` or a ``PGSERVICE`` entry instead."""
    import os

    from newsletter.errors import ConfigError
    from newsletter.store.dburl import has_password

    if isinstance(config, str):
        return config
    url = config.database_url
    if not os.environ.get("NEWSLETTER_DATABASE_URL", "").strip() and has_password(url):
        raise ConfigError("the database URL must not contain a password (put it in PGPASSWORD, "
                          "~/.pgpass or a PGSERVICE entry)", file=config.file)
    return url


def open_store(config: "Config | str") -> "Store":
    """Open the store named by ``config.database_url`` (env ``NEWSLETTER_DATABASE_URL`` wins;
    a plain path, a ``sqlite:///`` URL or a ``postgresql://`` URL), creating and migrating the
    database as needed.

    Also accepts the URL/path itself. Use as a context manager or call ``.close()``.
    Raises ``StoreError`` for an unsupported URL or an unusable database (for PostgreSQL, one
    line naming host and database when it cannot connect)."""
    from newsletter.store.dburl import is_postgres

    url = database_url(config)
    if is_postgres(url):
        from newsletter.store.postgres import PostgresStore

        return PostgresStore(url)
    from newsletter.store.db import sqlite_path
    from newsletter.store.sqlite import SqliteStore

    return SqliteStore(sqlite_path(url))


def open_rate_limiter(config: "Config | str", *, busy_ms: int | None = None):
    """The readers' endpoints' rate limiter on the same database as the store:
    ``SqliteRateLimiter`` (a hit waits ``busy_ms`` for the write lock) or
    ``PostgresRateLimiter`` (store/sqlite_ratelimit.py, store/pg_ratelimit.py)."""
    from newsletter.store.dburl import is_postgres

    url = database_url(config)
    if is_postgres(url):
        from newsletter.store.pg_ratelimit import PostgresRateLimiter

        return PostgresRateLimiter(url)
    from newsletter.store.db import sqlite_path
    from newsletter.store.sqlite_ratelimit import SqliteRateLimiter

    return SqliteRateLimiter(sqlite_path(url), busy_ms=busy_ms)
