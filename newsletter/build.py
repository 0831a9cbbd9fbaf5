"""Writing a rendered edition to disk: ``<slug>.html`` and ``<slug>.txt`` in the build folder."""

from __future__ import annotations

import os
from pathlib import Path

from newsletter.errors import NewsletterError
from newsletter.rendered import RenderedEmail


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
