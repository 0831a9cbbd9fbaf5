"""The edition format and its parser: an edition source file becomes an ``Edition``.

An edition is YAML front matter (``title`` and ``date`` required), then the lede, a ``---`` line,
the numbered items (each a ``[title](url)`` line followed by its summary), another ``---`` line and
the essay. Items and essay are optional. Everything wrong is an ``EditionError`` naming the file
and line. The Markdown structure comes from markdown-it-py (imported lazily); the model holds each
paragraph as one line of inline Markdown, with line breaks inside CJK text already removed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date as date_type, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from newsletter.edition.markdown import cjk_ratio, join_lines, plain_text
from newsletter.edition.model import Block, BlockKind, Edition, Essay, Item
from newsletter.errors import EditionError

if TYPE_CHECKING:
    from newsletter.config import Config

_FENCE_RE = re.compile(r"^(?:---|\.\.\.)\s*$")
_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SENTENCE_END_RE = re.compile(r"(?<=[。！？!?])|(?<=[.](?=\s))")
PREHEADER_MAX = 90
# `[plain title](url)` alone on a line: no nested markup, escapes, entities or spaces in the URL.
_SIMPLE_LINK_RE = re.compile(r"^\[([^\[\]\\`*_<>&!]+)\]\(([^\s()<>\\&]+)\)\s*$")
MAX_NUMBER = 2**31 - 1  # the ledger's column (PostgreSQL's integer)
KNOWN_KEYS = {"title", "date", "categories", "subject", "preheader", "lang", "slug", "number"}


def parse_edition(text: str, *, path: Path, config: Config) -> Edition:
    """Parse edition source ``text`` (read from ``path``, used in messages)."""
    meta, lines, body, body_line = split_front_matter(text, path)
    fields_ = _front_matter_fields(meta, lines, path)
    sections = _sections(body, body_line, path)
    lede, items, essay = _classify(sections, path)
    edition = _assemble(fields_, lines, lede, items, essay, path, config)
    return replace(edition, separators=tuple(s.separator for s in sections if s.separator))


def split_front_matter(text: str, path: Path) -> tuple[dict[str, Any], dict[str, int], str, int]:
    """``(meta, key lines, body, first body line)``; raises when the front matter is missing or bad."""
    import yaml

    src = text.splitlines()
    if not src or src[0].strip() != "---":
        raise EditionError("no front matter: expected a first line `---`, YAML with title and date, "
                           "and a closing `---`", file=path, line=1)
    end = next((i for i in range(1, len(src)) if _FENCE_RE.match(src[i])), None)
    if end is None:
        raise EditionError("front matter is not closed: expected a `---` line after the YAML", file=path, line=1)
    yaml_text = "\n".join(src[1:end])
    try:
        # libyaml's loader when built in: same safe constructor, a fraction of the time.
        meta = yaml.load(yaml_text, Loader=_loader()) or {}
    except _DuplicateKey as dup:
        raise EditionError(f"duplicate front-matter key {dup.key!r} on lines {dup.first + 2} and "
                           f"{dup.second + 2}: keep one", file=path, line=dup.second + 2) from None
    except yaml.YAMLError as err:
        # The context mark is where the broken construct starts (an unclosed `[` or quote);
        # the problem mark is where the parser gave up, often a line later.
        mark = getattr(err, "context_mark", None) or getattr(err, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 1
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise EditionError(f"bad YAML in front matter: {problem}", file=path, line=line) from None
    if not isinstance(meta, dict):
        raise EditionError("front matter must be YAML `key: value` lines", file=path, line=2)
    key_lines = {}
    for i, line in enumerate(src[1:end], start=2):
        m = re.match(r"^([A-Za-z_][\w-]*)\s*:", line)
        if m:
            key_lines.setdefault(m.group(1), i)
    return meta, key_lines, "\n".join(src[end + 1:]), end + 2


class _DuplicateKey(Exception):
    def __init__(self, key: str, first: int, second: int):
        super().__init__(key)
        self.key, self.first, self.second = key, first, second


_LOADER = None


def _loader():
    """libyaml's safe loader (when built in) that keeps timestamps as text (``date`` is parsed
    by ``_parse_date``, so an impossible date is a one-line error, not a constructor crash) and
    refuses a key given twice in one mapping (YAML would silently keep the last)."""
    global _LOADER
    if _LOADER is None:
        import yaml

        base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

        class Loader(base):  # type: ignore[misc, valid-type]
            def construct_mapping(self, node, deep=False):
                seen: dict = {}
                for key_node, _ in node.value:
                    key = self.construct_object(key_node, deep=True)
                    try:
                        if key in seen:
                            raise _DuplicateKey(str(key), seen[key], key_node.start_mark.line)
                        seen[key] = key_node.start_mark.line
                    except TypeError:  # an unhashable key: SafeConstructor reports it
                        break
                return super().construct_mapping(node, deep=deep)

        Loader.yaml_implicit_resolvers = {
            first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
            for first, resolvers in base.yaml_implicit_resolvers.items()}
        _LOADER = Loader
    return _LOADER


def _front_matter_fields(meta: dict[str, Any], lines: dict[str, int], path: Path) -> dict[str, Any]:
    def fail(key: str, message: str):
        raise EditionError(message, file=path, line=lines.get(key, 1))

    for key in meta:
        if key not in KNOWN_KEYS:
            fail(str(key), f"unknown front-matter key {key!r}: expected one of {', '.join(sorted(KNOWN_KEYS))}")
    title = meta.get("title")
    if title is None or not str(title).strip():
        fail("title", "missing title: expected `title: \"…\"` in the front matter")
    if isinstance(title, bool) or not isinstance(title, (str, int, float)):
        fail("title", f"title must be text, not a YAML {_yaml_kind(title)}: expected `title: \"…\"` "
                      "(quote it when it holds [ ] { } : or #)")
    out: dict[str, Any] = {"title": " ".join(str(title).split())}
    out["date"] = _parse_date(meta.get("date"), lambda msg: fail("date", msg))
    for key in ("subject", "preheader", "lang", "slug"):
        value = meta.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int, float))):
            fail(key, f"{key} must be text, not a YAML {_yaml_kind(value)}: expected `{key}: \"…\"` "
                      "(quoted: yes/no/true/false are YAML booleans, [ ] a list)")
        out[key] = " ".join(str(value).split()) if value is not None else None
    out["categories"] = _categories(meta.get("categories"), lambda msg: fail("categories", msg))
    from newsletter import text

    for key in ("title", "subject", "preheader", "categories"):  # YAML's "\0", "\ud800"…
        for value in (out[key] if key == "categories" else (out[key] or "",)):
            found = text.problem(value)
            if found:
                fail(key, f"{key} contains {found}: expected plain text")
    number = meta.get("number")
    if number is not None and (not isinstance(number, int) or isinstance(number, bool)
                               or not 1 <= number <= MAX_NUMBER):
        fail("number", f"number must be a positive whole number (at most {MAX_NUMBER})")
    out["number"] = number
    if out["slug"] is not None and not _SLUG_RE.match(out["slug"]):
        fail("slug", "slug must be lower-case letters, digits, '-', '.' or '_' (it becomes a file name and URL)")
    if out["lang"] is not None and not re.fullmatch(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*", out["lang"]):
        fail("lang", f"lang {out['lang'][:40]!r} is not a language tag: expected e.g. en, zh-CN")
    if out["subject"] is not None and not out["subject"]:
        fail("subject", "subject is empty: remove it to use the title, or write one")
    return out


def _yaml_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return {list: "list", dict: "mapping", type(None): "null"}.get(type(value), type(value).__name__)


_DATE_ONLY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _parse_date(value: Any, fail) -> datetime:
    if value is None:
        fail("missing date: expected `date: 2025-10-14T09:00:00+08:00` (ISO 8601 with offset)")
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date_type):
        fail(f"date {value} has no time and offset: expected ISO 8601 like 2025-10-14T09:00:00+08:00")
    elif isinstance(value, bool) or not isinstance(value, (str, int, float)):
        fail(f"date must be text, not a YAML {_yaml_kind(value)}: expected ISO 8601 like 2025-10-14T09:00:00+08:00")
    else:
        text = str(value).strip()
        if _DATE_ONLY_RE.fullmatch(text):
            fail(f"date {text} has no time and offset: expected ISO 8601 like 2025-10-14T09:00:00+08:00")
        try:
            parsed = datetime.fromisoformat(text)
        except (ValueError, OverflowError) as err:
            # "day is out of range for month", "hour must be in 0..23", an offset of 24 hours…
            why = "" if "Invalid isoformat" in str(err) else (
                " (the UTC offset must be under 24 hours)" if "offset" in str(err) else f" ({err})")
            fail(f"unparseable date {text[:60]!r}{why}: expected ISO 8601 like 2025-10-14T09:00:00+08:00")
        if parsed.year < 1970 or parsed.year > 9000:
            fail(f"date {text[:60]!r} has the year {parsed.year}: expected a real date like 2025-10-14T09:00:00+08:00")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        fail(f"date {parsed.isoformat()} has no UTC offset: expected e.g. 2025-10-14T09:00:00+08:00")
    return parsed


def _categories(value: Any, fail) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [v for v in (p.strip() for p in value.split(",")) if v]
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        fail("categories must be a list of names, e.g. [\"AI\", \"Hardware\"]")
    return tuple(str(v).strip() for v in value if str(v).strip())


@dataclass
class _Section:
    nodes: list  # markdown-it SyntaxTreeNode children between two `---` lines
    line: int  # the line the section starts on
    separator: int | None = None  # the `---` line that opens it


def _sections(body: str, body_line: int, path: Path) -> list[_Section]:
    from markdown_it.tree import SyntaxTreeNode

    from newsletter.edition.markdown import block_parser

    root = SyntaxTreeNode(block_parser().parse(body))
    sections = [_Section([], body_line)]
    for node in root.children:
        if node.type == "hr":
            sections.append(_Section([], body_line + node.map[1], body_line + node.map[0]))
        else:
            sections[-1].nodes.append(node)
    for node in root.walk(include_self=False):
        if node.map:
            node.meta["line"] = body_line + node.map[0]
    return sections


def _classify(sections: list[_Section], path: Path):
    """Split the sections into lede, items and essay: the items are the first section whose first
    block is a numbered list; before it the lede, after it the essay."""
    items_at = next((i for i, s in enumerate(sections) if s.nodes and s.nodes[0].type == "ordered_list"), None)
    if items_at is None:
        lede = sections[0].nodes
        essay = [n for s in sections[1:] for n in s.nodes]
        return _blocks(lede), (), _essay(essay)
    if items_at > 1:
        extra = sections[1].nodes[0] if sections[1].nodes else None
        line = extra.meta["line"] if extra is not None else sections[1].line
        raise EditionError("expected the numbered items right after the lede's `---` line", file=path, line=line)
    lede = sections[0].nodes if items_at == 1 else []
    items = _items(sections[items_at].nodes, path)
    essay = [n for s in sections[items_at + 1:] for n in s.nodes]
    return _blocks(lede), items, _essay(essay)


def _items(nodes: list, path: Path) -> tuple[Item, ...]:
    items: list[Item] = []
    for node in nodes:
        if node.type == "ordered_list":
            for entry in node.children:
                items.append(_item(entry, len(items) + 1, path))
        elif node.type == "paragraph" and items:
            # A summary paragraph that lost its indentation still belongs to the item above it.
            extra = _inline(node)
            items[-1] = replace(items[-1], summary="\n\n".join(p for p in (items[-1].summary, extra) if p),
                                end=node.meta["line"] + node.map[1] - node.map[0] - 1)
        else:
            raise EditionError("expected a numbered item `N. [title](url)` or its indented summary here",
                               file=path, line=node.meta.get("line"))
    return tuple(items)


def _item(entry, number: int, path: Path) -> Item:
    line = entry.meta["line"]
    end = line + entry.map[1] - entry.map[0] - 1
    children = list(entry.children)
    if not children or children[0].type != "paragraph":
        raise EditionError(f"item {number} has no link: expected its first line to be `[title](https://…)`",
                           file=path, line=line)
    title, url, rest = _link_line(children[0], number, path, line)
    raw_html: tuple[str, ...] = ()
    if "<" in _inline_source(children[0]).split("\n")[0]:
        tokens = _inline_children(children[0])
        close = next((i for i, t in enumerate(tokens) if t.type == "link_close"), 0)
        raw_html = tuple(t.content for t in tokens[1:close] if t.type == "html_inline")
    summary = [rest] if rest else []
    # A list or quote inside a summary is kept as running text: a summary is paragraphs.
    summary += [p for p in (_flatten(c) for c in children[1:]) if p]
    marker = str(getattr(entry, "info", "") or "")
    return Item(number=number, title=title, url=url, domain=domain_of(url), summary="\n\n".join(summary),
                line=line, end=end, marker=int(marker) if marker.isdigit() else None, title_html=raw_html)


def _link_line(paragraph, number: int, path: Path, line: int | None) -> tuple[str, str, str]:
    """The item's first paragraph: ``[title](url)``, maybe followed on the next lines by summary."""
    source_lines = _inline_source(paragraph).split("\n")
    simple = _SIMPLE_LINK_RE.match(source_lines[0])
    if simple and simple.group(1).strip():
        # The common case, without a full inline parse (the same normalisation as markdown-it's).
        from newsletter.edition.markdown import parser

        rest = join_lines(source_lines[1:]) if len(source_lines) > 1 else ""
        return simple.group(1).strip(), parser().normalizeLink(simple.group(2)), rest
    tokens = _inline_children(paragraph)
    if not tokens or tokens[0].type != "link_open":
        raise EditionError(f"item {number} has no link: expected its first line to be `[title](https://…)`",
                           file=path, line=line)
    href = str(tokens[0].attrGet("href") or "").strip()
    close = next(i for i, t in enumerate(tokens) if t.type == "link_close")
    title = "".join(t.content for t in tokens[1:close] if t.type in ("text", "code_inline")).strip()
    if not href:
        raise EditionError(f"item {number} has an empty link target: expected `[title](https://…)`",
                           file=path, line=line)
    if not title:
        raise EditionError(f"item {number} has an empty title: expected `[title](url)`", file=path, line=line)
    rest = join_lines(source_lines[1:]) if len(source_lines) > 1 else ""
    trailing = [t for t in tokens[close + 1:] if t.type not in ("softbreak", "hardbreak")]
    if trailing and not rest:
        rest = "".join(t.content for t in trailing).strip()
    return title, href, rest


