"""`newsletter gather`: candidates for the next edition from the feeds in ``[sources] feeds``.

Every feed is fetched at once (httpx's AsyncClient, ``sources.concurrency`` at a time) with a
conditional GET (the ETag and Last-Modified it sent last time, kept in the ``feeds`` table), so
running it every hour costs the sites a 304 each. feedparser reads RSS 0.9x/2.0, RSS 1.0 (RDF)
and Atom (its own HTML sanitiser switched off: nh3 does that job once, keeping links
http/https only); the sanitised summaries become plain Markdown by a walk over lxml's tree of
the few tags nh3 lets through (markdownify, on BeautifulSoup, took 0.2 s per 1000 summaries: a
third of a whole `gather`). A feed that fails is a warning naming it; the others still count.

Candidates are the entries newer than the last sent edition (or ``since``) whose link is in no
edition file and no send (by ``newsletter.sources.urls.url_key``), newest first, numbered. The numbered
list is kept in ``gather_candidates`` so that ``gather --add 3 5 8 EDITION`` adds what the
editor saw, not a list that changed since. That state lives in the project's database on either
engine; its SQL is ``newsletter.store.feeds``.
"""

from __future__ import annotations

import asyncio
import calendar
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.sources.urls import strip_tracking, url_key

if TYPE_CHECKING:
    from newsletter.config import Config
    from newsletter.edition.model import Item
    from newsletter.store.connection import Connection

MAX_FEED_BYTES = 5 * 1024 * 1024
MAX_REDIRECTS = 5
SUMMARY_CHARS = 600
_ALLOWED_TAGS = {"a", "p", "br", "strong", "b", "em", "i", "code", "ul", "ol", "li", "blockquote"}


@dataclass(frozen=True)
class Entry:
    feed_url: str
    url: str
    title: str
    summary: str                 # plain Markdown, sanitised
    published: datetime | None   # UTC

    @property
    def domain(self) -> str:
        from newsletter.edition.parse import domain_of

        return domain_of(self.url)

    def as_dict(self) -> dict:
        return {"feed": self.feed_url, "url": self.url, "title": self.title, "domain": self.domain,
                "published": _iso(self.published), "summary": self.summary}


@dataclass
class FeedResult:
    url: str
    status: str                          # "200", "304" or "error"
    entries: list[Entry] = field(default_factory=list)
    title: str = ""
    etag: str | None = None
    last_modified: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Candidate:
    number: int
    entry: Entry

    def as_dict(self) -> dict:
        return {"number": self.number, **self.entry.as_dict(), "first_sentence": first_sentence(self.entry)}


@dataclass
class GatherResult:
    candidates: list[Candidate]
    feeds: list[FeedResult]
    since: datetime | None

    @property
    def warnings(self) -> list[str]:
        return [f"feed {f.url}: {f.error}" for f in self.feeds if f.status == "error"]

    def as_dict(self) -> dict:
        return {"since": _iso(self.since), "candidates": [c.as_dict() for c in self.candidates],
                "feeds": [{"url": f.url, "status": f.status, "entries": len(f.entries), "error": f.error}
                          for f in self.feeds],
                "warnings": self.warnings}


# -- parsing (pure) ----------------------------------------------------------------------------
def parse_feed(body: bytes, feed_url: str, *, content_type: str = "") -> tuple[str, list[Entry]]:
    """``(feed title, entries)``; raises ``ValueError`` with a reason for something that is not
    a feed at all (feedparser's bozo bit alone is not enough: many live feeds are slightly
    malformed and still readable)."""
    import feedparser

    doc = feedparser.parse(body, response_headers={"content-type": content_type or "application/xml",
                                                   "content-location": feed_url},
                           sanitize_html=False, resolve_relative_uris=False)  # nh3 does it below
    if not doc.entries and (doc.get("bozo") or not doc.get("version")):
        reason = doc.get("bozo_exception")
        raise ValueError(f"not a readable feed ({_reason(reason)})" if reason else "not a feed")
    entries = []
    for raw in doc.entries:
        link = _link(raw, feed_url)
        title = " ".join(str(raw.get("title", "")).split())
        if not link or not title:
            continue
        summary_html = raw.get("summary") or ""
        if not summary_html and raw.get("content"):
            summary_html = raw["content"][0].get("value", "")
        title = _feed_text(_plain_title(title))
        if not title:
            continue
        entries.append(Entry(feed_url, link, title, _feed_text(clean_summary(summary_html, base=link), lines=True),
                             _published(raw)))
    return _feed_text(" ".join(str(doc.feed.get("title", "")).split())), entries


