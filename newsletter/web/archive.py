"""The public archive: the web version of each sent edition, the index page and the Atom feed,
served by ``newsletter serve`` or written as static files by ``archive build``.

An edition is listed once the delivery ledger says it was sent. Its web version is its send's
snapshot (what readers got, frozen in the database when the send started: later edits, moved or
broken files change nothing here) with every per-reader placeholder replaced by a neutral value:
no address, no name, no live token (the unsubscribe and preferences links lead to a page
explaining to use the email's link).
"""

from __future__ import annotations

import html as html_lib
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from newsletter.edition.source import valid_slug
from newsletter.config import Config
from newsletter.errors import ValidationError
from newsletter.web.i18n import translator
from newsletter.render.rendered import PLACEHOLDER_RE, RenderedEmail, parse_placeholder
from newsletter.web.templating import base_path, base_url, page_values, template_env

_BODY_RE = re.compile(r"<body[^>]*>(.*)</body>", re.S | re.I)
_HIDDEN_RE = re.compile(r'<div style="display:none[^"]*">.*?</div>', re.S)  # the inbox preheader


@dataclass(frozen=True)
class ArchiveEntry:
    slug: str
    subject: str
    sent_at: str  # ISO 8601 UTC
    number: int | None = None
    title: str = ""
    snapshot_id: int | None = None

    @property
    def date(self) -> str:
        return self.sent_at[:10]


def sent_entries(config: Config) -> list[ArchiveEntry]:
    """Editions the ledger has sent, newest first, as their snapshots say."""
    from newsletter.store.ledger import sent_snapshots

    return [ArchiveEntry(slug=e.slug, subject=e.subject, sent_at=_iso(e.sent_at), number=e.number, title=e.title,
                         snapshot_id=e.snapshot_id) for e in sent_snapshots(config)]


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        value = value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def neutral_values(config: Config, lang: str) -> dict[str, str]:
    """Placeholder values for a reader nobody knows."""
    t = translator(lang)
    root = base_url(config)
    return {
        "email": t("web.email_neutral"),
        "name": t("web.name_fallback"),
        "unsubscribe_url": f"{root}/unsubscribe",
        "preferences_url": f"{root}/preferences",
    }


def depersonalize(text: str, values: dict[str, str], *, html: bool) -> str:
    """``text`` with every placeholder replaced: the template's fallback when it has one, else the
    neutral value (attributes without a fallback become empty)."""
    def repl(match: re.Match[str]) -> str:
        key, fallback = parse_placeholder(match)
        value = fallback or values.get(key, "")
        return html_lib.escape(value) if html else value
    return PLACEHOLDER_RE.sub(repl, text)


class SnapshotCache:
    """Sent editions' snapshots by slug. A snapshot never changes, so its id is the cache key;
    which snapshot a slug shows is asked of the ledger each time (a later send may add one)."""

    def __init__(self, config: Config):
        self.config = config
        self._lock = threading.Lock()
        self._cache: dict[int, RenderedEmail] = {}

    def get(self, slug: str) -> RenderedEmail | None:
        """The web version's source for ``slug``; None when it was never sent."""
        from newsletter.store.ledger import archived_snapshot

        if not valid_slug(slug):
            return None
        found = archived_snapshot(self.config, slug, cached=self._cache)
        if found is None:
            return None
        with self._lock:
            if isinstance(found, int):
                return self._cache[found]
            return self._cache.setdefault(found.id, found.rendered())  # type: ignore[arg-type]

    def entry(self, entry: ArchiveEntry) -> RenderedEmail | None:
        """``entry``'s snapshot (listed entries carry their snapshot id: one query per new one)."""
        from newsletter.store.ledger import Ledger

        if entry.snapshot_id is None:
            return None
        with self._lock:
            found = self._cache.get(entry.snapshot_id)
        if found is not None:
            return found
        with Ledger.open(self.config) as ledger:
            snap = ledger.snapshot(entry.snapshot_id)
        if snap is None:
            return None
        with self._lock:
            return self._cache.setdefault(entry.snapshot_id, snap.rendered())


