"""Fetching a web page for ``newsletter add EDITION URL``: its title, summary and canonical URL.

This is an edge of the system (network I/O); the edition code never imports it. httpx does the
HTTP (imported lazily), lxml parses the HTML, charset_normalizer guesses an undeclared charset.
The rules a polite fetcher keeps: a timeout, a cap on the bytes read, at most five redirects,
http and https only (every hop checked), and a User-Agent that names the newsletter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from newsletter.errors import NewsletterError
from newsletter.sources.urls import strip_tracking

MAX_BYTES = 2 * 1024 * 1024  # a page's <head> is in its first few KB; 2 MB is plenty
TIMEOUT = 10.0
MAX_REDIRECTS = 5
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_META_CHARSET_RE = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_:.-]+)""", re.IGNORECASE)
_XML_ENCODING_RE = re.compile(rb"""^\s*<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9_:.-]+)""", re.IGNORECASE)
# Declared names that browsers (and the WHATWG encoding standard) read as a larger charset.
_SUPERSETS = {"gb2312": "gb18030", "gbk": "gb18030", "gb_2312-80": "gb18030", "x-gbk": "gb18030",
              "iso-8859-1": "cp1252", "latin1": "cp1252", "ascii": "cp1252", "us-ascii": "cp1252",
              "big5": "big5hkscs", "shift_jis": "cp932", "sjis": "cp932", "euc-kr": "cp949",
              "ks_c_5601-1987": "cp949", "tis-620": "cp874"}


class FetchError(NewsletterError):
    """The page could not be fetched or is not a web page (one line, exit code 2)."""


@dataclass(frozen=True)
class Page:
    """What a page says about itself."""

    url: str            # the URL to link: canonical when declared, tracking parameters removed
    fetched_url: str    # where the last redirect ended
    title: str
    summary: str
    charset: str
    truncated: bool = False  # the page was larger than the cap; what was read was parsed


def user_agent(name: str, base_url: str = "") -> str:
    from newsletter import __version__

    contact = f"; +{base_url}" if base_url else ""
    return f"newsletter/{__version__} ({name} link preview{contact})"


def fetch_page(url: str, *, agent: str, timeout: float = TIMEOUT, max_bytes: int = MAX_BYTES,
               max_redirects: int = MAX_REDIRECTS) -> Page:
    """Fetch ``url`` and read its metadata. Raises ``FetchError`` (one line) when the address
    is not http(s), the network fails, a redirect goes too far or elsewhere than http(s), the
    server answers an error, or the answer is not HTML."""
    import httpx

    _require_http(url)
    headers = {"User-Agent": agent, "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1",
               "Accept-Language": "*"}
    current = url
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, headers=headers) as client:
            for hop in range(max_redirects + 1):
                with client.stream("GET", current) as response:
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        if hop == max_redirects:
                            raise FetchError(f"{url}: more than {max_redirects} redirects")
                        current = urljoin(str(response.url), location)
                        _require_http(current, redirected_from=url)
                        continue
                    if response.status_code >= 400:
                        raise FetchError(f"{url}: the server answered {response.status_code} "
                                         f"{response.reason_phrase}".rstrip())
                    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
                    if kind and kind not in _HTML_TYPES:
                        raise FetchError(f"{url}: not a web page ({kind}); give the item's --title")
                    body, truncated = _read_capped(response, max_bytes)
                    return page_from_html(body, str(response.url),
                                          declared=response.charset_encoding, truncated=truncated)
    except httpx.TimeoutException:
        raise FetchError(f"{url}: no answer within {timeout:g} s") from None
    except httpx.TooManyRedirects:
        raise FetchError(f"{url}: more than {max_redirects} redirects") from None
    except (httpx.HTTPError, OSError) as err:
        reason = str(err).split("\n")[0] or type(err).__name__
        raise FetchError(f"{url}: cannot fetch ({reason})") from None
    raise FetchError(f"{url}: more than {max_redirects} redirects")


def _require_http(url: str, redirected_from: str | None = None) -> None:
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        scheme = ""
    if scheme not in ("http", "https"):
        where = f"{redirected_from}: redirected to {url[:80]!r}" if redirected_from else repr(url[:80])
        raise FetchError(f"{where}: only http and https addresses are fetched")


def _read_capped(response, max_bytes: int) -> tuple[bytes, bool]:
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= max_bytes:
            return b"".join(chunks)[:max_bytes], True
    return b"".join(chunks), False


