"""The subscriber store: subscribers, lists, memberships, suppressions (and, in the same database,
the delivery ledger and events). ``open_store(config)`` is the one way callers get one."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from newsletter.config import Config
    from newsletter.store.base import Store


def open_store(config: "Config | str") -> "Store":
    """Open the store named by ``config.database_url`` (env ``NEWSLETTER_DATABASE_URL`` wins;
    a plain path or a ``sqlite:///`` URL), creating and migrating the database as needed.

    Also accepts the URL/path itself. Use as a context manager or call ``.close()``.
    Raises ``StoreError`` for an unsupported URL or an unusable database."""
    from newsletter.store.db import sqlite_path
    from newsletter.store.sqlite import SqliteStore

    url = config if isinstance(config, str) else config.database_url
    return SqliteStore(sqlite_path(url))