def _feed_text(value: str, *, lines: bool = False) -> str:
    """A feed's text as reader input is kept: control characters (a NUL among them: a feed can
    serve ``&#0;``, which no database text holds) become a space, a lone surrogate U+FFFD;
    ``lines``: the summary's line breaks stay."""
    from newsletter.audience.addresses import clean_text

    if lines:
        return "\n".join(clean_text(line)[0] if line else "" for line in value.split("\n"))
    return " ".join(clean_text(value)[0].split())


def _reason(err: object) -> str:
    text = str(err).split("\n")[0]
    return text[:120] or type(err).__name__


MAX_LINK = 2000  # bytes: the practical URL limit; PostgreSQL's btree holds ~2700 bytes a row


def _link(raw, feed_url: str) -> str:
    from urllib.parse import urljoin

    link = raw.get("link") or ""
    if not link:
        for candidate in raw.get("links", []):
            if candidate.get("href"):
                link = candidate["href"]
                break
    link = urljoin(feed_url, link.strip())
    if (len(link.encode("utf-8", "replace")) > MAX_LINK
            or any(c.isspace() or not c.isprintable() for c in link)):
        return ""  # a NUL, a control, 2000+ bytes: no real article's URL (and no index row)
    return strip_tracking(link) if link.lower().startswith(("http://", "https://")) else ""


def _plain_title(title: str) -> str:
    import html

    return html.unescape(re.sub(r"<[^>]+>", "", title)).strip()


def _published(raw) -> datetime | None:
    parsed = raw.get("published_parsed") or raw.get("updated_parsed") or raw.get("created_parsed")
    if not parsed:
        return None
    return datetime.fromtimestamp(calendar.timegm(parsed), timezone.utc)


def clean_summary(html_text: str, limit: int = SUMMARY_CHARS, *, base: str = "") -> str:
    """A feed's HTML summary as plain Markdown: sanitised (no scripts, styles, images; links
    http/https only, relative ones resolved against ``base``, the entry's link), paragraphs kept
    (blank line between), cut after about ``limit`` characters at a paragraph or sentence end."""
    import nh3

    if not html_text.strip():
        return ""
    if "<" not in html_text and "&" not in html_text:
        text = escape_markdown(html_text)
    else:
        safe = nh3.clean(html_text, tags=_ALLOWED_TAGS, attributes={"a": {"href"}},
                         url_schemes={"http", "https"}, link_rel=None, strip_comments=True,
                         clean_content_tags={"script", "style"})
        text = html_to_markdown(safe, base)
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
    paragraphs = [re.sub(r"\[\s*\]\([^)]*\)", "", p).strip() for p in paragraphs]  # empty links
    out: list[str] = []
    total = 0
    for p in paragraphs:
        if not p:
            continue
        if total + len(p) > limit:
            if not out:
                out.append(_cut(p, limit))
            break
        out.append(p)
        total += len(p)
    return "\n\n".join(out)


def escape_markdown(text: str) -> str:
    from newsletter.sources.fetch import escape_markdown as escape

    return escape(text)


_BLOCKS = {"p", "ul", "ol", "li", "blockquote"}
_MARKS = {"strong": "**", "b": "**", "em": "*", "i": "*", "code": "`"}