def _inline_children(paragraph):
    from newsletter.edition.markdown import inline_tokens

    return inline_tokens(_inline_source(paragraph))


def _inline_source(node) -> str:
    inline = node.children[0] if node.children else None
    return inline.content if inline is not None else ""


def _inline(node) -> str:
    return join_lines(_inline_source(node).split("\n"))


def _blocks(nodes: list) -> tuple[Block, ...]:
    return tuple(b for b in (_block(n) for n in nodes) if b is not None)


def _block(node) -> Block | None:
    line = node.meta.get("line", 0)
    if node.type == "paragraph":
        return Block(BlockKind.PARAGRAPH, _inline(node), line=line)
    if node.type == "heading":
        return Block(BlockKind.HEADING, _inline(node), line=line)
    if node.type == "blockquote":
        paras = [_inline(c) if c.type in ("paragraph", "heading") else _flatten(c) for c in node.children]
        return Block(BlockKind.QUOTE, "\n\n".join(p for p in paras if p), line=line)
    if node.type in ("bullet_list", "ordered_list"):
        kind = BlockKind.LIST if node.type == "bullet_list" else BlockKind.ORDERED_LIST
        entries = tuple(" ".join(_flatten(c) for c in entry.children) for entry in node.children)
        return Block(kind, entries=entries, line=line)
    if node.type in ("fence", "code_block"):
        return Block(BlockKind.CODE, node.content.rstrip("\n"), line=line)
    if node.type == "html_block":
        # Raw HTML is kept as inline Markdown; the renderer's sanitiser decides what survives.
        return Block(BlockKind.PARAGRAPH, join_lines(node.content.split("\n")), line=line)
    return None