def decode_html(body: bytes, declared: str | None = None) -> tuple[str, str]:
    """``(text, charset)``: the HTTP header's charset, else a BOM, else ``<meta charset>``,
    else charset_normalizer's guess; GB2312/GBK are read as GB18030 (their superset, as
    browsers do), Latin-1 as Windows-1252."""
    candidates = []
    if body.startswith(b"\xef\xbb\xbf"):
        candidates.append("utf-8-sig")
    if declared:
        candidates.append(declared)
    for pattern in (_XML_ENCODING_RE, _META_CHARSET_RE):  # XHTML's declaration, then <meta>
        m = pattern.search(body[:4096])
        if m:
            candidates.append(m.group(1).decode("ascii", "replace"))
    for name in candidates:
        codec = _codec(name)
        if codec is None:
            continue
        try:
            return body.decode(codec), codec
        except UnicodeDecodeError:
            continue
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(body[:65536]).best()
    codec = _codec(best.encoding) if best is not None else None
    codec = codec or "utf-8"
    return body.decode(codec, errors="replace"), codec


def _codec(name: str) -> str | None:
    import codecs

    name = name.strip().lower()
    name = _SUPERSETS.get(name, name)
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def page_from_html(body: bytes, url: str, *, declared: str | None = None, truncated: bool = False) -> Page:
    """Read title, summary and canonical URL from an HTML document (pure; the fetcher's second
    half, and what the tests call directly)."""
    import lxml.html

    text, charset = decode_html(body, declared)
    try:
        doc = lxml.html.document_fromstring(text.encode("utf-8"),
                                            parser=lxml.html.HTMLParser(encoding="utf-8"))
    except Exception:  # lxml raises ParserError/ValueError on empty or odd documents
        doc = None
    meta: dict[str, str] = {}
    canonical = ""
    title_tag = ""
    if doc is not None:
        for el in doc.iter("meta"):
            key = (el.get("property") or el.get("name") or "").strip().lower()
            value = el.get("content")
            if key and value and key not in meta:
                meta[key] = _clean(value)
        for el in doc.iter("link"):
            rel = (el.get("rel") or "").lower().split()
            if "canonical" in rel and el.get("href") and not canonical:
                canonical = el.get("href").strip()
        found = doc.find(".//title")
        title_tag = _clean(found.text_content()) if found is not None else ""
    title = meta.get("og:title") or meta.get("twitter:title") or title_tag
    summary = meta.get("og:description") or meta.get("twitter:description") or meta.get("description") or ""
    link = url
    if canonical:
        resolved = urljoin(url, canonical)
        if (urlsplit(resolved).scheme in ("http", "https")
                and all(c.isprintable() and not c.isspace() for c in resolved)):
            link = resolved  # (a canonical URL holding a NUL or a control is ignored)
    return Page(url=strip_tracking(link), fetched_url=url, title=title, summary=summary,
                charset=charset, truncated=truncated)


def _clean(text: str) -> str:
    """A page's text on one line: control characters (a NUL from ``&#0;`` among them) become
    spaces, a lone surrogate U+FFFD (the page is someone else's input)."""
    from newsletter.audience.addresses import clean_text

    return " ".join(clean_text(text)[0].split())


@dataclass(frozen=True)
class LinkItem:
    """What ``add`` puts into the edition: the editor's words win over the page's."""

    url: str
    title: str
    summary: str
    page: Page | None = None     # what was fetched (printed so the editor can fix it)
    error: str | None = None     # why nothing was fetched


def escape_markdown(text: str) -> str:
    """Page text as literal Markdown: its ``*``, ``_``, brackets and ``<`` stay characters."""
    return re.sub(r"([\\`*_\[\]<>])", r"\\\1", text)


def link_item(url: str, *, title: str | None, summary: str | None, agent: str,
              fetch: bool = True, **limits) -> LinkItem:
    """The item for ``url``: the page is fetched unless both ``title`` and ``summary`` are given
    (or ``fetch`` is off). A fetch that fails is an error only when there is no ``title``: then
    ``FetchError`` propagates; with a title the item is made from what was given."""
    url = url.strip()
    if not re.match(r"^https?://[^\s/]+", url, re.IGNORECASE):
        raise FetchError(f"URL {url[:80]!r} is not an http(s) address: expected https://…")
    if fetch and not (title and summary is not None):
        try:
            page = fetch_page(url, agent=agent, **limits)
        except FetchError as err:
            if not title:
                raise
            return LinkItem(strip_tracking(url), title, summary or "", None, err.message)
        if not (title or page.title):
            raise FetchError(f"{url}: the page has no title; give the item's --title")
        return LinkItem(page.url, title or page.title,
                        summary if summary is not None else escape_markdown(page.summary), page)
    if not title:
        raise FetchError("--title is needed when the page is not fetched")
    return LinkItem(strip_tracking(url), title, summary or "")