def html_to_markdown(safe_html: str, base: str = "") -> str:
    """Sanitised HTML (only ``_ALLOWED_TAGS``, links already http/https) as Markdown: text
    escaped, ``**bold**``, ``*italic*``, `` `code` ``, ``[text](url)``, paragraphs and list entries
    separated by blank lines."""
    from urllib.parse import urljoin

    import lxml.html

    def absolute(href: str | None) -> str | None:
        href = urljoin(base, href.strip()) if href else None
        return href if href and href.lower().startswith(("http://", "https://")) else None

    try:
        root = lxml.html.fragment_fromstring(safe_html, create_parent="div")
    except Exception:  # lxml's ParserError on an empty fragment
        return ""
    out: list[str] = []

    def walk(el) -> None:
        tag = el.tag if isinstance(el.tag, str) else ""
        if tag in _BLOCKS:
            out.append("\n\n")
            if tag == "li":
                out.append("- ")
        elif tag == "br":
            out.append("\n\n")
        mark = _MARKS.get(tag, "")
        href = absolute(el.get("href")) if tag == "a" else None
        inner_start = len(out)
        if el.text:
            out.append(escape_markdown(el.text) if tag != "code" else el.text.replace("`", "'"))
        for child in el:
            walk(child)
        inner = "".join(out[inner_start:]).strip()
        del out[inner_start:]
        if href and inner:
            out.append(f"[{inner}]({href.replace(')', '%29').replace(' ', '%20')})")
        elif mark and inner:
            out.append(f"{mark}{inner}{mark}")
        else:
            out.append(inner)
        if tag in _BLOCKS:
            out.append("\n\n")
        if el.tail:
            out.append(escape_markdown(el.tail))

    walk(root)
    return "".join(out)


def _cut(text: str, limit: int) -> str:
    head = text[:limit]
    m = list(re.finditer(r"[.!?。！？](\s|$)", head))
    if m and m[-1].end() > limit // 3:
        return head[: m[-1].end()].strip()
    return head.rsplit(" ", 1)[0].rstrip(" ,;:") + "…" if " " in head else head + "…"


def first_sentence(entry: Entry) -> str:
    from newsletter.edition.parse import first_sentence as sentence

    return sentence(entry.summary, limit=120)


# -- fetching ----------------------------------------------------------------------------------
def fetch_feeds(feeds: list[str], validators: dict[str, tuple[str | None, str | None]], *,
                agent: str, timeout: float = 10.0, concurrency: int = 10,
                on_done: Callable[[FeedResult], None] | None = None) -> list[FeedResult]:
    """Fetch and parse every feed concurrently; one ``FeedResult`` per feed, in ``feeds`` order.
    ``validators[url] = (etag, last_modified)`` from the last run make the GET conditional."""
    return asyncio.run(_fetch_all(feeds, validators, agent, timeout, concurrency, on_done))


async def _fetch_all(feeds, validators, agent, timeout, concurrency, on_done) -> list[FeedResult]:
    import httpx

    limit = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=True, max_redirects=MAX_REDIRECTS,
                                 headers={"User-Agent": agent}, limits=limits) as client:
        async def one(url: str) -> FeedResult:
            async with limit:
                result = await _fetch_one(client, url, validators.get(url, (None, None)))
            if on_done is not None:
                on_done(result)
            return result

        return list(await asyncio.gather(*(one(u) for u in feeds)))


async def _fetch_one(client, url: str, validator: tuple[str | None, str | None]) -> FeedResult:
    import httpx

    etag, modified = validator
    headers = {"Accept": "application/rss+xml, application/atom+xml, application/rdf+xml, "
                         "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"}
    if etag:
        headers["If-None-Match"] = etag
    if modified:
        headers["If-Modified-Since"] = modified
    try:
        async with client.stream("GET", url, headers=headers) as response:
            if response.status_code == 304:
                return FeedResult(url, "304", etag=etag, last_modified=modified)
            if response.status_code >= 400:
                return FeedResult(url, "error", error=f"the server answered {response.status_code}")
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_FEED_BYTES:
                    return FeedResult(url, "error", error=f"larger than {MAX_FEED_BYTES // 2**20} MB")
            body = b"".join(chunks)
            kind = response.headers.get("content-type", "")
            new_etag, new_modified = response.headers.get("etag"), response.headers.get("last-modified")
    except httpx.TimeoutException:
        return FeedResult(url, "error", error="no answer in time")
    except httpx.TooManyRedirects:
        return FeedResult(url, "error", error=f"more than {MAX_REDIRECTS} redirects")
    except (httpx.HTTPError, OSError) as err:
        return FeedResult(url, "error", error=f"cannot fetch ({_reason(err)})")
    try:
        title, entries = parse_feed(body, url, content_type=kind)
    except ValueError as err:
        return FeedResult(url, "error", error=str(err))
    return FeedResult(url, "200", entries, title, new_etag, new_modified)


