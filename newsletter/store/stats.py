"""The queries behind ``stats``: sends, their ledger counts and the events recorded against
their deliveries, on either engine.

Written once as SQLite SQL (``?`` placeholders, run on PostgreSQL through ``pg.PgConnection``):
flags are ``CASE WHEN … THEN 1 ELSE 0 END`` (PostgreSQL has no sum of booleans), sub-selects
are named. What differs is how the SES JSON is read (``_JSON``: SQLite's ``json_extract`` and
``json_valid``; PostgreSQL's ``->``/``->>`` on ``nl_jsonb(payload)``, which is NULL for a payload
that is not JSON) and the byte-order collation of the links' tie-break.

A send's ids go into the SQL as integers (they come from the database's own ``sends.id``), so
one statement serves one send or all of an edition's, on both engines, through the index.

``newsletter.feedback.stats`` turns these rows into figures; ``newsletter.feedback.engagement``
judges each reader's opens and clicks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

from newsletter.store.connection import Connection, is_postgres


class Ledger(NamedTuple):
    sent: int
    failed: int
    pending: int
    skipped: int


class PerReader(NamedTuple):
    """Readers (deliveries) with at least one event of each kind."""

    delivered: int
    hard: int
    soft: int  # a transient bounce, and no permanent one
    complained: int
    opened: int  # an open or a click
    clicked: int
    delayed: int


class ActivityRow(NamedTuple):
    """One delivery, open or click event of a reader who opened or clicked (SES's fields)."""

    delivery_id: int
    kind: str
    occurred_at: str
    link: str | None
    user_agent: str | None
    ip: str | None
    timestamp: str | None
    mail_timestamp: str | None


class LinkRow(NamedTuple):
    url: str
    clicks: int
    readers: int


def _ids(send_ids: Iterable[int]) -> str:
    """``1, 2, 3`` for ``IN (…)``: integers only (``int()`` refuses anything else)."""
    found = ", ".join(str(int(i)) for i in send_ids)
    return found or "NULL"


# -- sends -------------------------------------------------------------------------------------

def sends_of(conn: Connection, slug: str, seq: int | None = None) -> list:
    """The sends of edition ``slug`` in order (only its ``seq``-th when given)."""
    from newsletter.store.ledger import _never_stored

    if _never_stored(slug, seq or 0):
        return []
    if seq is not None:
        return conn.execute("SELECT * FROM sends WHERE slug = ? AND seq = ?", (slug, seq)).fetchall()
    return conn.execute("SELECT * FROM sends WHERE slug = ? ORDER BY seq", (slug,)).fetchall()


def every_send(conn: Connection) -> list:
    """Every send, newest first."""
    return conn.execute("SELECT * FROM sends ORDER BY created_at DESC, id DESC").fetchall()


# -- figures -----------------------------------------------------------------------------------

def ledger(conn: Connection, send_ids: Iterable[int]) -> Ledger:
    row = conn.execute(
        "SELECT coalesce(sum(CASE WHEN state = 'sent' THEN 1 ELSE 0 END), 0), "
        "coalesce(sum(CASE WHEN state = 'failed' THEN 1 ELSE 0 END), 0), "
        "coalesce(sum(CASE WHEN state IN ('pending', 'sending') THEN 1 ELSE 0 END), 0), "
        "coalesce(sum(CASE WHEN state = 'skipped' THEN 1 ELSE 0 END), 0) "
        f"FROM deliveries WHERE send_id IN ({_ids(send_ids)})").fetchone()
    return Ledger(*(int(v) for v in row))


def _flag(condition: str) -> str:
    return f"max(CASE WHEN {condition} THEN 1 ELSE 0 END)"


# One row per reader (delivery) with a flag per kind of event, then summed.
_PER_READER = f"""
SELECT coalesce(sum(r.delivered), 0), coalesce(sum(r.hard), 0),
       coalesce(sum(CASE WHEN r.soft = 1 AND r.hard = 0 THEN 1 ELSE 0 END), 0),
       coalesce(sum(r.complained), 0), coalesce(sum(r.opened), 0), coalesce(sum(r.clicked), 0),
       coalesce(sum(r.delayed), 0)
FROM (
    SELECT e.delivery_id,
           {_flag("e.type = 'delivery'")} AS delivered,
           {_flag("e.type = 'bounce' AND e.subtype = 'Permanent'")} AS hard,
           {_flag("e.type = 'bounce' AND e.subtype != 'Permanent'")} AS soft,
           {_flag("e.type = 'complaint'")} AS complained,
           {_flag("e.type IN ('open', 'click')")} AS opened,
           {_flag("e.type = 'click'")} AS clicked,
           {_flag("e.type = 'delivery_delay'")} AS delayed
    FROM events e JOIN deliveries d ON d.id = e.delivery_id
    WHERE d.send_id IN ({{ids}})
    GROUP BY e.delivery_id
) r
"""


def per_reader(conn: Connection, send_ids: Iterable[int]) -> PerReader:
    row = conn.execute(_PER_READER.format(ids=_ids(send_ids))).fetchone()
    return PerReader(*(int(v) for v in row))


def clicked_links(conn: Connection, send_ids: Iterable[int]) -> int:
    """How many different links were clicked in these sends."""
    return int(conn.execute(
        "SELECT count(DISTINCT e.link) FROM events e JOIN deliveries d ON d.id = e.delivery_id "
        f"WHERE d.send_id IN ({_ids(send_ids)}) AND e.type = 'click'").fetchone()[0])


# How each engine reads a field of the event's SES JSON (``{path}``: SES's own nesting, the
# event's type first, e.g. ``open.userAgent``) — from ``j``, the payload parsed once per row.
_JSON = {
    "sqlite": {
        "from": "",
        "field": "json_extract(e.payload, '$.' || e.type || '.{name}')",
        "mail": "json_extract(e.payload, '$.mail.timestamp')",
        "valid": "json_valid(e.payload)",
    },
    "postgresql": {
        "from": " CROSS JOIN LATERAL (SELECT nl_jsonb(e.payload) AS j) p",
        "field": "(p.j -> e.type ->> '{name}')",
        "mail": "(p.j -> 'mail' ->> 'timestamp')",
        "valid": "p.j IS NOT NULL",
    },
}


def _activity_sql(engine: str, ids: str) -> str:
    j = _JSON[engine]

    def field(name: str) -> str:
        return f"CASE WHEN e.type = 'delivery' THEN NULL ELSE {j['field'].format(name=name)} END"

    return (
        f"SELECT e.delivery_id, e.type, e.occurred_at, e.link, {field('userAgent')}, "
        f"{field('ipAddress')}, {field('timestamp')}, "
        f"CASE WHEN e.type = 'delivery' THEN NULL ELSE {j['mail']} END "
        f"FROM events e JOIN deliveries d ON d.id = e.delivery_id{j['from']} "
        f"WHERE d.send_id IN ({ids}) AND e.type IN ('delivery', 'open', 'click') AND {j['valid']} "
        "AND e.delivery_id IN (SELECT x.delivery_id FROM events x JOIN deliveries y "
        f"ON y.id = x.delivery_id WHERE y.send_id IN ({ids}) AND x.type IN ('open', 'click')) "
        "ORDER BY e.delivery_id, e.id")


def activity(conn: Connection, send_ids: Iterable[int]) -> Iterator[ActivityRow]:
    """The delivery, open and click events of every reader who opened or clicked, one reader
    after the other. The SES fields are read by the database's JSON functions (a Python
    ``json.loads`` per event doubled the time of ``stats`` on a big send)."""
    engine = "postgresql" if is_postgres(conn) else "sqlite"
    for row in conn.execute(_activity_sql(engine, _ids(send_ids))):
        yield ActivityRow(*row)


def top_links(conn: Connection, send_ids: Iterable[int], limit: int) -> list[LinkRow]:
    """The links clicked by the most readers (then clicks, then the link's bytes)."""
    binary = 'COLLATE "C"' if is_postgres(conn) else "COLLATE BINARY"
    rows = conn.execute(
        "SELECT e.link, count(*) AS clicks, count(DISTINCT e.delivery_id) AS readers "
        "FROM events e JOIN deliveries d ON d.id = e.delivery_id "
        f"WHERE d.send_id IN ({_ids(send_ids)}) AND e.type = 'click' AND e.link IS NOT NULL "
        f"GROUP BY e.link ORDER BY readers DESC, clicks DESC, e.link {binary} LIMIT ?",
        (int(limit),)).fetchall()
    return [LinkRow(r[0], int(r[1]), int(r[2])) for r in rows]
