"""Which database a setting names: SQLite (a path or ``sqlite:///path``) or PostgreSQL
(``postgresql://`` / ``postgres://`` URLs in libpq's URI syntax, e.g.
``postgresql://news@db.example.com/news`` or ``postgresql:///?service=newsletter``).

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
        return "sqlite"
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
    """Host (with port) and database name of a PostgreSQL URL, for messages: from the URL,
    its query (``?host=…&dbname=…&service=…``) or what libpq would fall back to
    (``PGHOST``, ``PGDATABASE``, ``PGSERVICE``, the local socket)."""
    import os
    from urllib.parse import parse_qs

    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    service = query.get("service") or os.environ.get("PGSERVICE", "")
    host = (unquote(parts.hostname or "") or query.get("host") or os.environ.get("PGHOST", "")
            or (f"service {service!r}" if service else "the local socket"))
    if host.startswith("/"):
        host = f"socket {host}"
    port = parts.port or query.get("port")
    if port and not host.startswith(("socket ", "service ", "the ")):
        host = f"{host}:{port}"
    dbname = (unquote(parts.path.lstrip("/")) or query.get("dbname")
              or os.environ.get("PGDATABASE", "") or (service and f"of service {service!r}")
              or unquote(parts.username or "") or os.environ.get("PGUSER", "") or "(default)")
    return host, dbname


def has_password(url: str) -> bool:
    """Whether a URL carries a password (refused: it would sit in a file in plain text)."""
    if "://" not in url:
        return False
    return urlsplit(url).password is not None or "password=" in urlsplit(url).query
