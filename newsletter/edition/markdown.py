"""Inline Markdown written by editors: to safe HTML, to plain text, and its links.

markdown-it-py parses; nh3 sanitises what comes out, so raw HTML an editor types is either
allowed (a short list of inline tags) or dropped, and only http, https and mailto links survive.
markdown-it-py is imported lazily: the CLI's start-up time is measured.
"""

from __future__ import annotations

import functools
import re
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

SAFE_SCHEMES = frozenset({"http", "https", "mailto"})
_SCHEME_RE = re.compile(r"^\s*([a-zA-Z][a-zA-Z0-9+.-]*):")
_CJK_RE = re.compile(
    r"[\u2e80-\u2fff\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3400-\u4dbf"
    r"\u4e00-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef]"
)
_LATIN_RE = re.compile(r"[A-Za-z]")
ALLOWED_TAGS = {"a", "b", "strong", "i", "em", "code", "br", "sup", "sub", "s", "del", "mark", "img", "span"}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "width", "height", "title"},
}


@dataclass(frozen=True)
class Link:
    """A link or image target found in Markdown source."""

    url: str
    text: str
    image: bool = False

    @property
    def scheme(self) -> str:
        """The URL's scheme in lower case, ``""`` for a relative URL."""
        match = _SCHEME_RE.match(self.url)
        return match.group(1).lower() if match else ""

    @property
    def safe(self) -> bool:
        return self.scheme in SAFE_SCHEMES


def is_cjk(char: str) -> bool:
    """True for Han, kana, bopomofo and full-width punctuation."""
    return bool(_CJK_RE.match(char))


def cjk_ratio(text: str) -> float:
    """Share of CJK characters among letters and CJK characters in ``text``."""
    cjk = len(_CJK_RE.findall(text))
    latin = len(_LATIN_RE.findall(text))
    return cjk / (cjk + latin) if cjk + latin else 0.0


def join_lines(lines: list[str]) -> str:
    """Join the lines of one paragraph: a break between CJK characters is no space."""
    out = ""
    for line in (ln.strip() for ln in lines):
        if not line:
            continue
        if out and not (is_cjk(out[-1]) or is_cjk(line[0])):
            out += " "
        out += line
    return out


