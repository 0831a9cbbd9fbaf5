"""Building an edition: parse, render and check it (``build_edition``, shared by ``check``,
``build``, ``send`` and the preview), and write ``<slug>.html`` and ``<slug>.txt`` to disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.errors import NewsletterError
from newsletter.render.rendered import RenderedEmail

if TYPE_CHECKING:
    from newsletter.edition.checks import Finding
    from newsletter.config import Config
    from newsletter.edition.model import Edition


def build_edition(path: str | Path, config: Config, essay_path: str | Path | None = None, *,
                  sending: bool = False) -> tuple[Edition, RenderedEmail, list[Finding]]:
    """The edition at ``path`` parsed, rendered with the number it has or will get at its first
    send, and its check findings (``sending``: those of a real send, where a draft's TODO
    markers and a missing postal address are errors)."""
    from newsletter.edition.parse import numbered
    from newsletter.edition.source import load_edition
    from newsletter.store.ledger import planned_number

    edition = load_edition(path, config=config, essay_path=essay_path)
    edition = numbered(edition, planned_number(config, edition), config)
    return render_checked(edition, config, sending=sending)


def render_checked(edition: Edition, config: Config, *, sending: bool = False,
                   ) -> tuple[Edition, RenderedEmail, list[Finding]]:
    """``edition`` rendered, and its check findings (``sending``: as for a real send)."""
    from newsletter.edition.checks import check_edition
    from newsletter.edition.covered import covered_check
    from newsletter.render.html import render_edition

    rendered = render_edition(edition, config)
    findings = check_edition(edition, rendered, config, sending=sending) + covered_check(edition, config)
    return edition, rendered, findings


def write_build(rendered: RenderedEmail, folder: Path, config: Config) -> list[Path]:
    """Write the edition's web version to ``folder``: ``<slug>.html`` and ``<slug>.txt`` as the
    archive shows them (archive.web_version: no reader's address, name or live token, no
    ``@@nl:…@@`` placeholder), so that the file an editor opens in a browser reads right. The
    per-reader template stays in the ``RenderedEmail`` the send builds its messages from. Each file
    is replaced atomically."""
    from newsletter.web.archive import web_text, web_version

    try:
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for suffix, body in ((".html", web_version(config, rendered)), (".txt", web_text(config, rendered))):
            path = folder / f"{rendered.slug}{suffix}"
            tmp = folder / f".{rendered.slug}{suffix}.tmp"
            tmp.write_text(body, encoding="utf-8", newline="\n")
            os.replace(tmp, path)
            written.append(path)
        return written
    except OSError as err:
        raise NewsletterError(f"cannot write the build: {err.strerror}", file=err.filename or folder) from None
