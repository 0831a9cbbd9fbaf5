"""Reading edition and essay files: the edge where the edition stage touches the disk.

``load_edition`` reads a source file and parses it (``edition.parse``), with an essay file
(``edition.essay``) in place of its own essay when one is given.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.edition.essay import markdown_essay, pasted_essay
from newsletter.edition.model import Edition, Essay
from newsletter.edition.parse import parse_edition
from newsletter.errors import EditionError

if TYPE_CHECKING:
    from newsletter.config import Config

_SLUG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")


def load_edition(path: str | Path, *, config: Config, essay_path: str | Path | None = None) -> Edition:
    """Read and parse the edition at ``path``; ``essay_path`` replaces its essay.

    Raises ``EditionError`` (file and line) on anything that does not fit the format.
    """
    path = Path(path)
    text = read_source(path)
    edition = parse_edition(text, path=path, config=config)
    if essay_path is not None:
        edition = replace(edition, essay=load_essay(essay_path))
    return edition


def read_source(path: Path, kind: str = "edition", example: str = " (editions/<date>.md)") -> str:
    """The UTF-8 text of an edition (or ``kind``) file, BOM dropped; unreadable files are an
    ``EditionError`` naming the file."""
    from newsletter import text as storable

    if storable.problem(str(path)):  # bytes that are not UTF-8 in a folder or file name
        raise EditionError("the path is not UTF-8 text: rename it (the delivery ledger records "
                           "where each edition came from)", file=path)
    try:
        text = path.read_text(encoding="utf-8").removeprefix("\ufeff")
    except FileNotFoundError:
        raise EditionError(f"no such {kind} file", file=path) from None
    except IsADirectoryError:
        raise EditionError(f"is a folder, expected an {kind} file{example}", file=path) from None
    except UnicodeDecodeError:
        raise EditionError("not UTF-8 text", file=path) from None
    except OSError as err:
        raise EditionError(f"cannot read: {err.strerror}", file=path) from None
    if "\x00" in text:  # a corrupted or binary file; no database text column holds a NUL
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise EditionError("contains a NUL character (U+0000): expected plain UTF-8 text",
                           file=path, line=line)
    return text


def load_essay(path: str | Path) -> Essay:
    """Read the essay at ``path``: ``.md`` files as Markdown, anything else as a pasted article."""
    path = Path(path)
    text = read_source(path, "essay", "")
    essay = markdown_essay(text) if path.suffix.lower() in (".md", ".markdown") else pasted_essay(text)
    if not essay.blocks and not essay.heading:
        raise EditionError("essay file is empty: expected a title line and paragraphs", file=path, line=1)
    return replace(essay, source=path)


def valid_slug(slug: str) -> bool:
    """Slugs come from URLs; only plain file-name characters may reach the file system."""
    return bool(_SLUG_RE.match(slug)) and ".." not in slug


def find_source(config: Config, slug: str) -> Path | None:
    """The edition file for ``slug``: ``editions/<slug>.md``, else the file whose edition has that
    slug."""
    if not valid_slug(slug):
        return None
    direct = config.editions_path / f"{slug}.md"
    if direct.is_file():
        return direct
    from newsletter.errors import NewsletterError

    for path in sorted(config.editions_path.glob("*.md")):
        try:
            if load_edition(path, config=config).slug == slug:
                return path
        except NewsletterError:
            continue
    return None
