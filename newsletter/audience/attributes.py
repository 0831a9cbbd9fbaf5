"""Subscriber attribute names: one spelling per attribute.

``attr_key`` is the one normalisation every way in uses (CSV/service imports, ``--attr``, the web,
``@@nl:attr.…@@`` placeholders, and migration 008 for data stored before): surrounding space
trimmed, lower case, every run of white space turned into ``_``. So a ``City`` column, ``--attr
city=…`` and ``@@nl:attr.City@@`` all name the attribute ``city``.
"""

from __future__ import annotations

import re

_SPACE_RE = re.compile(r"\s+")


def attr_key(name: str) -> str:
    """The stored form of an attribute name (``"Home City "`` → ``"home_city"``)."""
    return _SPACE_RE.sub("_", str(name).strip().lower())


def normalise_attributes(attributes: dict[str, str]) -> dict[str, str]:
    """``attributes`` with normalised keys. When two keys fold into one, a non-empty value wins
    over an empty one, then the key that was already in normal form, then the later key."""
    out: dict[str, str] = {}
    rank: dict[str, tuple[bool, bool]] = {}
    for key, value in attributes.items():
        k = attr_key(key)
        r = (bool(str(value).strip()), key == k)
        if k not in out or r >= rank[k]:
            out[k], rank[k] = value, r
    return out
