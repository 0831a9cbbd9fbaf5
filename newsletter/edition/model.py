"""The edition model: ``Edition`` and its parts (``Item``, ``Block``, ``Essay``), plain frozen data.

What the parser (``edition.parse``, ``edition.essay``) produces and everything after it reads:
checks, rendering, the send snapshot. No I/O and no parsing here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path


class BlockKind(str, Enum):
    PARAGRAPH = "paragraph"
    HEADING = "heading"
    QUOTE = "quote"
    LIST = "list"
    ORDERED_LIST = "ordered_list"
    CODE = "code"


def paragraphs(text: str) -> list[str]:
    """The paragraphs of a summary or quote (the model separates them by a blank line)."""
    return [p for p in text.split("\n\n") if p.strip()]


@dataclass(frozen=True)
class Block:
    """One block of the lede or essay. ``text`` is inline Markdown (raw text for code); a list
    keeps its entries in ``entries``; a quote's paragraphs are separated by blank lines."""

    kind: BlockKind
    text: str = ""
    entries: tuple[str, ...] = ()
    line: int = 0


@dataclass(frozen=True)
class Item:
    """One numbered item: a linked title and its summary (inline Markdown, paragraphs split by a
    blank line)."""

    number: int
    title: str
    url: str
    domain: str
    summary: str
    line: int = 0
    end: int = 0  # the item's last source line (where `add` appends after)
    marker: int | None = None  # the number written in the source (`3.`), when there is one
    title_html: tuple[str, ...] = ()  # raw HTML written in the title, which the title leaves out


@dataclass(frozen=True)
class Essay:
    heading: str = ""
    blocks: tuple[Block, ...] = ()
    source: Path | None = None  # the file it came from when not the edition itself
    heading_line: int = 0
    punctuation_fixed: int = 0  # half-width marks made full-width in a pasted article


@dataclass(frozen=True)
class Edition:
    """A parsed edition: what the templates and the text part are rendered from."""

    source: Path
    slug: str
    title: str
    subject: str
    preheader: str
    date: datetime
    lang: str
    categories: tuple[str, ...] = ()
    lede_blocks: tuple[Block, ...] = ()
    items: tuple[Item, ...] = ()
    essay: Essay | None = None
    number: int | None = None
    preheader_given: bool = False
    lines: dict[str, int] = field(default_factory=dict)  # front-matter key -> line, for checks
    separators: tuple[int, ...] = ()  # lines of the body's `---` separators

    @property
    def lede(self) -> str:
        """The lede's paragraphs as inline Markdown separated by blank lines."""
        return "\n\n".join(b.text for b in self.lede_blocks)
