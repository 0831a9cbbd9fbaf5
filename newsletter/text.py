"""Text every database engine can store.

Python strings can hold two things no column of ours can: U+0000 (PostgreSQL's ``text`` and
``jsonb`` refuse it; SQLite keeps it, so the two engines would disagree) and a lone surrogate
(U+D800-U+DFFF alone: not Unicode text at all, e.g. from JSON's ``"\\ud800"`` or from bytes a
terminal sent that are not UTF-8, which Python decodes with ``surrogateescape``; neither driver
can encode it). Whatever reaches the store is judged here, the same way for both engines:

- ``problem(value)``: what makes ``value`` unstorable, or None;
- ``require(field, value)``: editor input, refused with one line naming the field
  (``require_unicode``: only a lone surrogate, for text whose control characters are stripped);
- ``replace_surrogates(value)``: reader input kept, each lone surrogate becoming U+FFFD
  (``newsletter.headers.neutralise`` turns NUL, a control character, into a space);
- ``escape(value)``: a record kept for a person to read (a dead letter), each unstorable
  character written as its Python escape (``\\x00``, ``\\udcff``).
"""

from __future__ import annotations

import re

from newsletter.errors import ValidationError

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_SURROGATES = re.compile("[\ud800-\udfff]")


def problem(value: str) -> str | None:
    """What in ``value`` no database can store (the first such character), or None."""
    if value.isascii():  # the common case: ASCII holds no surrogate
        if "\x00" not in value:
            return None
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    char = found.group(0)
    if char == "\x00":
        return f"a NUL character (U+0000) at position {found.start() + 1}"
    return (f"U+{ord(char):04X} at position {found.start() + 1}, which is not text "
            "(a lone surrogate: bytes that were not UTF-8?)")


def require(field: str, value: str) -> str:
    """``value`` unchanged, or ``ValidationError`` naming ``field`` and what is wrong."""
    found = problem(value) if isinstance(value, str) else None
    if found:
        raise ValidationError(f"{field} contains {found}: expected plain text")
    return value


def require_unicode(field: str, value: str) -> str:
    """``value`` unchanged, or ``ValidationError`` naming ``field`` when it holds a lone
    surrogate (for text cleaned afterwards: ``clean_text`` turns a NUL, a control character,
    into a space and says so)."""
    if isinstance(value, str) and not value.isascii() and _SURROGATES.search(value):
        return require(field, value)
    return value


def replace_surrogates(value: str) -> tuple[str, bool]:
    """``(value with each lone surrogate as U+FFFD, whether there was one)`` (reader input:
    ``newsletter.headers.neutralise``, which also turns NUL, a control character, into a
    space)."""
    if value.isascii():
        return value, False
    found, count = _SURROGATES.subn("\ufffd", value)
    return found, count > 0


def escape(value: str) -> str:
    """``value`` with each unstorable character as its Python escape (readable, storable)."""
    if problem(value) is None:
        return value
    return _UNSTORABLE.sub(lambda m: "\\x00" if m.group(0) == "\x00"
                           else f"\\u{ord(m.group(0)):04x}", value)