def _flatten(node) -> str:
    if node.type in ("paragraph", "heading"):
        return _inline(node)
    return " ".join(_flatten(c) for c in node.children) if node.children else node.content.strip()


def essay_from_markdown(text: str, first_line: int = 1) -> Essay | None:
    """An essay written in Markdown on its own (an optional first heading, then blocks)."""
    nodes = [n for section in _sections(text, first_line, Path("essay")) for n in section.nodes]
    return _essay(nodes)


def _essay(nodes: list) -> Essay | None:
    blocks = _blocks(nodes)
    if not blocks:
        return None
    heading = ""
    heading_line = 0
    if blocks[0].kind is BlockKind.HEADING:
        heading, heading_line, blocks = blocks[0].text, blocks[0].line, blocks[1:]
    return Essay(heading=heading, blocks=blocks, heading_line=heading_line)


def _assemble(f: dict[str, Any], lines: dict[str, int], lede, items, essay, path: Path, config: Config) -> Edition:
    slug = f["slug"] or f["date"].strftime("%Y-%m-%d")
    lede_text = "\n\n".join(b.text for b in lede if b.kind is BlockKind.PARAGRAPH)
    preheader = f["preheader"] if f["preheader"] is not None else first_sentence(lede_text)
    lang = f["lang"] or detect_lang(f["title"], lede_text, items, config.lang)
    subject = f["subject"] or default_subject(config, f["title"], f["date"], f["number"])
    return Edition(
        source=path, slug=slug, title=f["title"], subject=subject,
        preheader=preheader, date=f["date"], lang=lang, categories=f["categories"],
        lede_blocks=lede, items=items, essay=essay,
        number=f["number"], preheader_given=f["preheader"] is not None,
        lines=dict(lines),
    )


