"""The readers' side of the SQLite store: sign-up, confirmation, preferences, "download my data".

Consent rules: a sign-up never activates an address that complained, bounced or is suppressed
(``refused``); an address that unsubscribed before must confirm again by email, even for a
single opt-in list, because anyone can type anyone's address into a form.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from newsletter.audience.addresses import Address
from newsletter.errors import ValidationError
from newsletter.store.base import SubscribeResult
from newsletter.store.models import MailingList, MembershipStatus, OptIn, Subscriber

if TYPE_CHECKING:
    from newsletter.store.sqlite import SqliteStore


def _lists_by_id(store: "SqliteStore", list_ids: list[int]) -> list[MailingList]:
    found = []
    for list_id in dict.fromkeys(list_ids):
        target = store.get_list_by_id(int(list_id))
        if target is None:
            raise ValidationError(f"no such list (id {list_id})")
        found.append(target)
    if not found:
        raise ValidationError("choose at least one list")
    return found


def subscribe(store: "SqliteStore", address: Address, name: str, list_ids: list[int],
              source: str) -> SubscribeResult:
    from newsletter.store.db import utc_now

    targets = _lists_by_id(store, list_ids)
    now = utc_now()
    with store.transaction() as conn:
        if store._suppressed_hash(address.hash):
            return SubscribeResult(store.get_subscriber(address.email), refused=True)
        current = store.get_subscriber(address.email)
        if current is not None and current.status.value in ("bounced", "complained"):
            return SubscribeResult(current, refused=True)
        if current is None:
            new_id = conn.execute(
                "INSERT INTO subscribers (email, email_key, name, attributes, status, source, "
                "created_at) VALUES (?, ?, ?, '{}', 'unconfirmed', ?, ?) RETURNING id",
                (address.email, address.key, name, source, now)).fetchall()[0][0]
            current = store.get_subscriber_by_id(new_id)
        elif name and not current.name:
            conn.execute("UPDATE subscribers SET name = ? WHERE id = ?", (name, current.id))
        result = SubscribeResult(current)
        memberships = {m.list_id: m.status for m in store.memberships(current.id)}
        proven = current.status.value == "active"
        for target in targets:
            status = memberships.get(target.id)
            if status == MembershipStatus.ACTIVE and proven:
                continue  # already receiving it: nothing to do, no mail to send
            if (target.optin == OptIn.SINGLE and status is None
                  and current.status.value in ("active", "unconfirmed")):
                store._set_membership(current.id, target.id, "active", now)
                result.activated.append(target)
            else:
                store._set_membership(current.id, target.id, "unconfirmed", now)
                result.pending.append(target)
        if result.activated and current.status.value == "unconfirmed":
            conn.execute("UPDATE subscribers SET status = 'active', confirmed_at = ? WHERE id = ?",
                         (now, current.id))
    result.subscriber = store.get_subscriber_by_id(current.id)
    return result


def _can_receive(store: "SqliteStore", subscriber: Subscriber) -> bool:
    from newsletter.audience.addresses import parse_address

    if subscriber.status.value in ("bounced", "complained"):
        return False
    return not store._suppressed_hash(parse_address(subscriber.email).hash)


def confirm(store: "SqliteStore", subscriber_id: int, list_id: int = 0) -> bool:
    """Activate unconfirmed memberships (and the subscriber). False when nothing changed or
    consent rules forbid it."""
    from newsletter.store.db import utc_now

    subscriber = store.get_subscriber_by_id(subscriber_id)
    if subscriber is None or not _can_receive(store, subscriber):
        return False
    now = utc_now()
    with store.transaction() as conn:
        sql = ("UPDATE memberships SET status = 'active', confirmed_at = ?, unsubscribed_at = NULL "
               "WHERE subscriber_id = ? AND status = 'unconfirmed'")
        args: tuple = (now, subscriber_id)
        if list_id:
            sql, args = sql + " AND list_id = ?", args + (list_id,)
        changed = conn.execute(sql, args).rowcount > 0
        if changed or subscriber.status.value == "unconfirmed":
            changed |= conn.execute(
                "UPDATE subscribers SET status = 'active', confirmed_at = ?, unsubscribed_at = NULL "
                "WHERE id = ? AND status IN ('unconfirmed', 'unsubscribed')", (now, subscriber_id),
            ).rowcount > 0
    return changed


def update_subscriber(store: "SqliteStore", subscriber_id: int, name: str | None,
                      list_ids: list[int] | None) -> Subscriber:
    """Preferences (reached through a signed link, so the reader has proven the address)."""
    from newsletter.audience.addresses import clean_text
    from newsletter.store.db import utc_now

    subscriber = store.get_subscriber_by_id(subscriber_id)
    if subscriber is None:
        raise ValidationError(f"no subscriber with id {subscriber_id}")
    wanted: set[int] | None = None
    if list_ids is not None:
        wanted = {t.id for t in _lists_by_id(store, list_ids)} if list_ids else set()
    if wanted and not _can_receive(store, subscriber):
        raise ValidationError("this address cannot be subscribed again (it bounced or complained)")
    now = utc_now()
    with store.transaction() as conn:
        if name is not None:
            conn.execute("UPDATE subscribers SET name = ? WHERE id = ?",
                         (clean_text(name)[0], subscriber_id))
        if wanted is not None:
            _set_active_lists(store, subscriber, wanted, now)
    return store.get_subscriber_by_id(subscriber_id)


def _set_active_lists(store: "SqliteStore", subscriber: Subscriber, wanted: set[int],
                      now: str) -> None:
    conn = store.conn
    current = {m.list_id: m.status for m in store.memberships(subscriber.id)}
    for list_id, status in current.items():
        if list_id not in wanted and status != MembershipStatus.UNSUBSCRIBED:
            store._set_membership(subscriber.id, list_id, "unsubscribed", now)
    for list_id in wanted:
        if current.get(list_id) != MembershipStatus.ACTIVE:
            store._set_membership(subscriber.id, list_id, "active", now)
    if wanted and subscriber.status.value != "active":
        conn.execute("UPDATE subscribers SET status = 'active', confirmed_at = ?, "
                     "unsubscribed_at = NULL WHERE id = ?", (now, subscriber.id))
    elif not wanted and subscriber.status.value in ("active", "unconfirmed"):
        conn.execute("UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = ? "
                     "WHERE id = ?", (now, subscriber.id))


def export_subscriber(store: "SqliteStore", subscriber_id: int) -> dict:
    """Everything stored about one subscriber, JSON-ready."""
    from newsletter.audience.addresses import parse_address
    from newsletter.store.consent import consent_records

    subscriber = store.get_subscriber_by_id(subscriber_id)
    if subscriber is None:
        raise ValidationError(f"no subscriber with id {subscriber_id}")
    address = parse_address(subscriber.email)
    conn = store.conn
    suppression = conn.execute("SELECT reason, created_at FROM suppressions WHERE email_hash = ?",
                               (address.hash,)).fetchone()
    deliveries = [dict(r) for r in conn.execute(
        "SELECT s.slug AS edition, s.subject, d.email, d.state, d.sent_at "
        "FROM deliveries d JOIN sends s ON s.id = d.send_id WHERE d.subscriber_id = ? "
        "ORDER BY d.id", (subscriber_id,))]
    events = [dict(r) for r in conn.execute(
        "SELECT type, subtype, link, occurred_at FROM events WHERE lower(email) IN (?, ?) "
        "ORDER BY occurred_at", (address.key, address.ascii_email.lower()))]
    return {
        "email": subscriber.email, "name": subscriber.name,
        "attributes": subscriber.attributes, "status": subscriber.status.value,
        "source": subscriber.source, "created_at": subscriber.created_at,
        "confirmed_at": subscriber.confirmed_at, "unsubscribed_at": subscriber.unsubscribed_at,
        "lists": [{"list": m.list_name, "status": m.status.value, "created_at": m.created_at,
                   "confirmed_at": m.confirmed_at, "unsubscribed_at": m.unsubscribed_at}
                  for m in store.memberships(subscriber_id)],
        "suppressed": dict(suppression) if suppression else None,
        "deliveries": deliveries,
        "events": events,
        "consent": consent_records(conn, subscriber_id),
    }


def dumps(data: dict) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2)
