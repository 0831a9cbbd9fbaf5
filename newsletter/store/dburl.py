"""Which database a setting names: SQLite (a path or ``sqlite:///path``) or PostgreSQL
(``postgresql://`` / ``postgres://`` URLs, or a libpq ``service=…`` connection string).

Pure functions: nothing here connects. Credentials never belong in the setting: libpq finds
them itself (``PGPASSWORD``, ``~/.pgpass``, ``PGSERVICE`` / ``~/.pg_service.conf``), so
``describe`` never shows a password even when one was written into a URL.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from newsletter.errors import StoreError

POSTGRES_SCHEMES = ("postgresql", "postgres")


def backend(url: str) -> str:
    """``"sqlite"`` or ``"postgresql"`` for a database setting; ``StoreError`` for any other
    scheme."""
    if "://" not in url:
        return "postgresql" if url.strip().startswith("service=") else "sqlite"
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        return "sqlite"
    if scheme in POSTGRES_SCHEMES:
        return "postgresql"
    raise StoreError(f"unsupported database URL scheme {scheme!r} (use a file path, "
                     "sqlite:///path or postgresql://user@host/dbname)")


def is_postgres(url: str) -> bool:
    return backend(url) == "postgresql"


def describe(url: str) -> str:
    """The database for messages: ``database 'news' on host 'db.example.com'`` (PostgreSQL,
    without user or password) or the file path (SQLite)."""
    if not is_postgres(url):
        from newsletter.store.db import sqlite_path

        return str(sqlite_path(url))
    host, dbname = pg_host_and_database(url)
    return f"PostgreSQL database {dbname!r} on {host}"


def pg_host_and_database(url: str) -> tuple[str, str]:
    """Host (with port) and database name of a PostgreSQL URL or libpq string, falling back to
    what libpq would use (``PGHOST``/``PGDATABASE``, the local socket, the user name)."""
    import os

    if "://" not in url:  # key=value connection string (service=…)
        values = dict(part.split("=", 1) for part in url.split() if "=" in part)
        host = values.get("host") or os.environ.get("PGHOST", "")
        dbname = values.get("dbname") or os.environ.get("PGDATABASE", "")
        if values.get("service") and not (host and dbname):
            return (host or f"service {values['service']!r}"), (dbname or values["service"])
        return host or "the local socket", dbname or "(default)"
    parts = urlsplit(url)
    host = unquote(parts.hostname or "") or os.environ.get("PGHOST", "") or "the local socket"
    if host.startswith("/"):
        host = f"socket {host}"
    elif parts.port:
        host = f"{host}:{parts.port}"
    dbname = unquote(parts.path.lstrip("/")) or os.environ.get("PGDATABASE", "") or (
        unquote(parts.username or "") or os.environ.get("PGUSER", "") or "(default)")
    return host, dbname


def has_password(url: str) -> bool:
    """Whether a URL carries a password (refused: it would sit in a file in plain text)."""
    if "://" not in url:
        return "password=" in url
    return urlsplit(url).password is not None
