"""Recording SES events: each stored once, its effects applied, the unreadable kept aside.

Effects go through the subscriber ``Store`` (its own connection); the event row through the
event log (``newsletter.store.events``, on either engine) on this recorder's connection. The order makes a crash at any point safe to re-run: effects first (they
are idempotent: a status set twice, a suppression added twice), then the event row committed,
and only then may the caller delete the queue message. A redelivered message finds its event
row and does nothing more, so nothing is counted twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum

from newsletter.config import Config, EventsConfig
from newsletter.errors import StoreError, ValidationError
from newsletter.feedback.parse import Event, EventType, MalformedMessage, parse_message
from newsletter.store.base import Store
from newsletter.store.connection import Connection, errors, store_error
from newsletter.store.db import utc_now
from newsletter.store.events import EventLog, EventRow
from newsletter.store.models import SubscriberStatus

_FINAL = (SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED)


class Outcome(str, Enum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"


@dataclass
class RecordResult:
    event: Event
    outcome: Outcome
    effect: str | None = None  # e.g. "jane@example.com is now bounced (hard bounce)"


@dataclass
class DeadLetter:
    message_id: str
    reason: str
    body: str
    received_at: str


@dataclass
class EventRecorder:
    """Stores events in ``conn`` (the project database, either engine) and applies their
    effects to ``store``."""

    conn: Connection
    store: Store
    settings: EventsConfig = field(default_factory=EventsConfig)
    secret: bytes | None = None  # verifies the token of an unsubscribe received by mail
    log: EventLog = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.log = EventLog(self.conn)

    def record(self, event: Event) -> RecordResult:
        """Store ``event`` once and apply its effect; a repeat is a ``DUPLICATE`` doing nothing.
        Concurrent recorders (other processes, other hosts) store it once between them."""
        try:
            if not _may_act(event):  # nothing to decide: one idempotent INSERT, no lock
                inserted = self._insert(event, None)
                return RecordResult(event, Outcome.RECORDED if inserted else Outcome.DUPLICATE)
            with self.log.recording(event.event_id, event.email):
                if self.log.exists(event.event_id):
                    return RecordResult(event, Outcome.DUPLICATE)
                effect = self._apply(event)
                inserted = self._insert(event, effect)
        except StoreError:
            raise
        except errors() as err:  # a read refused (I/O error, the server gone): one line
            reason = store_error(err, self.conn, "cannot read").message
            raise StoreError(f"cannot record event {event.event_id}: {reason}") from None
        return RecordResult(event, Outcome.RECORDED if inserted else Outcome.DUPLICATE, effect)

    def keep_aside(self, message_id: str, body: str, reason: str) -> bool:
        """Keep an unreadable queue message in ``dead_letters``; False when already kept."""
        return self.log.keep_aside(message_id, reason, body, utc_now())

    # -- effects ---------------------------------------------------------------------------
    def _apply(self, event: Event) -> str | None:
        if event.type is EventType.UNSUBSCRIBE:
            return self._mailto_unsubscribe(event)
        if event.email is None:
            return None
        if event.is_hard_bounce:
            return self._final(event.email, SubscriberStatus.BOUNCED, f"hard bounce ({event.detail or 'Permanent'})")
        if event.type is EventType.BOUNCE:
            return self._soft_bounce(event)
        if event.type is EventType.COMPLAINT and event.subtype != "not-spam":
            return self._final(event.email, SubscriberStatus.COMPLAINED, f"complaint ({event.subtype or 'unspecified'})")
        return None

    def _mailto_unsubscribe(self, event: Event) -> str:
        """What the one-click POST does, for the token a reader's mail carried: the subscriber
        and list it names are unsubscribed (idempotently), whoever the mail came from — the
        token, signed for that reader and list, is the proof, as it is for the https link."""
        from newsletter.errors import TokenError
        from newsletter.tokens import verify_token

        who = event.email or "an unknown sender"
        if not event.token:
            return f"mail from {who} to the unsubscribe address carried no unsubscribe token: nothing done"
        if self.secret is None:
            raise StoreError("cannot verify an unsubscribe token: no signing secret")
        try:
            claims = verify_token(self.secret, "unsubscribe", event.token)
        except TokenError:
            return f"mail from {who}: its unsubscribe token is not genuine: nothing done"
        # The token names an identity that is never reused: an erased reader's names nobody.
        subscriber = self.store.subscriber_for_token(claims)
        if subscriber is None:
            return f"mail from {who}: subscriber {claims.subscriber_id} no longer exists: nothing to stop"
        try:
            changed = self.store.unsubscribe(subscriber.id, claims.list_id or None)
        except ValidationError:  # the list is gone; a StoreError (the write refused) propagates:
            # the event is not recorded and the queue message stays, so the next pull applies it
            return f"mail from {who}: the list of subscriber {claims.subscriber_id} no longer exists: nothing to stop"
        scope = "all lists"
        if claims.list_id:
            found = self.store.get_list_by_id(claims.list_id)
            scope = f"list {found.name}" if found else f"list {claims.list_id}"
        state = "unsubscribed" if changed else "was already unsubscribed"
        return f"{subscriber.email} {state} from {scope} (by mail)"

    def _final(self, email: str, status: SubscriberStatus, reason: str) -> str:
        """Make the address bounced/complained (which suppresses it everywhere), or, for an
        address that is no subscriber (a test address, an erased one), just suppress it."""
        try:
            subscriber = self.store.get_subscriber(email)
            if subscriber is None or subscriber.status in _FINAL:
                self.store.suppress(email, reason)
                return f"{email} suppressed: {reason}"
            self.store.set_status(email, status, reason=reason)
        except ValidationError as err:  # an address SES accepted but we cannot parse
            return f"{email} not suppressed ({err.message}): {reason}"
        return f"{email} is now {status.value}: {reason}"

    def _soft_bounce(self, event: Event) -> str | None:
        """Count transient bounces in the window ending at this one; suppress at the limit.
        The window is measured from the event's own time, so a replay decides the same way."""
        limit, days = self.settings.soft_bounce_limit, self.settings.soft_bounce_window_days
        if limit <= 0:
            return None
        start = _minus_days(event.occurred_at, days)
        earlier = self.log.soft_bounces(event.email, start, event.occurred_at)
        if earlier + 1 < limit:
            return None
        return self._final(event.email, SubscriberStatus.BOUNCED,
                           f"{earlier + 1} soft bounces within {days} days")

    # -- rows ------------------------------------------------------------------------------
    def _insert(self, event: Event, effect: str | None) -> bool:
        row = EventRow(event.event_id, event.type.value, event.subtype, event.detail, event.email,
                       event.provider_message_id, event.link, effect, event.occurred_at,
                       event.payload_json or json.dumps(event.payload, ensure_ascii=False))
        try:
            return self.log.insert(row, utc_now())
        except errors() as err:  # a StoreError line, or the driver's error inside a transaction
            reason = store_error(err, self.conn, "cannot write to").message
            raise StoreError(f"cannot record event {event.event_id}: {reason}") from None


