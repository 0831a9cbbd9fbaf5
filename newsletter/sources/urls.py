"""URLs as an editor means them: tracking parameters removed (``strip_tracking``) and a key for
"is this the same story?" (``url_key``). Pure functions, no I/O."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Parameters that say who sent the click, never what the page is.
_TRACKING_PREFIXES = ("utm_", "mtm_", "pk_", "hsa_", "__hs", "_hs", "oly_", "vero_", "ga_")
_TRACKING = frozenset({
    "fbclid", "gclid", "gclsrc", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "twclid",
    "ttclid", "li_fat_id", "igshid", "igsh", "mc_cid", "mc_eid", "mkt_tok", "wickedid",
    "s_cid", "ref_src", "ref_url", "cmpid", "spm", "scm", "share_source", "share_medium",
    "sharer_shareid", "sharer_sharetime", "vd_source", "wt_mc", "wt.mc_id", "_ga", "_gl",
    "rb_clickid", "ncid", "sr_share", "at_medium", "at_campaign", "at_source",
})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_tracking(name: str) -> bool:
    lower = name.lower()
    return lower in _TRACKING or lower.startswith(_TRACKING_PREFIXES)


def strip_tracking(url: str) -> str:
    """``url`` without tracking parameters (``utm_*``, ``fbclid``, ``gclid``…); everything else,
    order included, is kept as it was."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.fragment.startswith(":~:"):  # a text fragment (#:~:text=…): where someone scrolled
        parts = parts._replace(fragment="")
        url = urlunsplit(parts)
    if not parts.query:
        return url
    kept = [pair for pair in parse_qsl(parts.query, keep_blank_values=True) if not is_tracking(pair[0])]
    if len(kept) == len(parse_qsl(parts.query, keep_blank_values=True)):
        return url  # nothing to drop: keep the original spelling
    return urlunsplit(parts._replace(query=urlencode(kept, doseq=True)))


def url_key(url: str) -> str:
    """The same key for two links to the same page: scheme (http/https), case of the host, a
    ``www.`` prefix, the default port, a trailing slash, the fragment, tracking parameters and
    the order of the other parameters do not matter."""
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower().removeprefix("www.")
        port = parts.port
    except ValueError:
        return url.strip().lower()
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        pass
    if port and port != _DEFAULT_PORTS.get(parts.scheme.lower()):
        host = f"{host}:{port}"
    path = re.sub(r"/{2,}", "/", parts.path or "/")
    if len(path) > 1:
        path = path.rstrip("/")
    query = sorted(p for p in parse_qsl(parts.query, keep_blank_values=True) if not is_tracking(p[0]))
    return f"{host}{path}" + (f"?{urlencode(query)}" if query else "")
