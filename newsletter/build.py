"""Building an edition: parse, render and check it (``build_edition``, shared by ``check``,
``build``, ``send`` and the preview), and write ``<slug>.html`` and ``<slug>.txt`` to disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.errors import NewsletterError
from newsletter.rendered import RenderedEmail

if TYPE_CHECKING:
    from newsletter.checks import Finding
    from newsletter.config import Config
    from newsletter.edition import Edition


def build_edition(path: str | Path, config: Config, essay_path: str | Path | None = None,
                  ) -> tuple[Edition, RenderedEmail, list[Finding]]:
    """The edition at ``path`` parsed, rendered with the number it has or will get at its first
    send, and its check findings."""
    from dataclasses import replace

    from newsletter.edition import load_edition
    from newsletter.ledger import planned_number

    edition = load_edition(path, config=config, essay_path=essay_path)
    edition = replace(edition, number=planned_number(config, edition))
    return render_checked(edition, config)


def render_checked(edition: Edition, config: Config) -> tuple[Edition, RenderedEmail, list[Finding]]:
    """``edition`` rendered, and its check findings."""
    from newsletter.checks import check_edition
    from newsletter.covered import covered_check
    from newsletter.render import render_edition

    rendered = render_edition(edition, config)
    findings = check_edition(edition, rendered, config) + covered_check(edition, config)
    return edition, rendered, findings


def write_build(rendered: RenderedEmail, folder: Path) -> list[Path]:
    """Write both parts (placeholders left in) to ``folder``; each file is replaced atomically."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for suffix, body in ((".html", rendered.html), (".txt", rendered.text)):
            path = folder / f"{rendered.slug}{suffix}"
            tmp = folder / f".{rendered.slug}{suffix}.tmp"
            tmp.write_text(body, encoding="utf-8", newline="\n")
            os.replace(tmp, path)
            written.append(path)
        return written
    except OSError as err:
        raise NewsletterError(f"cannot write the build: {err.strerror}", file=err.filename or folder) from None
