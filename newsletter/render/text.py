"""The plain-text part, rendered from the ``Edition`` model (never scraped from the HTML).

Readable on its own: masthead, title, lede, numbered items each with its URL on its own line, the
essay and a footer with the unsubscribe link. Latin text is wrapped at 72 columns; a paragraph
with CJK text is left unwrapped, since a mail client wraps it better than a fixed column can
without breaking mid-sentence.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

from newsletter.edition.model import Block, BlockKind, Edition, paragraphs
from newsletter.edition.markdown import Link, cjk_ratio, is_cjk, plain_text
from newsletter.render.rendered import placeholder
from newsletter.render.view import date_label, essay_label, labels, web_url

if TYPE_CHECKING:
    from newsletter.config import Config

WIDTH = 72
RULE = "-" * 40


def render_text(edition: Edition, config: Config) -> str:
    """The text part of ``edition`` (with the per-reader placeholders), ending in a newline."""

    lab = labels(edition.lang)
    masthead = " · ".join(p for p in (config.name, date_label(edition),
                                      lab["number"].format(n=edition.number) if edition.number else "") if p)
    parts = [masthead, "", edition.title, "=" * min(WIDTH, _width(edition.title)), ""]
    for block in edition.lede_blocks:
        parts += [block_text(block), ""]
    for item in edition.items:
        parts += [_item_text(item), ""]
    if edition.essay is not None:
        parts += [RULE, ""]

        parts += [edition.essay.heading or essay_label(edition, config), ""]
        for block in edition.essay.blocks:
            parts += [block_text(block), ""]
    parts += [RULE, _footer(edition, config, lab, web_url(edition, config))]
    return "\n".join(parts).rstrip("\n") + "\n"


def _item_text(item) -> str:
    head = f"{item.number}. {item.title}"
    indent = " " * (len(str(item.number)) + 2)
    lines = [wrap(head, subsequent_indent=indent)]
    for paragraph in paragraphs(item.summary):
        lines.append(wrap(plain_text(paragraph), initial_indent=indent, subsequent_indent=indent))
    if Link(item.url, item.title).safe:  # an unsafe link never reaches either part
        lines.append(indent + item.url)
    return "\n".join(lines)


def block_text(block: Block) -> str:
    """One lede/essay block as plain text."""
    if block.kind is BlockKind.PARAGRAPH:
        return wrap(plain_text(block.text))
    if block.kind is BlockKind.HEADING:
        return plain_text(block.text).upper() if cjk_ratio(block.text) < 0.5 else plain_text(block.text)
    if block.kind is BlockKind.QUOTE:
        paras = [wrap(plain_text(p), initial_indent="> ", subsequent_indent="> ")
                 for p in paragraphs(block.text)]
        return "\n>\n".join(paras)
    if block.kind in (BlockKind.LIST, BlockKind.ORDERED_LIST):
        out = []
        for n, entry in enumerate(block.entries, start=1):
            bullet = f"{n}. " if block.kind is BlockKind.ORDERED_LIST else "- "
            out.append(wrap(plain_text(entry), initial_indent=bullet, subsequent_indent=" " * len(bullet)))
        return "\n".join(out)
    return textwrap.indent(block.text, "    ")


def _footer(edition: Edition, config: Config, lab: dict[str, str], url: str) -> str:
    lines = [wrap(lab["why"].format(name=config.name, email=placeholder("email"))), "",
             f"{lab['unsubscribe']}: {placeholder('unsubscribe_url')}",
             f"{lab['preferences']}: {placeholder('preferences_url')}",
             f"{lab['view_in_browser']}: {url}"]
    if config.postal_address:
        lines += ["", config.postal_address]
    return "\n".join(lines)


def wrap(text: str, initial_indent: str = "", subsequent_indent: str = "") -> str:
    """Wrap Latin text at 72 columns; CJK text keeps its lines whole. URLs are never broken."""
    if cjk_ratio(text) >= 0.2:
        return initial_indent + text
    return textwrap.fill(text, WIDTH, initial_indent=initial_indent, subsequent_indent=subsequent_indent,
                         break_long_words=False, break_on_hyphens=False) or initial_indent.rstrip()


def _width(text: str) -> int:
    """Display width: CJK characters take two columns."""
    return sum(2 if is_cjk(c) else 1 for c in text)
