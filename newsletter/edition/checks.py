"""Pre-send checks on an edition and its rendered email: what would embarrass us in the inbox.

Errors stop ``build`` and ``send`` (unless forced): HTML over Gmail's clipping size, an unsafe link,
a missing required field, an image without alt text. Warnings are reported and let through:
non-https links, a long subject, no preheader, large HTML, placeholder text left in.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from newsletter.edition.model import BlockKind, Edition
from newsletter.edition.markdown import Link, links
from newsletter.render.rendered import RenderedEmail

if TYPE_CHECKING:
    from newsletter.config import Config

CLIP_BYTES = 102 * 1024  # Gmail clips a message body past this: the footer (unsubscribe!) disappears
LARGE_BYTES = 80 * 1024
SUBJECT_MAX = 78
PREHEADER_MAX = 90
_PLACEHOLDER_RE = re.compile(r"\b(TODO|TK|TBD|FIXME|XXX)\b|lorem ipsum|\blorem\b", re.IGNORECASE)
_CASE_SENSITIVE = {"TODO", "TK", "TBD", "FIXME", "XXX"}
_IMG_RE = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
_ALT_RE = re.compile(r"""\balt\s*=\s*(?:"\s*[^"\s][^"]*"|'\s*[^'\s][^']*'|[^\s"'>]+)""", re.IGNORECASE)


class Level(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"  # what a command changed for the editor, to look over (not a problem)


@dataclass(frozen=True)
class Finding:
    level: Level
    code: str
    message: str
    line: int | None = None
    file: str | None = None

    def as_dict(self) -> dict:
        data = asdict(self)
        data["level"] = self.level.value
        return data

    def format(self, default_file: str | Path | None = None) -> str:
        """``FILE:LINE: level: message [code]`` (location parts left out when unknown)."""
        where = self.file or (str(default_file) if default_file else "")
        if where and self.line:
            where = f"{where}:{self.line}"
        prefix = f"{where}: " if where else ""
        return f"{prefix}{self.level.value}: {self.message} [{self.code}]"


def has_errors(findings: list[Finding]) -> bool:
    return any(f.level is Level.ERROR for f in findings)


def check_edition(edition: Edition, rendered: RenderedEmail, config: Config | None = None, *,
                  sending: bool = False) -> list[Finding]:
    """Every finding for ``edition`` as rendered, errors first, then in source order.

    ``config`` adds the checks on configuration the email depends on (the footer's postal address).
    ``sending`` is a real send: what is only unfinished in a draft (the skeleton's TODO markers and
    example link, no postal address) stops it; ``check``, ``build`` and the preview warn.
    """
    found = _source_links(edition)  # parsed once: both link and image checks read them
    findings = [
        *_size(rendered),
        *_links(edition, found),
        *_images(found, rendered),
        *_fields(edition, rendered, config, sending),
        *_placeholders(edition, sending),
        *_skeleton_link(edition, found, sending),
        *_dropped_html(edition),
        *_essay_notes(edition),
        *_header_fields(edition, rendered),
        *_numbering(edition),
    ]
    return sorted(findings, key=lambda f: (f.level is not Level.ERROR, f.file or "", f.line or 0))


def _size(rendered: RenderedEmail) -> Iterator[Finding]:
    size = len(rendered.html.encode("utf-8"))
    if size > CLIP_BYTES:
        yield Finding(Level.ERROR, "html-too-large",
                      f"HTML is {size / 1024:.0f} KB after inlining: Gmail clips messages over 102 KB "
                      "(the footer with the unsubscribe link would be hidden); cut items or text")
    elif size > LARGE_BYTES:
        yield Finding(Level.WARNING, "html-large", f"HTML is {size / 1024:.0f} KB: close to Gmail's 102 KB clip")


def _sources(edition: Edition) -> Iterator[tuple[str, int | None, str | None]]:
    """Every piece of editor-written inline Markdown: ``(text, line, file)``."""
    for block in edition.lede_blocks:
        yield from ((t, block.line, None) for t in (block.text, *block.entries))
    for item in edition.items:
        yield item.title, item.line, None
        yield item.summary, item.line, None
    if edition.essay is not None:
        file = str(edition.essay.source) if edition.essay.source else None
        for block in edition.essay.blocks:
            if block.kind is not BlockKind.CODE:
                yield from ((t, block.line, file) for t in (block.text, *block.entries))


def _source_links(edition: Edition) -> list[tuple[Link, int | None, str | None]]:
    """Every link and image in editor-written Markdown: ``(link, line, file)``."""
    return [(link, line, file) for text, line, file in _sources(edition) if text for link in links(text)]


def _links(edition: Edition, found: list[tuple[Link, int | None, str | None]]) -> Iterator[Finding]:
    items = [(Link(item.url, item.title), item.line, None) for item in edition.items]
    for link, line, file in items + found:
        kind = "image" if link.image else "link"
        if link.scheme and not link.safe:
            yield Finding(Level.ERROR, "unsafe-link",
                          f"unsafe {kind} {link.url[:60]!r}: only http, https and mailto are allowed", line, file)
        elif not link.scheme:
            yield Finding(Level.ERROR, "unsafe-link",
                          f"relative or empty {kind} target {link.url[:60]!r}: expected a full https:// URL",
                          line, file)
        elif link.scheme == "http":
            yield Finding(Level.WARNING, "insecure-link", f"non-https {kind} {link.url[:80]}", line, file)


def _images(found: list[tuple[Link, int | None, str | None]], rendered: RenderedEmail) -> Iterator[Finding]:
    """Markdown images without alt text (with their line), else any such ``<img>`` in the HTML."""
    missing = [Finding(Level.ERROR, "image-alt",
                       f"image without alt text: {link.url[:80]} (write ![what it shows](url))", line, file)
               for link, line, file in found if link.image and not link.text.strip()]
    yield from missing
    if missing:
        return
    for tag in _IMG_RE.findall(rendered.html):
        if not _ALT_RE.search(tag):
            yield Finding(Level.ERROR, "image-alt", f"image without alt text: {tag[:80]}")


def _fields(edition: Edition, rendered: RenderedEmail, config: Config | None, sending: bool = False,
            ) -> Iterator[Finding]:
    if not rendered.subject.strip():
        yield Finding(Level.ERROR, "missing-field", "the subject is empty", edition.lines.get("subject"))
    elif len(rendered.subject) > SUBJECT_MAX:
        yield Finding(Level.WARNING, "subject-long",
                      f"subject is {len(rendered.subject)} characters: phones cut it after {SUBJECT_MAX}",
                      edition.lines.get("subject") or edition.lines.get("title"))
    if subject_all_caps(rendered.subject):
        yield Finding(Level.WARNING, "subject-all-caps",
                      f"the subject's Latin letters are all capitals ({rendered.subject[:60]!r}): spam filters "
                      "score that (SpamAssassin SUBJ_ALL_CAPS, rspamd); write a `subject:` or set "
                      "subject_template = \"{name} · {title}\" in newsletter.toml",
                      edition.lines.get("subject") or edition.lines.get("title"))
    if not rendered.preheader.strip():
        yield Finding(Level.WARNING, "no-preheader",
                      "no preheader: add `preheader:` to the front matter or a lede (the inbox shows "
                      "the body's first words instead)", edition.lines.get("preheader"))
    elif len(rendered.preheader) > PREHEADER_MAX:
        yield Finding(Level.WARNING, "preheader-long",
                      f"preheader is {len(rendered.preheader)} characters: inboxes show about {PREHEADER_MAX}",
                      edition.lines.get("preheader"))
    if not edition.items and edition.essay is None and not edition.lede_blocks:
        yield Finding(Level.ERROR, "missing-field", "the edition has no content: no lede, items or essay")
    if config is not None and not config.postal_address.strip():
        yield Finding(Level.ERROR if sending else Level.WARNING, "missing-field",
                      "postal_address is not set in newsletter.toml: the footer must carry a postal "
                      "address (CAN-SPAM)" + ("" if sending else "; a real send refuses without it"),
                      file=str(config.file) if config.file else "newsletter.toml")


_LETTERS_RE = re.compile(r"[A-Za-z]")


def subject_all_caps(subject: str) -> bool:
    """True when a subject of more than one word has Latin letters and all of them are capitals
    (as SpamAssassin's SUBJ_ALL_CAPS sees it: a Chinese subject whose only letters are "AI")."""
    subject = subject.strip()
    if len(subject) < 10 or not any(c.isspace() for c in subject):
        return False
    letters = "".join(_LETTERS_RE.findall(subject))
    return bool(letters) and letters.isupper()


SKELETON_LINK = "https://example.com/"  # the example link in newsletter/skeletons/edition.md


def _skeleton_link(edition: Edition, found, sending: bool) -> Iterator[Finding]:
    items = [(Link(item.url, item.title), item.line, None) for item in edition.items]
    for link, line, file in items + list(found):
        if link.url.strip() == SKELETON_LINK:
            yield Finding(Level.ERROR if sending else Level.WARNING, "skeleton-link",
                          f"the skeleton's example link {SKELETON_LINK} is still in"
                          + ("" if sending else " (a real send refuses it)"), line, file)


_TAG_NAME_RE = re.compile(r"<\s*/?\s*([A-Za-z][A-Za-z0-9:-]*)")


def _dropped_html(edition: Edition) -> Iterator[Finding]:
    """Raw HTML the sanitiser will drop: a tag it does not allow (``<angle>`` in "Quotes & <angle>
    brackets"), or a comment. Quoted, with how to write it as text."""
    from newsletter.edition.markdown import ALLOWED_TAGS, inline_tokens

    def raw_html():
        for item in edition.items:  # a title keeps its text only: every tag in it vanishes
            yield from ((raw, item.line, None, True) for raw in item.title_html)
        for text, line, file in _sources(edition):
            if text and "<" in text:
                yield from ((t.content, line, file, False) for t in inline_tokens(text) if t.type == "html_inline")

    seen = set()
    for raw, line, file, in_title in raw_html():
        name = _TAG_NAME_RE.match(raw)
        if not in_title and name and name.group(1).lower() in ALLOWED_TAGS:
            continue
        if (raw, line, file) in seen:
            continue
        seen.add((raw, line, file))
        escaped = raw.replace("<", "\\<").replace(">", "\\>")
        yield Finding(Level.WARNING, "html-dropped",
                      f"raw HTML {raw[:60]!r} will vanish (the sanitiser drops it); to show it as text "
                      f"write {escaped[:64]}", line, file)


def _essay_notes(edition: Edition) -> Iterator[Finding]:
    essay = edition.essay
    if essay is not None and essay.punctuation_fixed:
        yield Finding(Level.NOTE, "essay-punctuation",
                      f"{essay.punctuation_fixed} half-width punctuation mark(s) between Chinese characters "
                      "in the pasted article made full-width (, → ，  : → ：  ( ) → （ ）…)",
                      essay.heading_line or None, str(essay.source) if essay.source else None)


def _placeholders(edition: Edition, sending: bool = False) -> Iterator[Finding]:
    texts = [(edition.title, edition.lines.get("title"), None)]
    if "subject" in edition.lines:
        texts.append((edition.subject, edition.lines["subject"], None))
    if edition.preheader_given:  # a derived preheader is the lede's, checked with the lede
        texts.append((edition.preheader, edition.lines.get("preheader"), None))
    texts += list(_sources(edition))
    if edition.essay is not None and edition.essay.heading:
        file = str(edition.essay.source) if edition.essay.source else None
        texts.append((edition.essay.heading, edition.essay.heading_line or None, file))
    seen = set()
    for text, line, file in texts:
        for match in _PLACEHOLDER_RE.finditer(text or ""):
            word = match.group(0)
            if match.group(1) and word not in _CASE_SENSITIVE:
                continue  # "todo" or "tk" in running text is a word, not a marker
            if (word.lower(), line, file) in seen:
                continue
            seen.add((word.lower(), line, file))
            yield Finding(Level.ERROR if sending else Level.WARNING, "placeholder-text",
                          f"placeholder text left in: {word!r}" + ("" if sending else " (a real send refuses it)"),
                          line, file)


def _header_fields(edition: Edition, rendered: RenderedEmail) -> Iterator[Finding]:
    """What becomes the Subject header: no control character, not even one hidden in an RFC 2047
    encoded word (``newsletter.headers``: the check every header value passes when sent)."""
    from newsletter.headers import problem

    fields = [("subject" if "subject" in edition.lines else "title", rendered.subject)]
    if "subject" in edition.lines and edition.title != rendered.subject:
        fields.append(("title", edition.title))
    for key, value in fields:
        found = problem(value)
        if found:
            yield Finding(Level.ERROR, "header-value",
                          f"{key} contains {found}: it goes into the Subject header of every message",
                          edition.lines.get(key))


def _numbering(edition: Edition) -> Iterator[Finding]:
    """Items written 1, 3, 7 are numbered 1, 2, 3 in the email: say so."""
    written = [item.marker for item in edition.items]
    if not written or any(m is None for m in written) or set(written) == {1}:
        return  # `1.` on every item is the Markdown way of not numbering by hand
    if written != list(range(written[0], written[0] + len(written))) or written[0] != 1:
        shown = ", ".join(map(str, written[:8])) + (", …" if len(written) > 8 else "")
        bad = next((item for item in edition.items if item.marker != item.number), edition.items[0])
        yield Finding(Level.WARNING, "item-numbering",
                      f"items are numbered {shown} in the source: the email numbers them 1 to "
                      f"{len(written)} in order (renumber them, or check none is missing)", bad.line)