@contextmanager
def open_recorder(config: Config) -> Iterator[EventRecorder]:
    """An ``EventRecorder`` on the project's database and subscriber store, closed afterwards."""
    from newsletter.store import open_store
    from newsletter.store.connection import connect

    conn = connect(config)
    try:
        with open_store(config) as store:
            recorder = EventRecorder(conn, store, config.events, _secret(config))
            try:
                yield recorder
            finally:
                recorder.log.close()
    finally:
        conn.close()


def _secret(config: Config) -> bytes | None:
    """The signing secret when there is one (only mailto unsubscribes need it: never created here)."""
    from newsletter.config import load_secret
    from newsletter.errors import ConfigError

    try:
        return load_secret(config, create=False)
    except ConfigError:
        return None


def dead_letters(conn: "Connection | EventLog") -> list[DeadLetter]:
    """Every message kept aside, oldest first (``conn``: the project database, either engine)."""
    log = conn if isinstance(conn, EventLog) else EventLog(conn)
    return [DeadLetter(*kept) for kept in log.kept_aside()]


def retry_dead_letters(recorder: EventRecorder) -> tuple[int, int]:
    """Parse every kept-aside message again (say, after an upgrade that understands it).
    Those that parse now are recorded (or found ignorable) and leave ``dead_letters``.
    Returns (resolved, still kept)."""
    resolved = kept = 0
    for letter in dead_letters(recorder.conn):
        try:
            parsed = parse_message(letter.body)
        except MalformedMessage:
            kept += 1
            continue
        for event in parsed if isinstance(parsed, list) else []:
            recorder.record(event)
        recorder.log.forget(letter.message_id)
        resolved += 1
    return resolved, kept


def _may_act(event: Event) -> bool:
    """Whether recording ``event`` may change a subscriber (``EventRecorder._apply``): an
    unsubscribe by mail, a bounce or a complaint about an address. Deliveries, opens, clicks,
    delays, rejects and rendering failures only need storing once."""
    if event.type is EventType.UNSUBSCRIBE:
        return True
    return event.email is not None and event.type in (EventType.BOUNCE, EventType.COMPLAINT)


def _minus_days(timestamp: str, days: int) -> str:
    moment = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return (moment - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
