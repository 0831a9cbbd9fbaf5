""""Already covered": an item whose story ran in an edition sent in the last 30 days.

``sent_items`` is the ONE reader of what was sent (every caller — ``check``, the preview,
``gather`` — goes through it); it reads the send snapshots (``ledger.sent_snapshots``), so what
counts is what readers got. ``covered_findings`` is pure: an edition and those items in,
warnings out.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from difflib import SequenceMatcher
from typing import TYPE_CHECKING

from newsletter.sources.urls import url_key

if TYPE_CHECKING:
    from newsletter.edition.checks import Finding
    from newsletter.config import Config
    from newsletter.edition.model import Edition
    from newsletter.store.connection import Connection

WINDOW_DAYS = 30
TITLE_SIMILARITY = 0.9  # difflib ratio of the normalised titles at or above which they are "the same"


@dataclass(frozen=True)
class SentItem:
    url: str
    title: str
    date: date          # the edition's date
    number: int | None  # the edition's number (#212)
    slug: str


def sent_items(conn: Connection, since: datetime, *, config: Config) -> list[SentItem]:
    """Items of every edition sent since ``since`` (UTC), newest send first, as their readers
    got them: read from the send snapshots (later edits, moved or broken files change nothing)."""
    from newsletter.errors import StoreError
    from newsletter.store.ledger import sent_snapshots

    since_text = since.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        snapshots = sent_snapshots(conn)
    except StoreError:
        return []  # no ledger yet
    out: list[SentItem] = []
    for snap in snapshots:
        if (snap.sent_at or "") < since_text:
            continue
        day = _day(snap.date) or _day(snap.sent_at)
        for item in snap.items:
            out.append(SentItem(item.get("url", ""), item.get("title", ""), day, snap.number, snap.slug))
    return out


def _day(text: str | None) -> date | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).date()
    except (TypeError, ValueError):
        return None


def normal_title(title: str) -> str:
    """Case, width (full-width ＡＩ), punctuation and spacing removed."""
    text = unicodedata.normalize("NFKC", title).casefold()
    return "".join(ch for ch in text if ch.isalnum())


def same_title(a: str, b: str) -> bool:
    x, y = normal_title(a), normal_title(b)
    if not x or not y:
        return False
    if x == y:
        return True
    if min(len(x), len(y)) < 8:  # short titles: only an exact match counts
        return False
    return SequenceMatcher(None, x, y, autojunk=False).ratio() >= TITLE_SIMILARITY


def covered_findings(edition: Edition, sent: list[SentItem], *,
                     own_slugs: frozenset[str] = frozenset()) -> list[Finding]:
    """A warning per item of ``edition`` whose URL (normalised) or near-identical title ran in
    one of ``sent`` (its own earlier send excluded: its slug, and ``own_slugs``, the slug the
    ledger knows it by when the file's slug changed since): "item 4 ran on 2025-10-13 (#212)"."""
    from newsletter.edition.checks import Finding, Level

    own = {edition.slug, *own_slugs}
    others = [s for s in sent if s.slug not in own]
    by_key: dict[str, SentItem] = {}
    for s in others:
        by_key.setdefault(url_key(s.url), s)
    findings = []
    for item in edition.items:
        match, how = by_key.get(url_key(item.url)), "same link"
        if match is None:
            match = next((s for s in others if same_title(item.title, s.title)), None)
            how = f"same title: {match.title[:60]!r}" if match else ""
        if match is None:
            continue
        number = f" (#{match.number})" if match.number else ""
        findings.append(Finding(Level.WARNING, "already-covered",
                                f"item {item.number} ran on {match.date.isoformat()}{number} ({how})",
                                item.line))
    return findings


def covered_check(edition: Edition, config: Config, *, now: datetime | None = None) -> list[Finding]:
    """``covered_findings`` against the editions sent in the last 30 days, from the project's
    database on either engine. Reads the database only when it exists (a check never creates a
    SQLite file); a database it cannot read gives no warning (the other checks still run)."""
    from newsletter.errors import NewsletterError
    from newsletter.store.connection import connect_existing

    if not edition.items:
        return []
    since = (now or datetime.now(timezone.utc)) - timedelta(days=WINDOW_DAYS)
    try:
        conn = connect_existing(config)
    except NewsletterError:
        return []
    if conn is None:
        return []
    try:
        return covered_findings(edition, sent_items(conn, since, config=config),
                                own_slugs=_ledger_slugs(conn, edition))
    finally:
        conn.close()


def _ledger_slugs(conn: Connection, edition: Edition) -> frozenset[str]:
    """The slug the ledger knows ``edition`` by, when it was sent before (a changed slug or a
    date written in another offset is the same edition: ``Ledger.match_edition``)."""
    from newsletter.errors import NewsletterError
    from newsletter.store.ledger import Ledger
    from newsletter.send.snapshot import date_instant, resolved
    from newsletter.store.connection import errors

    try:
        found = Ledger(conn).match_edition(resolved(edition.source), edition.slug, date_instant(edition))
    except (NewsletterError, TypeError, *errors()):  # another edition's slug, no ledger yet, no source
        return frozenset()
    return frozenset({found.slug}) if found is not None else frozenset()


_LINK_RE = re.compile(r"\]\(\s*<?(https?://[^\s)>]+)")


def edition_link_keys(config: Config) -> set[str]:
    """``url_key`` of every item link written in any edition file (for ``gather``)."""
    keys = set()
    for path in config.editions_path.glob("*.md"):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        keys.update(url_key(m.group(1)) for m in _LINK_RE.finditer(text))
    return keys
