"""Plain data the store hands out. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class SubscriberStatus(str, Enum):
    UNCONFIRMED = "unconfirmed"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class MembershipStatus(str, Enum):
    UNCONFIRMED = "unconfirmed"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"


class OptIn(str, Enum):
    SINGLE = "single"
    DOUBLE = "double"


@dataclass(frozen=True)
class Subscriber:
    id: int
    email: str  # as entered (an IDN domain stays in Unicode)
    name: str
    attributes: dict[str, str]
    status: SubscriberStatus
    source: str
    created_at: str  # ISO 8601 UTC
    confirmed_at: str | None = None
    unsubscribed_at: str | None = None
    uid: str = ""  # random, never reused: what every token names (with ``id``)
    legacy_tokens: bool = False  # existed before uids: tokens without one still name it


def uid_hex(value: bytes | str | None) -> str:
    """A stored subscriber uid (16 random bytes) as tokens spell it: 32 lower-case hex digits."""
    if value is None:
        return ""
    return value.hex() if isinstance(value, (bytes, memoryview)) else str(value)


@dataclass(frozen=True)
class MailingList:
    id: int
    name: str
    description: str
    optin: OptIn
    public: bool
    created_at: str


@dataclass(frozen=True)
class Membership:
    list_id: int
    list_name: str
    status: MembershipStatus
    created_at: str
    confirmed_at: str | None = None
    unsubscribed_at: str | None = None


@dataclass(frozen=True)
class Recipient:
    """What a send needs of one reader, frozen when the send starts."""

    subscriber_id: int
    email: str  # ready for the envelope: the domain in its ASCII (IDNA) form
    name: str
    attributes: dict[str, str] = field(default_factory=dict)
    list_id: int = 0  # the list it is sent through (its unsubscribe link names it); 0: the send's
    uid: str = ""  # the subscriber's never-reused identity, named in their tokens
