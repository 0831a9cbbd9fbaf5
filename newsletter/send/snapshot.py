"""The send snapshot: what a send sends, frozen when it starts.

Subject, preheader, the rendered HTML and text (placeholders left in), the edition's number,
title, date, language, categories and items, the files it came from and two hashes: of the
content (what readers get) and of the source bytes (to tell the editor the file changed since).
Resume, the archive page, the feed, "view in browser" and ``archive build`` read the snapshot,
never the file. Plain data; the ledger stores it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.render.rendered import RenderedEmail

if TYPE_CHECKING:
    from newsletter.edition.model import Edition


@dataclass(frozen=True)
class Snapshot:
    slug: str
    number: int | None
    title: str
    subject: str
    preheader: str
    date: str  # ISO 8601 with the offset it was written with
    lang: str
    categories: tuple[str, ...]
    items: tuple[dict, ...]  # {"number", "title", "url"}
    html: str
    text: str
    web_url: str
    source_path: str
    essay_path: str | None
    source_hash: str
    content_hash: str
    reconstructed: bool = False
    id: int | None = None  # the ledger's row, once stored
    created_at: str | None = None

    def rendered(self) -> RenderedEmail:
        return RenderedEmail(slug=self.slug, subject=self.subject, preheader=self.preheader, lang=self.lang,
                             html=self.html, text=self.text, web_url=self.web_url)

    @property
    def items_json(self) -> str:
        return json.dumps(list(self.items), ensure_ascii=False)


def content_hash(rendered: RenderedEmail) -> str:
    digest = hashlib.sha256()
    for part in (rendered.subject, rendered.preheader, rendered.html, rendered.text):
        data = part.encode("utf-8")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def source_hash(path: Path, essay_path: Path | None = None) -> str:
    """sha256 of the edition file's bytes (and the essay's); ``"missing"`` for a file not there."""
    digest = hashlib.sha256()
    for p in (path, essay_path):
        if p is None:
            continue
        try:
            data = Path(p).read_bytes()
        except OSError:
            return "missing"
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def resolved(path: str | Path) -> str:
    """A source path as the ledger keys it: absolute, symlinks resolved."""
    try:
        return str(Path(path).resolve())
    except OSError:
        return str(Path(path).absolute())


def date_instant(edition: Edition) -> str:
    """The edition's date as a UTC instant: the same moment written in another offset is equal."""
    return edition.date.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_snapshot(edition: Edition, rendered: RenderedEmail, *, essay_path: Path | None = None,
                  reconstructed: bool = False) -> Snapshot:
    return Snapshot(
        slug=rendered.slug, number=edition.number, title=edition.title, subject=rendered.subject,
        preheader=rendered.preheader, date=edition.date.isoformat(), lang=rendered.lang,
        categories=tuple(edition.categories),
        items=tuple({"number": i.number, "title": i.title, "url": i.url} for i in edition.items),
        html=rendered.html, text=rendered.text, web_url=rendered.web_url,
        source_path=resolved(edition.source), essay_path=resolved(essay_path) if essay_path else None,
        source_hash=source_hash(edition.source, essay_path), content_hash=content_hash(rendered),
        reconstructed=reconstructed)