def web_version(config: Config, rendered: RenderedEmail) -> str:
    """The complete HTML page of an edition for the web."""
    return depersonalize(rendered.html, neutral_values(config, rendered.lang or config.lang), html=True)


def web_text(config: Config, rendered: RenderedEmail) -> str:
    """The text part as anyone may read it (what ``build`` writes next to the web version)."""
    return depersonalize(rendered.text, neutral_values(config, rendered.lang or config.lang), html=False)


def feed_content(config: Config, rendered: RenderedEmail) -> str:
    """The body of the web version for a feed entry: without the hidden preheader, Outlook
    comments and inline styles (feed readers apply their own), sanitized by nh3."""
    import nh3

    page = web_version(config, rendered)
    found = _BODY_RE.search(page)
    body = _HIDDEN_RE.sub("", found.group(1) if found else page, count=1)
    return nh3.clean(body, link_rel="noopener noreferrer").strip()


def feed_summary(config: Config, rendered: RenderedEmail) -> str:
    return depersonalize(rendered.preheader, neutral_values(config, rendered.lang or config.lang), html=False)


def index_page(config: Config, entries: list[ArchiveEntry], lang: str) -> str:
    t = translator(lang)
    return template_env(config).get_template("web/archive.html").render(page_values(
        config, lang, title=t("archive.title", name=config.name), entries=entries,
        subscribe_url=f"{base_path(config)}/subscribe"))


def use_email_page(config: Config, lang: str) -> str:
    """What the web version's unsubscribe and preferences links show."""
    t = translator(lang)
    return template_env(config).get_template("web/message.html").render(page_values(
        config, lang, title=t("use_email.title"), paragraphs=[t("use_email.body")], link=None))


def feed_xml(config: Config, entries: list[ArchiveEntry], rendered: dict[str, RenderedEmail | None]) -> str:
    """The Atom feed (RFC 4287) of ``entries``; ``rendered`` gives summaries and content."""
    root = base_url(config)
    items = []
    for e in entries:
        r = rendered.get(e.slug)
        items.append({"slug": e.slug, "subject": e.subject, "sent_at": e.sent_at,
                      "url": f"{root}/archive/{e.slug}",
                      "summary": feed_summary(config, r) if r else "",
                      "content": feed_content(config, r) if r else ""})
    updated = entries[0].sent_at if entries else "1970-01-01T00:00:00Z"
    return template_env(config).get_template("web/feed.xml").render(
        lang=config.lang, newsletter=config.name, feed_id=f"{root}/feed.xml", feed_url=f"{root}/feed.xml",
        archive_url=f"{root}/archive", updated=updated, entries=items)


def build_archive(config: Config, out: Path, *, progress=None) -> list[Path]:
    """Write the archive as static files under ``out``; return the files written.

    ``archive/index.html``, ``archive/<slug>/index.html`` (and ``archive/<slug>.html`` for hosts
    that map extension-less URLs to ``.html``), ``feed.xml``, and the pages the web version's
    unsubscribe/preferences links lead to. ``progress(slug)`` is called per edition.
    """
    entries = sent_entries(config)
    snapshots = SnapshotCache(config)
    rendered: dict[str, RenderedEmail | None] = {}
    written: list[Path] = []
    for e in entries:
        if not valid_slug(e.slug):
            continue
        rendered[e.slug] = snapshots.entry(e)
        if rendered[e.slug] is None:
            continue
        page = web_version(config, rendered[e.slug])
        for target in (out / "archive" / e.slug / "index.html", out / "archive" / f"{e.slug}.html"):
            written.append(_write(target, page))
        if progress:
            progress(e.slug)
    listed = [e for e in entries if rendered.get(e.slug) is not None]
    written.append(_write(out / "archive" / "index.html", index_page(config, listed, config.lang)))
    written.append(_write(out / "feed.xml", feed_xml(config, listed, rendered)))
    for name in ("unsubscribe", "preferences"):
        written.append(_write(out / name / "index.html", use_email_page(config, config.lang)))
    return written


def _write(path: Path, text: str) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as err:  # an unwritable --output: one line, not a traceback
        raise ValidationError(f"cannot write: {err.strerror or err}", file=path) from None
    return path
