"""Signed tokens for every link a reader can see (unsubscribe, preferences, confirm).

A token is ``base64url(payload) "." base64url(HMAC-SHA256(secret, purpose | payload))``. The
payload names the subscriber (id and ``uid``: 128 random bits stored with the row, never reused,
so an erased reader's tokens name nobody; ``Store.subscriber_for_token`` resolves them), the
list (0 for "all lists") and an optional expiry; the purpose is bound into the MAC, so an
unsubscribe token can never serve as a confirmation token. Tokens made before uids existed
(three payload parts) still verify; the store accepts them only for readers who existed then.
Pure functions: the caller supplies the secret and the clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

from newsletter.errors import TokenError

PURPOSES = ("unsubscribe", "confirm", "preferences")


@dataclass(frozen=True)
class TokenClaims:
    purpose: str
    subscriber_id: int
    list_id: int  # 0 = not scoped to one list
    expires: int  # unix seconds; 0 = never
    uid: str = ""  # the subscriber's never-reused identity ("" only in tokens made before it)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _unb64(text: str) -> bytes:
    # urlsafe_b64decode silently drops characters outside the alphabet, which would let many
    # spellings of one token verify: only the one canonical spelling is accepted.
    if not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, purpose: str, payload: bytes) -> bytes:
    return hmac.new(secret, purpose.encode("ascii") + b"|" + payload, hashlib.sha256).digest()


_UID_RE = re.compile(r"[0-9a-f]{32}")


def make_token(secret: bytes, purpose: str, subscriber_id: int, list_id: int = 0, *, expires: int = 0,
               uid: str) -> str:
    """A URL-safe token for ``purpose`` scoped to one subscriber (id and never-reused ``uid``) and
    list (0 = all lists)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}")
    if uid and not _UID_RE.fullmatch(uid):
        raise ValueError("a subscriber uid is 32 lower-case hex digits")
    payload = f"{subscriber_id}.{list_id}.{expires}{'.' + uid if uid else ''}".encode("ascii")
    return f"{_b64(payload)}.{_b64(_mac(secret, purpose, payload))}"


def verify_token(secret: bytes, purpose: str, token: str, *, now: float | None = None) -> TokenClaims:
    """The claims of a genuine, unexpired token of this purpose; ``TokenError`` otherwise."""
    try:
        payload_part, mac_part = token.split(".")
        payload = _unb64(payload_part)
        mac = _unb64(mac_part)
    except (ValueError, TypeError):
        raise TokenError("malformed token") from None
    if not hmac.compare_digest(mac, _mac(secret, purpose, payload)):
        raise TokenError("invalid token")
    try:
        parts = payload.decode("ascii").split(".")
        uid = parts.pop() if len(parts) == 4 else ""
        sid, lid, exp = (int(part) for part in parts)
    except (ValueError, UnicodeDecodeError):
        raise TokenError("malformed token") from None
    if uid and not _UID_RE.fullmatch(uid):
        raise TokenError("malformed token")
    if not (0 <= sid < 2**63 and 0 <= lid < 2**63):  # no row has such an id (64-bit columns)
        raise TokenError("malformed token")
    if exp and (now if now is not None else time.time()) > exp:
        raise TokenError("expired token")
    return TokenClaims(purpose, sid, lid, exp, uid)
