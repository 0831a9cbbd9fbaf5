"""The rendered email: an edition made into HTML and text once, with per-reader placeholders.

Rendering (MJML, premailer) runs once per edition; what differs per reader is marked with
placeholders that the per-reader stage substitutes cheaply. A placeholder is pure ASCII so that it
survives MJML, premailer, HTML escaping and the message encoder untouched:

    @@nl:KEY@@             e.g. @@nl:unsubscribe_url@@, @@nl:name@@, @@nl:attr.city@@
    @@nl:KEY:HEX@@         with a fallback, UTF-8 hex-encoded, used when the reader's value is empty

Keys: ``email``, ``name``, ``unsubscribe_url``, ``preferences_url``, ``attr.<name>``. In the HTML
part the substituted value is HTML-escaped; in the text part it goes in as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PLACEHOLDER_RE = re.compile(r"@@nl:([a-z_][a-z0-9_]*(?:\.[A-Za-z0-9_-]+)?)(?::([0-9a-f]*))?@@")
KEYS = ("email", "name", "unsubscribe_url", "preferences_url")


def placeholder(key: str, fallback: str = "") -> str:
    """The marker for ``key`` (with an optional fallback) to put into a template's output."""
    if key not in KEYS and not key.startswith("attr."):
        raise ValueError(f"unknown placeholder key {key!r}")
    key = _normal_key(key)
    if not PLACEHOLDER_RE.fullmatch(f"@@nl:{key}@@"):
        raise ValueError(f"placeholder key {key!r} has characters that are not allowed")
    if fallback:
        return f"@@nl:{key}:{fallback.encode('utf-8').hex()}@@"
    return f"@@nl:{key}@@"


def parse_placeholder(match: re.Match[str]) -> tuple[str, str]:
    """``(key, fallback)`` of a ``PLACEHOLDER_RE`` match."""
    key, hexed = _normal_key(match.group(1)), match.group(2)
    return key, bytes.fromhex(hexed).decode("utf-8") if hexed else ""


def _normal_key(key: str) -> str:
    """``attr.City`` names the stored attribute ``city`` (``newsletter.audience.attributes.attr_key``)."""
    if key.startswith("attr.") and not key.islower():
        from newsletter.audience.attributes import attr_key

        return "attr." + attr_key(key[5:])
    return key


@dataclass(frozen=True)
class RenderedEmail:
    """One edition, rendered: the same for every reader but for its placeholders."""

    slug: str
    subject: str
    preheader: str
    lang: str
    html: str  # complete document, CSS inlined, with placeholders
    text: str  # plain-text part, with placeholders
    web_url: str  # the "view in browser" URL (no personal data)
