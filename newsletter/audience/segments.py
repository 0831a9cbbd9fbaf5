"""Who a send goes to: one or more lists (their union, one message per reader), lists left out,
and attribute conditions, all ANDed. Plain data and parsing only; the store turns an
``Audience`` into SQL (``SqliteStore.audience_recipients`` / ``audience_steps``).

``--where`` conditions:

    key=value     the attribute equals value (ASCII letters compared case-insensitively)
    key!=value    it does not (a reader without the attribute counts as not equal)
    has:key       the reader has the attribute, not empty

The key is normalised as stored attributes are (``Home City`` → ``home_city``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from newsletter.audience.attributes import attr_key
from newsletter.errors import ValidationError

_KEY_RE = re.compile(r"[^\s\"\\=!:\x00-\x1f\x7f-\x9f]+")  # stored names hold no control character


@dataclass(frozen=True)
class Condition:
    key: str
    op: str  # "=", "!=", "has"
    value: str = ""

    def __str__(self) -> str:
        return f"has:{self.key}" if self.op == "has" else f"{self.key}{self.op}{self.value}"


@dataclass(frozen=True)
class Audience:
    lists: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    where: tuple[Condition, ...] = ()

    @property
    def key(self) -> str:
        """The canonical form: two commands naming the same audience (in any order) have one key."""
        return json.dumps({"exclude": sorted(set(self.exclude)), "lists": sorted(set(self.lists)),
                           "where": sorted({str(c) for c in self.where})},
                          sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def as_json(self, *, again: bool = False) -> str:
        return json.dumps({"lists": list(self.lists), "exclude": list(self.exclude),
                           "where": [str(c) for c in self.where], "again": again}, ensure_ascii=False)

    def describe(self) -> str:
        """One line: ``daily + weekly − press where city=Berlin``."""
        text = " + ".join(self.lists)
        if self.exclude:
            text += " − " + " − ".join(self.exclude)
        if self.where:
            text += " where " + " and ".join(str(c) for c in self.where)
        return text


def parse_condition(text: str) -> Condition:
    """One ``--where`` value, or a ``ValidationError`` saying what was expected."""
    from newsletter import text as storable

    storable.require(f"--where {text!r}", text)  # a NUL, a lone surrogate: no value holds one
    raw = text.strip()
    expected = "expected key=value, key!=value or has:key"
    if raw.startswith("has:"):
        key = attr_key(raw[4:])
        if not _KEY_RE.fullmatch(key):
            raise ValidationError(f"--where {text!r}: {expected} (the attribute name is missing or has quotes/spaces)")
        return Condition(key, "has")
    if "!=" in raw:
        key, value = raw.split("!=", 1)
        op = "!="
    elif "=" in raw:
        key, value = raw.split("=", 1)
        op = "="
    else:
        raise ValidationError(f"--where {text!r}: {expected}")
    key = attr_key(key)  # stored keys are normalised (a `Home City` column is `home_city`)
    if not _KEY_RE.fullmatch(key):
        raise ValidationError(f"--where {text!r}: {expected} (the attribute name is missing or has quotes/spaces)")
    return Condition(key, op, value.strip())


def make_audience(lists: list[str] | tuple[str, ...], exclude: list[str] | tuple[str, ...] = (),
                  where: list[str] | tuple[str, ...] = ()) -> Audience:
    """An ``Audience`` from command-line values (lists deduplicated in order)."""
    wanted = tuple(dict.fromkeys(n.strip() for n in lists if n.strip()))
    if not wanted:
        raise ValidationError("no list given: expected --list NAME (repeatable)")
    left_out = tuple(dict.fromkeys(n.strip() for n in exclude if n.strip()))
    both = [n for n in left_out if n in wanted]
    if both:
        raise ValidationError(f"list {both[0]!r} is both in --list and --exclude-list")
    return Audience(wanted, left_out, tuple(parse_condition(w) for w in where))


def from_json(text: str) -> tuple[Audience, bool]:
    """The audience a send stored (``Audience.as_json``) and its ``again`` flag."""
    data = json.loads(text or "{}")
    return (Audience(tuple(data.get("lists", ())), tuple(data.get("exclude", ())),
                     tuple(parse_condition(w) for w in data.get("where", ()))), bool(data.get("again")))
