"""Recording SES events: each stored once, its effects applied, the unreadable kept aside.

Effects go through the subscriber ``Store`` (its own connection); the event row through this
module's connection. The order makes a crash at any point safe to re-run: effects first (they
are idempotent: a status set twice, a suppression added twice), then the event row committed,
and only then may the caller delete the queue message. A redelivered message finds its event
row and does nothing more, so nothing is counted twice.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum

from newsletter.config import Config, EventsConfig
from newsletter.errors import StoreError, ValidationError
from newsletter.feedback.parse import Event, EventType, MalformedMessage, parse_message
from newsletter.store.base import Store
from newsletter.store.db import utc_now
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
    """Stores events in ``conn`` (the project database) and applies their effects to ``store``."""

    conn: sqlite3.Connection
    store: Store
    settings: EventsConfig = field(default_factory=EventsConfig)
    secret: bytes | None = None  # verifies the token of an unsubscribe received by mail

    def record(self, event: Event) -> RecordResult:
        """Store ``event`` once and apply its effect; a repeat is a ``DUPLICATE`` doing nothing."""
        if self._exists(event.event_id):
            return RecordResult(event, Outcome.DUPLICATE)
        effect = self._apply(event)
        inserted = self._insert(event, effect)
        return RecordResult(event, Outcome.RECORDED if inserted else Outcome.DUPLICATE, effect)

    def keep_aside(self, message_id: str, body: str, reason: str) -> bool:
        """Keep an unreadable queue message in ``dead_letters``; False when already kept."""
        try:
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO dead_letters (message_id, reason, body, received_at) VALUES (?, ?, ?, ?)",
                (message_id, reason, body, utc_now()),
            )
        except sqlite3.Error as err:
            raise StoreError(f"cannot keep message {message_id} aside: {err}") from None
        return cur.rowcount == 1

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
        earlier = self.conn.execute(
            "SELECT COUNT(*) FROM events WHERE type = 'bounce' AND subtype != 'Permanent' "
            "AND email = ? COLLATE NOCASE AND occurred_at > ? AND occurred_at <= ?",
            (event.email, start, event.occurred_at),
        ).fetchone()[0]
        if earlier + 1 < limit:
            return None
        return self._final(event.email, SubscriberStatus.BOUNCED,
                           f"{earlier + 1} soft bounces within {days} days")

    # -- rows ------------------------------------------------------------------------------
    def _exists(self, event_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM events WHERE message_id = ?", (event_id,)).fetchone() is not None

    def _delivery_id(self, event: Event) -> int | None:
        rows = self.conn.execute(
            "SELECT id, email FROM deliveries WHERE provider_message_id = ?", (event.provider_message_id,)
        ).fetchall()
        if len(rows) > 1 and event.email:
            rows = [r for r in rows if (r["email"] or "").lower() == event.email.lower()] or rows
        return rows[0]["id"] if rows else None

    def _insert(self, event: Event, effect: str | None) -> bool:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO events (message_id, type, subtype, detail, email, delivery_id, "
                "provider_message_id, link, effect, occurred_at, received_at, payload) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (event.event_id, event.type.value, event.subtype, event.detail, event.email,
                 self._delivery_id(event), event.provider_message_id, event.link, effect,
                 event.occurred_at, utc_now(),
                 event.payload_json or json.dumps(event.payload, ensure_ascii=False)),
            )
            self.conn.execute("COMMIT")
        except sqlite3.Error as err:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise StoreError(f"cannot record event {event.event_id}: {err}") from None
        return cur.rowcount == 1


@contextmanager
def open_recorder(config: Config) -> Iterator[EventRecorder]:
    """An ``EventRecorder`` on the project's database and subscriber store, closed afterwards."""
    from newsletter.store import open_store
    from newsletter.store.db import connect, sqlite_path

    conn = connect(sqlite_path(config.database_url))
    try:
        with open_store(config) as store:
            yield EventRecorder(conn, store, config.events, _secret(config))
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


def dead_letters(conn: sqlite3.Connection) -> list[DeadLetter]:
    """Every message kept aside, oldest first."""
    rows = conn.execute("SELECT message_id, reason, body, received_at FROM dead_letters ORDER BY id").fetchall()
    return [DeadLetter(r["message_id"], r["reason"], r["body"], r["received_at"]) for r in rows]


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
        recorder.conn.execute("DELETE FROM dead_letters WHERE message_id = ?", (letter.message_id,))
        resolved += 1
    return resolved, kept


def _minus_days(timestamp: str, days: int) -> str:
    moment = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return (moment - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