def numbered(edition: Edition, number: int | None, config: Config) -> Edition:
    """``edition`` with the number it has or will get (assigned at its first send), and a subject
    from ``subject_template`` filled in again when the front matter sets none (``{number}``)."""
    subject = edition.subject if "subject" in edition.lines else default_subject(
        config, edition.title, edition.date, number)
    return replace(edition, number=number, subject=subject)


def default_subject(config: Config, title: str, day: datetime, number: int | None) -> str:
    """The subject of an edition whose front matter sets none: ``subject_template`` filled in
    (``{title}``, ``{name}``, ``{date}``, ``{number}``; checked when the configuration loads)."""
    template = config.subject_template or "{title}"
    return " ".join(template.format(title=title, name=config.name, date=day.strftime("%Y-%m-%d"),
                                    number=number if number is not None else "").split())


def detect_lang(title: str, lede: str, items: tuple[Item, ...], default: str) -> str:
    """``zh-CN`` when CJK characters outnumber Latin letters in the edition's text, else ``default``."""
    sample = " ".join([title, lede, *(i.title + i.summary for i in items)])
    return "zh-CN" if cjk_ratio(sample) > 0.5 else default


def first_sentence(markdown: str, limit: int = PREHEADER_MAX) -> str:
    """The first sentence of ``markdown`` as plain text, cut at ``limit`` characters with '…'."""
    text = plain_text(markdown.split("\n\n", 1)[0]).strip() if markdown else ""
    if not text:
        return ""
    sentence = _SENTENCE_END_RE.split(text, maxsplit=1)[0].strip()
    if len(sentence) <= limit:
        return sentence
    cut = sentence[: limit - 1]
    if " " in cut and cjk_ratio(cut) < 0.5:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,，、;；:：") + "…"


def folder_position(path: Path) -> int | None:
    """The edition's place among the dated editions in its folder (1-based): how editions were
    numbered before numbers were stored, used only to give sends from then the number they showed.
    (An edition's number is now assigned at its first send: ``newsletter.store.ledger.planned_number``.)"""
    if not re.match(r"^\d{4}-\d{2}-\d{2}", path.name):
        return None
    try:
        names = sorted(p.name for p in path.parent.glob("[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*.md"))
    except OSError:
        return None
    return names.index(path.name) + 1 if path.name in names else None


def domain_of(url: str) -> str:
    """The host of ``url`` for display: IDN in Unicode, without a leading ``www.``."""
    from urllib.parse import urlsplit

    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    try:
        host = host.encode("ascii").decode("idna")
    except (UnicodeError, ValueError):
        pass
    return host.removeprefix("www.")