# -- state (the database: newsletter.store.feeds) ----------------------------------------------
def _polled(r: FeedResult):
    from newsletter.store.feeds import PolledFeed, StoredEntry

    entries = [StoredEntry(e.url, url_key(e.url), e.title, e.summary, _iso(e.published))
               for e in r.entries] if r.status == "200" else []
    return PolledFeed(r.url, r.status, r.title, r.etag, r.last_modified, r.error, entries)


def _stored_entries(conn: Connection, feed_url: str) -> list[Entry]:
    from newsletter.store.feeds import stored_entries

    return [Entry(feed_url, e.url, e.title, e.summary, _parse_iso(e.published_at))
            for e in stored_entries(conn, feed_url)]


def last_sent_at(conn: Connection) -> datetime | None:
    """When the last edition went out (its first message), from the ledger: an edition's later
    sends (another list, people who joined since) do not move it."""
    from newsletter.store.feeds import last_sent_at as stored

    return _parse_iso(stored(conn))


def gather(config: Config, conn: Connection, *, since: datetime | None = None,
           on_done: Callable[[FeedResult], None] | None = None,
           now: datetime | None = None) -> GatherResult:
    """Poll every configured feed and list the candidates (also kept for ``add_candidates``).
    ``conn``: the project's database on either engine (``newsletter.store.connection.connect``)."""
    from newsletter.edition.covered import edition_link_keys, sent_items
    from newsletter.sources.fetch import user_agent
    from newsletter.store import feeds as state
    from newsletter.store.db import utc_now

    feeds = list(dict.fromkeys(config.sources.feeds))
    results = fetch_feeds(feeds, state.validators(conn), agent=user_agent(config.name, config.base_url),
                          timeout=config.sources.timeout, concurrency=config.sources.concurrency,
                          on_done=on_done)
    stamp = utc_now()
    state.remember(conn, [_polled(r) for r in results], stamp)
    for r in results:
        if r.status == "304":
            r.entries = _stored_entries(conn, r.url)
    if since is None:
        since = last_sent_at(conn)
    known = edition_link_keys(config)
    known.update(url_key(s.url) for s in sent_items(conn, datetime(1970, 1, 1, tzinfo=timezone.utc),
                                                    config=config))
    picked: dict[str, Entry] = {}
    for r in results:
        for e in r.entries:
            key = url_key(e.url)
            if key in known or key in picked:
                continue
            if since is not None and e.published is not None and e.published <= since:
                continue
            picked[key] = e
    ordered = sorted(picked.values(), key=lambda e: (e.published is None,
                                                      -(e.published.timestamp() if e.published else 0),
                                                      e.title))
    candidates = [Candidate(i, e) for i, e in enumerate(ordered, start=1)]
    state.keep_candidates(conn, [state.ListedCandidate(c.number, c.entry.feed_url, c.entry.url,
                                                       c.entry.title, c.entry.summary,
                                                       _iso(c.entry.published))
                                 for c in candidates], stamp)
    return GatherResult(candidates, results, since)


def add_candidates(config: Config, conn: Connection, numbers: list[int],
                   edition: Path) -> list[Item]:
    """Append candidates ``numbers`` of the last ``gather`` list to ``edition``, in that order.
    Every number is checked before anything is written."""
    from newsletter.errors import ValidationError
    from newsletter.project import add_item
    from newsletter.store.feeds import listed_candidates

    rows = listed_candidates(conn)
    if not rows:
        raise ValidationError("no candidates listed yet: run `newsletter gather` first")
    missing = [n for n in numbers if n not in rows]
    if missing:
        raise ValidationError(f"no candidate {', '.join(map(str, missing))} in the last gather list "
                              f"(1–{max(rows)}); run `newsletter gather` to see it again")
    added = []
    for n in dict.fromkeys(numbers):
        found = rows[n]
        added.append(add_item(edition, found.url, found.title, found.summary, config=config))
    return added


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _parse_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