@functools.lru_cache(maxsize=1)
def parser():
    """The shared markdown-it parser (CommonMark, raw HTML passed on to nh3, no setext headings)."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": True, "typographer": False})
    # A `---` under a lede paragraph is the edition's separator, never a setext heading.
    md.disable("lheading")
    # Accept every URL while parsing so `check` can see an unsafe one; nh3 drops it from HTML.
    md.validateLink = lambda url: True
    return md


@functools.lru_cache(maxsize=1)
def block_parser():
    """A parser for block structure only: the edition parser reads the inline content of the few
    places it needs (an item's link line) itself, so inline parsing of everything is skipped."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": True})
    md.disable("lheading")
    md.core.ruler.disable("inline")
    return md


# Elements nested deeper than this are refused before rendering: mjml-python recurses once per
# level and overflows its stack (a segfault, exit 139) somewhere under 10,000 levels, e.g. on
# 20,000 `*`, a letter, 20,000 `*`. Real editions nest a handful of levels.
MAX_NESTING = 64
_TAG_RE = re.compile(r"<(/?)([A-Za-z][\w:.-]*)(?:[^>\"']|\"[^\"]*\"|'[^']*')*?(/?)>")
_VOID = frozenset("area base br col embed hr img input link meta source track wbr".split())


class NestingTooDeep(ValueError):
    """HTML (from Markdown emphasis, raw HTML or a template) nested past ``MAX_NESTING``."""

    def __init__(self, depth: int):
        super().__init__(f"nested {depth} levels deep")
        self.depth = depth


def nesting_depth(html: str, limit: int | None = None) -> int:
    """The deepest element nesting in ``html`` (stops counting once past ``limit``)."""
    if html.count("<") <= (limit or 0):
        return html.count("<")  # cannot be deeper than it has tags
    depth = deepest = 0
    for closing, name, self_closing in _TAG_RE.findall(html):
        if closing:
            depth = max(depth - 1, 0)
        elif not self_closing and name.lower() not in _VOID:
            depth += 1
            if depth > deepest:
                deepest = depth
                if limit is not None and deepest > limit:
                    return deepest
    return deepest


def inline_html(source: str) -> str:
    """Inline Markdown to sanitised HTML (no surrounding ``<p>``). ``NestingTooDeep`` when the
    result nests more than ``MAX_NESTING`` elements deep."""
    md = parser()
    html = sanitizer().clean(md.renderer.render(inline_tokens(source), md.options, {}))
    depth = nesting_depth(html, MAX_NESTING)
    if depth > MAX_NESTING:
        raise NestingTooDeep(depth)
    return html


@functools.lru_cache(maxsize=1)
def sanitizer():
    """The nh3 cleaner for editor-written HTML, built once (building it costs more than a clean)."""
    import nh3

    return nh3.Cleaner(tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES, url_schemes=set(SAFE_SCHEMES),
                       link_rel=None, strip_comments=True)


_SHARED: ContextVar[dict | None] = ContextVar("newsletter_inline_tokens", default=None)


@contextmanager
def shared_inline_parse():
    """Within this block each inline source is parsed once: rendering an edition needs the same
    paragraph as HTML and as text. Scoped to one render, so nothing outlives it."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def inline_tokens(source: str):
    """The inline children tokens of ``source`` (read-only: they may be shared)."""
    memo = _SHARED.get()
    if memo is not None and source in memo:
        return memo[source]
    tokens = parser().parseInline(source)
    children = tokens[0].children or [] if tokens else []
    if memo is not None:
        memo[source] = children
    return children


def links(source: str) -> list[Link]:
    """Every link and image target in inline Markdown ``source`` (raw HTML ones included)."""
    found: list[Link] = []
    children = inline_tokens(source)
    for i, tok in enumerate(children):
        if tok.type == "link_open":
            found.append(Link(str(tok.attrGet("href") or ""), _text_until_close(children, i + 1)))
        elif tok.type == "image":
            found.append(Link(str(tok.attrGet("src") or ""), tok.content, image=True))
        elif tok.type == "html_inline":
            found.extend(_html_links(tok.content))
    return found


_HTML_TAG_RE = re.compile(r"<([A-Za-z][\w-]*)((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>")
_HTML_ATTR_RE = re.compile(r"""([^\s=/>"']+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?""")


def _html_links(html: str) -> list[Link]:
    """``href`` and ``src`` targets of raw HTML tags; an ``<img>`` carries its ``alt`` text."""
    from html import unescape

    out = []
    for tag in _HTML_TAG_RE.finditer(html):
        attrs = {}
        for m in _HTML_ATTR_RE.finditer(tag.group(2)):
            value = next((g for g in m.groups()[1:] if g is not None), "")
            attrs.setdefault(m.group(1).lower(), unescape(value))
        for name in ("href", "src"):
            if name in attrs:
                alt = attrs.get("alt", "") if tag.group(1).lower() == "img" else ""
                out.append(Link(attrs[name], alt, image=name == "src"))
    return out


def _text_until_close(children, start: int) -> str:
    parts = []
    for tok in children[start:]:
        if tok.type == "link_close":
            break
        if tok.type in ("text", "code_inline"):
            parts.append(tok.content)
    return "".join(parts)


def plain_text(source: str) -> str:
    """Inline Markdown to plain text: markup dropped, a link as ``text (url)`` when they differ."""
    children = inline_tokens(source)
    out: list[str] = []
    href_stack: list[tuple[str, int]] = []
    for tok in children:
        if tok.type in ("text", "code_inline"):
            out.append(tok.content)
        elif tok.type == "softbreak":
            out.append(" ")
        elif tok.type == "hardbreak":
            out.append("\n")
        elif tok.type == "image":
            out.append(tok.content)
        elif tok.type == "link_open":
            href_stack.append((str(tok.attrGet("href") or ""), len(out)))
        elif tok.type == "link_close" and href_stack:
            href, at = href_stack.pop()
            text = "".join(out[at:])
            if href and Link(href, text).safe and href.removeprefix("mailto:") != text:
                out.append(f" ({href})")
    return "".join(out)


def escape(text: str) -> str:
    """Backslash-escape Markdown syntax so plain text stays literal when parsed as Markdown."""
    return re.sub(r"([\\`*_\[\]<>!#|~&])", r"\\\1", text)
