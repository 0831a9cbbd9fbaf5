"""Schema versions on either backend, for ``newsletter db status`` and ``db migrate``.

Both backends version their schema the same way: numbered migration files applied in order,
each in one transaction (SQLite: ``newsletter/store/migrations/``, the version in
``PRAGMA user_version``; PostgreSQL: ``newsletter/store/pg_migrations/``, one row per version
in ``schema_migrations``). Every command that opens the database applies pending migrations by
itself; these functions show or run them explicitly (before starting several web workers, say).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from newsletter.errors import StoreError
from newsletter.store.dburl import backend, describe


@dataclass
class SchemaStatus:
    backend: str                 # "sqlite" | "postgresql"
    database: str                # the file, or "PostgreSQL database 'x' on host" (no password)
    current: int                 # newest migration applied (0: empty or not created yet)
    latest: int                  # newest migration this program ships
    applied: list[dict] = field(default_factory=list)   # {version, name, applied_at (or None)}
    pending: list[dict] = field(default_factory=list)   # {version, name}
    exists: bool = True          # False: a SQLite file not created yet

    @property
    def newer(self) -> bool:
        return self.current > self.latest

    def as_dict(self) -> dict:
        return {"backend": self.backend, "database": self.database, "exists": self.exists,
                "version": self.current, "latest": self.latest, "applied": self.applied,
                "pending": self.pending}


def _status(kind: str, url: str, current: int, shipped: list[tuple[int, str, str]],
            applied_at: dict[int, tuple[str, str]], exists: bool = True) -> SchemaStatus:
    """Numbers may have gaps (branches reserve theirs): what counts is the versions shipped.
    ``applied_at``: what the database recorded itself (PostgreSQL), version -> (name, when)."""
    names = {v: n for v, n, _ in shipped}
    # PostgreSQL records each version (a lower one merged late is pending until applied);
    # SQLite's user_version says "every migration up to this one"
    recorded = set(applied_at) if applied_at else {v for v in names if v <= current}
    versions = sorted(recorded)
    applied = [{"version": v, "name": applied_at.get(v, (names.get(v, "?"), None))[0],
                "applied_at": applied_at.get(v, (None, None))[1]} for v in versions]
    pending = [{"version": v, "name": n} for v, n, _ in shipped if v not in recorded]
    latest = shipped[-1][0] if shipped else 0
    return SchemaStatus(kind, describe(url), current, latest, applied, pending, exists)


def status(url: str) -> SchemaStatus:
    """What the database has and what this program would apply; never changes anything (a
    SQLite file that does not exist is not created)."""
    kind = backend(url)
    if kind == "postgresql":
        from newsletter.store import pg

        conn = pg.connect(url, migrate=False)
        try:
            rows = pg.applied(conn)
            current = max((r[0] for r in rows), default=0)
            return _status(kind, url, current, pg.migrations(),
                           {v: (n, at) for v, n, at in rows})
        finally:
            conn.close()
    from newsletter.store import db

    path = db.sqlite_path(url)
    if not path.exists():
        return _status(kind, url, 0, db.migrations(), {}, exists=False)
    conn = db.connect(path, migrate=False)
    try:
        return _status(kind, url, db.schema_version(conn), db.migrations(), {})
    finally:
        conn.close()


def migrate(url: str) -> tuple[SchemaStatus, SchemaStatus]:
    """Apply every pending migration; returns the status before and after. A database newer
    than this program is a ``StoreError`` (nothing is changed)."""
    before = status(url)
    if before.newer:
        raise StoreError(f"{before.database}: database schema version {before.current} is "
                         f"newer than this program knows ({before.latest}); upgrade newsletter")
    if before.pending:
        if before.backend == "postgresql":
            from newsletter.store import pg

            pg.connect(url).close()  # connecting migrates
        else:
            from newsletter.store import db

            db.connect(db.sqlite_path(url)).close()
    return before, status(url)
