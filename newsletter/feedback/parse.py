"""SES notifications → plain ``Event`` records. Pure functions, no I/O.

A queue message arrives in one of two SNS envelopes — the SNS JSON envelope (``Type``,
``MessageId``, ``Message`` holding the SES JSON as a string) or, with *raw message delivery*
on, the SES JSON itself — and carries one of two SES shapes: identity notifications
(``notificationType``: Bounce, Complaint, Delivery) or configuration-set event publishing
(``eventType``: Bounce, Complaint, Delivery, Send, Reject, Open, Click, Rendering Failure,
DeliveryDelay, Subscription). ``parse_message`` accepts all four combinations.

Each event gets an ``event_id`` derived from the SES JSON itself (a SHA-256 of its canonical
form), so the same notification is recognised however often SNS and SQS redeliver it, with or
without the envelope. A notification naming several recipients (a bounce to three addresses)
becomes one event per recipient, with ``:N`` appended to the id.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any


class EventType(str, Enum):
    """The event kinds stored (``events.type``)."""

    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    DELIVERY = "delivery"
    REJECT = "reject"
    OPEN = "open"
    CLICK = "click"
    RENDERING_FAILURE = "rendering_failure"
    DELIVERY_DELAY = "delivery_delay"
    UNSUBSCRIBE = "unsubscribe"  # a mail to [unsubscribe] mailto, received by SES (notificationType Received)


class BounceType(str, Enum):
    """SES ``bounceType``: only ``Permanent`` is a hard bounce."""

    PERMANENT = "Permanent"
    TRANSIENT = "Transient"
    UNDETERMINED = "Undetermined"


# SES's names (both shapes) → our type, and the key of the object holding the details.
_SES_TYPES: dict[str, tuple[EventType, str]] = {
    "Bounce": (EventType.BOUNCE, "bounce"),
    "Complaint": (EventType.COMPLAINT, "complaint"),
    "Delivery": (EventType.DELIVERY, "delivery"),
    "Reject": (EventType.REJECT, "reject"),
    "Open": (EventType.OPEN, "open"),
    "Click": (EventType.CLICK, "click"),
    "Rendering Failure": (EventType.RENDERING_FAILURE, "failure"),
    "RenderingFailure": (EventType.RENDERING_FAILURE, "failure"),
    "DeliveryDelay": (EventType.DELIVERY_DELAY, "deliveryDelay"),
}

# Well-formed messages that carry nothing to store: acknowledged and deleted, not kept aside.
_NOT_TRACKED = {
    "Send": "a Send event (the ledger already knows what was sent)",
    "Subscription": "a Subscription event (SES-managed list preferences are not used)",
    "AmazonSnsSubscriptionSucceeded": "SES's test notification for a newly set SNS topic",
}


class MalformedMessage(ValueError):
    """The queue message is not an SES notification we understand; ``str()`` says why."""


@dataclass(frozen=True)
class Event:
    """One thing that happened to one message (and, where it applies, one recipient)."""

    event_id: str
    type: EventType
    provider_message_id: str  # SES ``mail.messageId`` — the id SendEmail/SendRawEmail returned
    occurred_at: str  # ISO 8601 UTC, second precision ("2026-11-25T07:00:00Z")
    email: str | None = None  # the recipient concerned (None for Reject, Rendering Failure)
    subtype: str | None = None  # bounceType, complaintFeedbackType, delayType
    detail: str | None = None  # diagnostic code, bounce sub type, reject reason, error message
    link: str | None = None  # the clicked URL
    token: str | None = None  # an inbound unsubscribe's token (from the subject or the +tag), unverified
    payload: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    payload_json: str = field(default="", compare=False, repr=False)  # canonical JSON of payload

    @property
    def is_hard_bounce(self) -> bool:
        return self.type is EventType.BOUNCE and self.subtype == BounceType.PERMANENT.value


@dataclass(frozen=True)
class Ignored:
    """A well-formed message with nothing to store; ``reason`` says what it was."""

    reason: str


def parse_message(body: str) -> list[Event] | Ignored:
    """Parse one SQS message body into events (or ``Ignored``).

    Raises ``MalformedMessage`` for anything that is neither envelope nor SES shape, or an SES
    notification missing what we need (the mail object, its message id, a recipient).
    """
    doc = _json_object(body, "message body")
    if _is_sns_envelope(doc):
        kind = doc.get("Type")
        if kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
            url = doc.get("SubscribeURL", "")
            return Ignored(f"SNS {kind}" + (f" (confirm it by opening {url})" if url else ""))
        if kind != "Notification":
            raise MalformedMessage(f"unknown SNS message Type {kind!r}")
        message = doc.get("Message")
        if isinstance(message, dict):  # real SNS sends a string; moto's SES an object
            doc = message
        elif isinstance(message, str):
            doc = _json_object(message, "SNS Message")
        else:
            raise MalformedMessage("SNS notification without a Message")
    return parse_ses(doc)


def parse_ses(doc: dict[str, Any]) -> list[Event] | Ignored:
    """Events from one SES notification (either shape), already decoded from JSON."""
    name = doc.get("eventType") or doc.get("notificationType")
    if name == "Received":
        return parse_received(doc)
    if name in _NOT_TRACKED:
        return Ignored(_NOT_TRACKED[name])
    known = _SES_TYPES.get(name) if isinstance(name, str) else None
    if known is None:
        known = _infer_type(doc, name)
    etype, key = known
    mail = doc.get("mail")
    if not isinstance(mail, dict) or not isinstance(mail.get("messageId"), str) or not mail["messageId"]:
        raise MalformedMessage(f"{name} notification without mail.messageId")
    if len(mail["messageId"]) > _MAX_FIELD:
        raise MalformedMessage(f"{name} notification with a mail.messageId of {len(mail['messageId'])} characters")
    details = doc.get(key)
    if not isinstance(details, dict):
        raise MalformedMessage(f"{name} notification without its {key!r} object")
    canonical = _canonical(doc, name)
    base = dict(
        provider_message_id=mail["messageId"],
        occurred_at=_timestamp(details.get("timestamp") or mail.get("timestamp"), name),
        payload=doc,
        payload_json=canonical,
    )
    rows = _BUILDERS[etype](details, mail)
    if not rows:
        raise MalformedMessage(f"{name} notification names no recipient")
    event_id = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:40]
    many = len(rows) > 1
    return [
        Event(event_id=f"{event_id}:{n}" if many else event_id, type=etype, **base, **row)
        for n, row in enumerate(rows)
    ]


# The unsubscribe token (tokens.make_token): base64url payload "." base64url HMAC-SHA256 (43).
_TOKEN_RE = re.compile(r"(?<![A-Za-z0-9_.-])([A-Za-z0-9_-]{2,60}\.[A-Za-z0-9_-]{43})(?![A-Za-z0-9_-])")


def parse_received(doc: dict[str, Any]) -> list[Event]:
    """An SES inbound (receipt rule → SNS) notification: a mail to the ``[unsubscribe] mailto``
    address. Its token is looked for in the recipient's ``+tag`` (``unsubscribe+TOKEN@…``), then
    in the subject (``unsubscribe TOKEN``, as List-Unsubscribe's mailto writes it, maybe behind a
    "Re:"); verifying it is the recorder's job. A mail with no token is still one event (its
    effect says nothing was done), so an editor can see who wrote."""
    mail = doc.get("mail")
    if not isinstance(mail, dict) or not isinstance(mail.get("messageId"), str) or not mail["messageId"]:
        raise MalformedMessage("Received notification without mail.messageId")
    if len(mail["messageId"]) > _MAX_FIELD:
        raise MalformedMessage(f"Received notification with a mail.messageId of {len(mail['messageId'])} characters")
    receipt = doc.get("receipt") if isinstance(doc.get("receipt"), dict) else {}
    headers = mail.get("commonHeaders") if isinstance(mail.get("commonHeaders"), dict) else {}
    sender = mail.get("source")
    if not isinstance(sender, str) or "@" not in sender:
        sender = (headers.get("from") or [""])[0] if isinstance(headers.get("from"), list) else ""
    recipients = receipt.get("recipients") if isinstance(receipt.get("recipients"), list) else _destinations(mail)
    subject = headers.get("subject") if isinstance(headers.get("subject"), str) else ""
    token = None
    for candidate in [*(r.partition("@")[0].partition("+")[2] for r in recipients if isinstance(r, str)), subject]:
        found = _TOKEN_RE.search(candidate or "")
        if found:
            token = found.group(1)
            break
    canonical = _canonical(doc, "Received")
    return [Event(
        event_id=hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:40],
        type=EventType.UNSUBSCRIBE, provider_message_id=mail["messageId"],
        occurred_at=_timestamp(receipt.get("timestamp") or mail.get("timestamp"), "Received"),
        email=_address(sender) if sender else None, subtype="mailto",
        detail=(subject[:200] or None), token=token, payload=doc, payload_json=canonical,
    )]


def _infer_type(doc: dict[str, Any], name: object) -> tuple[EventType, str]:
    """Some emitters (moto's SES among them) mislabel the type; the detail object still tells."""
    present = [v for v in _SES_TYPES.values() if isinstance(doc.get(v[1]), dict)]
    kinds = {etype for etype, _ in present}
    if len(kinds) == 1:
        return present[0]
    if name is None:
        raise MalformedMessage("neither an SNS envelope nor an SES notification (no eventType/notificationType)")
    raise MalformedMessage(f"unknown SES notification type {name!r}")


# -- one builder per type: the per-recipient fields ------------------------------------------

def _bounce(d: dict, mail: dict) -> list[dict]:
    btype = d.get("bounceType")
    if btype not in {b.value for b in BounceType}:
        raise MalformedMessage(f"bounce with unknown bounceType {btype!r}")
    sub = d.get("bounceSubType") or ""
    return [
        dict(email=_address(r.get("emailAddress")), subtype=btype,
             detail=_join(sub, r.get("status"), r.get("diagnosticCode")))
        for r in _records(d, "bouncedRecipients")
    ]


def _complaint(d: dict, mail: dict) -> list[dict]:
    feedback = d.get("complaintFeedbackType") or d.get("complaintSubType")
    return [
        dict(email=_address(r.get("emailAddress")), subtype=feedback, detail=d.get("complaintSubType"))
        for r in _records(d, "complainedRecipients")
    ]


def _delivery(d: dict, mail: dict) -> list[dict]:
    recipients = d.get("recipients")
    if not isinstance(recipients, list):
        raise MalformedMessage("delivery without a recipients list")
    return [dict(email=_address(r), detail=d.get("smtpResponse")) for r in recipients]


def _delay(d: dict, mail: dict) -> list[dict]:
    return [
        dict(email=_address(r.get("emailAddress")), subtype=d.get("delayType"),
             detail=_join(r.get("status"), r.get("diagnosticCode")))
        for r in _records(d, "delayedRecipients")
    ]


def _engagement(d: dict, mail: dict) -> list[dict]:
    # Opens and clicks are tracked per message; event publishing only tracks single-recipient
    # messages, so the recipient is the one destination.
    link = d.get("link")
    return [dict(email=_address(a), link=link if isinstance(link, str) else None)
            for a in _destinations(mail)[:1]]


def _message_level(d: dict, mail: dict) -> list[dict]:
    detail = d.get("reason") or d.get("errorMessage")
    if d.get("templateName"):
        detail = f"template {d['templateName']}: {detail}"
    emails = _destinations(mail)
    return [dict(email=emails[0] if len(emails) == 1 else None, detail=detail)]


_BUILDERS = {
    EventType.BOUNCE: _bounce,
    EventType.COMPLAINT: _complaint,
    EventType.DELIVERY: _delivery,
    EventType.DELIVERY_DELAY: _delay,
    EventType.OPEN: _engagement,
    EventType.CLICK: _engagement,
    EventType.REJECT: _message_level,
    EventType.RENDERING_FAILURE: _message_level,
}


# -- small helpers ---------------------------------------------------------------------------

def _canonical(doc: dict[str, Any], name: object) -> str:
    """The notification's canonical JSON (what is stored, and hashed into the event id). A
    notification whose strings hold a NUL ("\\u0000") or a lone surrogate ("\\ud800") is
    malformed: PostgreSQL can store neither (SQLite could, but both engines must decide the
    same), and no real SES notification carries one; it is kept aside as it came."""
    found = _unstorable(doc)
    if found:
        raise MalformedMessage(f"{name} notification holds {found.split(' at position')[0]} "
                               "in its JSON: not text a database can store")
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _unstorable(value: Any) -> str | None:
    """What in a decoded JSON value (its strings, its keys) no database can store, or None."""
    from newsletter import text

    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found = text.problem(item)
            if found:
                return found
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except (TypeError, ValueError) as err:
        raise MalformedMessage(f"{what} is not JSON ({err})") from None
    if not isinstance(doc, dict):
        raise MalformedMessage(f"{what} is JSON but not an object")
    return doc


def _is_sns_envelope(doc: dict[str, Any]) -> bool:
    return "Type" in doc and ("TopicArn" in doc or "Message" in doc)


def _records(d: dict, key: str) -> list[dict]:
    items = d.get(key)
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise MalformedMessage(f"{key} must be a list of objects")
    return items


def _destinations(mail: dict) -> list[str]:
    dest = mail.get("destination")
    return [_address(a) for a in dest] if isinstance(dest, list) else []


# The longest message id or address a notification may name (SES's ids are ~60 characters,
# addresses at most 254): both are indexed, and PostgreSQL's btree holds ~2700 bytes a row
_MAX_FIELD = 500


def _address(value: object) -> str:
    """The bare address: SES sometimes gives ``"Name <a@b>"`` in destination lists."""
    from email.utils import parseaddr

    if not isinstance(value, str) or "@" not in value:
        raise MalformedMessage(f"recipient {value!r} is not an email address")
    if len(value) > _MAX_FIELD:  # no address is; PostgreSQL's index could not hold it either
        raise MalformedMessage(f"recipient {value[:40]!r}… is not an email address "
                               f"({len(value)} characters)")
    if "<" not in value and not any(c.isspace() for c in value.strip()):
        return value.strip()  # the usual case, without the cost of a full header parse
    addr = parseaddr(value)[1] or value.strip()
    if "@" not in addr:
        raise MalformedMessage(f"recipient {value!r} is not an email address")
    return addr


def _join(*parts: object) -> str | None:
    text = " · ".join(str(p) for p in parts if p)
    return text or None


def _timestamp(value: object, name: object) -> str:
    """SES timestamps are ISO 8601 (``2017-08-05T00:41:02.669Z``); moto's mail timestamp has a
    space before the offset, and some relays use RFC 2822. All become UTC, second precision."""
    if not isinstance(value, str) or not value.strip():
        raise MalformedMessage(f"{name} notification without a timestamp")
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text.replace(" +", "+").replace(" -", "-"))
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            raise MalformedMessage(f"timestamp {value!r} is not a date") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
