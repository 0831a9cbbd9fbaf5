"""Creating things in a newsletter project: the project itself (``init``), a new edition from the
skeleton (``new``), and one more item in an edition (``add``)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import date as date_type, datetime
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

from newsletter.config import CONFIG_NAME
from newsletter.errors import EditionError, ValidationError

if TYPE_CHECKING:
    from newsletter.config import Config
    from newsletter.edition.model import Item

SKELETONS = Path(__file__).resolve().parent / "skeletons"
GITIGNORE_LINES = (".newsletter-secret", "build/", "outbox/", "subscribers/*.db", "subscribers/*.db-wal",
                   "subscribers/*.db-shm", "subscribers/*.db-events.lock")
PROJECT_FOLDERS = ("editions", "subscribers", "templates")


@dataclass(frozen=True)
class InitResult:
    root: Path
    created: tuple[Path, ...]


def init_project(folder: Path, *, name: str = "Newsletter", lang: str = "en",
                 postal_address: str = "") -> InitResult:
    """Create a project in ``folder``: config, folders, a signing secret, ``.gitignore`` entries.

    Refuses (``ValidationError``) when ``folder`` already holds a ``newsletter.toml``.
    """
    from newsletter.config import write_secret

    folder = folder.resolve()
    config_file = folder / CONFIG_NAME
    if config_file.exists():
        raise ValidationError("already a newsletter project (newsletter.toml exists); nothing changed",
                              file=config_file)
    _check_header_safe("name", name)
    if not re.fullmatch(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*", lang):
        raise ValidationError(f"--lang {lang[:40]!r} is not a language tag: expected e.g. en, zh-CN")
    folder.mkdir(parents=True, exist_ok=True)
    created = []
    text = Template((SKELETONS / "newsletter.toml").read_text(encoding="utf-8")).substitute(
        name=_toml_str(name), from_name=_toml_str(_display_name(name)), lang=_toml_str(lang),
        secret_file=".newsletter-secret")
    if postal_address:
        text = text.replace('postal_address = ""  ', f"postal_address = \"{_toml_str(postal_address)}\"", 1)
    config_file.write_text(text, encoding="utf-8")
    created.append(config_file)
    for sub in PROJECT_FOLDERS:
        path = folder / sub
        if not path.exists():
            path.mkdir()
            created.append(path)
    secret = folder / ".newsletter-secret"
    if not secret.exists():
        write_secret(secret)
        created.append(secret)
    if _update_gitignore(folder / ".gitignore"):
        created.append(folder / ".gitignore")
    return InitResult(folder, tuple(created))


def _toml_str(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _check_header_safe(field: str, value: str) -> None:
    from newsletter.headers import problem

    found = problem(value)
    if found:
        raise ValidationError(f"--{field} contains {found} (it goes into mail headers)")
    if not value.strip():
        raise ValidationError(f"--{field} must not be empty")


def _display_name(name: str) -> str:
    """``name`` as the display name of ``from``: quoted when it holds a character that has a
    meaning in an address (``<``, ``,``, ``"``…)."""
    if any(c in name for c in '<>",;:@()[]\\'):
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return name


def _update_gitignore(path: Path) -> bool:
    """Append the entries that keep secrets and data out of git; True when the file changed."""
    existing = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    missing = [line for line in GITIGNORE_LINES if line not in existing]
    if not missing:
        return False
    prefix = "\n" if existing and existing[-1].strip() else ""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(prefix + "# newsletter: secrets and generated data\n" + "\n".join(missing) + "\n")
    return True


def new_edition(config: Config, day: date_type | None = None, *, now: datetime | None = None) -> Path:
    """Create ``editions/<day>.md`` from the skeleton (default: today); never overwrites."""
    now = (now or datetime.now()).astimezone()
    day = day or now.date()
    stamp = datetime(day.year, day.month, day.day, 8, 0, tzinfo=now.tzinfo)
    path = config.editions_path / f"{day.isoformat()}.md"
    if path.exists():
        raise ValidationError("already exists; edit it, or pick another --date", file=path)
    text = Template((SKELETONS / "edition.md").read_text(encoding="utf-8")).substitute(
        date=stamp.isoformat(timespec="seconds"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as fh:  # "x": a file made meanwhile is never clobbered
            fh.write(text)
    except FileExistsError as err:
        if Path(err.filename) == path:
            raise ValidationError("already exists; edit it, or pick another --date", file=path) from None
        raise ValidationError(f"cannot create the edition: {err.filename} is a file, expected a folder",
                              file=path) from None
    except OSError as err:
        raise ValidationError(f"cannot create the edition: {err.strerror}", file=path) from None
    return path


def add_item(path: Path, url: str, title: str, summary: str, *, config: Config) -> Item:
    """Append an item to the edition at ``path`` with the next number; returns the new item.

    The edition must parse before and after; the file is replaced atomically.
    """
    from newsletter.edition.parse import parse_edition
    from newsletter.edition.source import read_source

    url, title, summary = _validated(url, title, summary)
    source = read_source(path)  # read once: the parse and the splice see the same text
    edition = parse_edition(source, path=path, config=config)
    number = len(edition.items) + 1
    lines = source.split("\n")
    block = _item_lines(number, url, title, summary)
    if edition.items:
        at = _last_content_line(lines, edition.items[-1].end)
        new_lines = lines[:at] + [""] + block + lines[at:]
    elif edition.separators:
        at = edition.separators[0]  # 1-based line of the first `---`: items go right after it
        tail = ["", "---"] if _has_content_after(lines, at) else []
        new_lines = lines[:at] + [""] + block + tail + lines[at:]
    else:
        at = _last_content_line(lines, len(lines))
        new_lines = lines[:at] + ["", "---", ""] + block + lines[at:]
    text = "\n".join(new_lines)
    if not text.endswith("\n"):
        text += "\n"
    updated = parse_edition(text, path=path, config=config)
    if len(updated.items) != number:
        raise EditionError("could not place the new item; add it by hand", file=path)
    _write_atomic(path, text)
    return updated.items[-1]


def _validated(url: str, title: str, summary: str) -> tuple[str, str, str]:
    url = url.strip()
    if not re.match(r"^https?://[^\s/]+", url):
        raise ValidationError(f"URL {url!r} is not an http(s) address: expected https://…")
    title = " ".join(title.split())
    if not title:
        raise ValidationError("--title is empty: expected the item's headline")
    summary = "\n".join(" ".join(p.split()) for p in re.split(r"\n\s*\n", summary.strip()) if p.strip())
    return url, title, summary


def _item_lines(number: int, url: str, title: str, summary: str) -> list[str]:
    marker = f"{number}.".ljust(4)
    safe_title = re.sub(r"([\[\]\\])", r"\\\1", title)
    target = f"<{url}>" if re.search(r"[\s()<>]", url) else url
    out = [f"{marker}[{safe_title}]({target})"]
    for paragraph in summary.split("\n") if summary else []:
        out += ["", "    " + paragraph]
    return out


def _last_content_line(lines: list[str], end: int) -> int:
    """Index just past the last non-blank line at or before 1-based line ``end``."""
    at = min(end, len(lines))
    while at > 0 and not lines[at - 1].strip():
        at -= 1
    return at


def _has_content_after(lines: list[str], at: int) -> bool:
    return any(line.strip() for line in lines[at:])


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        raise EditionError(f"cannot write: {err.strerror} ({err.filename})", file=path) from None
