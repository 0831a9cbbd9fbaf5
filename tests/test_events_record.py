"""Recording events against a real project database and the real subscriber store, on both
engines (SQLite and a real PostgreSQL server: the ``backend`` fixture)."""

from __future__ import annotations

import pytest

from events_support import insert_send, notification, query, raw_body, sns_body
from newsletter.config import EventsConfig, load_config
from newsletter.feedback.record import Outcome, dead_letters, open_recorder
from newsletter.feedback.parse import parse_message
from newsletter.store import open_store
from newsletter.store.models import SubscriberStatus


@pytest.fixture
def config(backend_project):
    return load_config()


@pytest.fixture
def readers(config):
    with open_store(config) as store:
        store.create_list("daily")
        for email in ("jane@example.com", "richard@example.com", "mary@example.com", "recipient@example.com"):
            store.add_subscriber(email, lists=["daily"])
    return config


def record_all(config, body, settings=None):
    with open_recorder(config) as recorder:
        if settings:
            recorder.settings = settings
        return [recorder.record(e) for e in parse_message(body)]


def status_of(config, email):
    with open_store(config) as store:
        return store.get_subscriber(email).status, store.is_suppressed(email)


def test_hard_bounce_makes_the_reader_bounced_and_suppressed(readers):
    [result] = record_all(readers, sns_body(notification("identity-bounce-permanent")))
    assert result.outcome is Outcome.RECORDED
    assert "jane@example.com is now bounced" in result.effect
    assert status_of(readers, "jane@example.com") == (SubscriberStatus.BOUNCED, True)
    with open_store(readers) as store:
        assert "jane@example.com" not in {r.email for r in store.recipients("daily")}
    assert status_of(readers, "mary@example.com") == (SubscriberStatus.ACTIVE, False)


def test_complaint_makes_the_reader_complained_and_suppressed(readers):
    [result] = record_all(readers, raw_body(notification("event-complaint", email="richard@example.com")))
    assert "complained" in result.effect
    assert status_of(readers, "richard@example.com") == (SubscriberStatus.COMPLAINED, True)


def test_not_spam_feedback_is_recorded_without_suppressing(readers):
    doc = notification("identity-complaint", email="mary@example.com")
    doc["complaint"]["complaintFeedbackType"] = "not-spam"
    [result] = record_all(readers, raw_body(doc))
    assert result.outcome is Outcome.RECORDED and result.effect is None
    assert status_of(readers, "mary@example.com") == (SubscriberStatus.ACTIVE, False)


def test_a_bounce_for_someone_who_is_no_subscriber_is_still_suppressed(readers):
    record_all(readers, raw_body(notification("event-bounce", email="stranger@example.net")))
    with open_store(readers) as store:
        assert store.is_suppressed("Stranger@Example.net")
        assert store.get_subscriber("stranger@example.net") is None


def test_duplicates_are_recorded_once(readers):
    doc = notification("identity-bounce-permanent")
    first = record_all(readers, sns_body(doc))
    again = record_all(readers, raw_body(doc)) + record_all(readers, sns_body(doc))
    assert [r.outcome for r in first] == [Outcome.RECORDED]
    assert [r.outcome for r in again] == [Outcome.DUPLICATE, Outcome.DUPLICATE]
    assert query(readers, "SELECT count(*) FROM events") == [(1,)]


def test_soft_bounces_suppress_at_the_limit_within_the_window(readers):
    settings = EventsConfig(soft_bounce_limit=3, soft_bounce_window_days=14)
    email = "richard@example.com"

    def soft(day, n):
        doc = notification("identity-bounce-transient", email=email, message_id=f"m-{day}-{n}",
                           timestamp=f"2026-11-{day:02d}T07:00:00.000Z")
        return record_all(readers, raw_body(doc), settings)[0]

    assert soft(1, 1).effect is None
    assert soft(20, 2).effect is None  # the first is outside the 14 days before this one
    assert status_of(readers, email) == (SubscriberStatus.ACTIVE, False)
    assert soft(22, 3).effect is None
    result = soft(24, 4)  # three within 14 days: 20th, 22nd, 24th
    assert "3 soft bounces within 14 days" in result.effect
    assert status_of(readers, email) == (SubscriberStatus.BOUNCED, True)


def test_events_are_linked_to_the_ledger_row_by_provider_message_id(readers):
    insert_send(readers, "2026-11-24", rows=[("recipient@example.com", "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"),
                          ("mary@example.com", "other-id")])
    for name in ("event-delivery", "event-open", "event-click"):
        record_all(readers, sns_body(notification(name)))
    record_all(readers, raw_body(notification("event-open", message_id="unknown-id")))
    rows = query(readers, "SELECT e.type, d.email FROM events e LEFT JOIN deliveries d ON d.id = e.delivery_id "
                 "ORDER BY e.id")
    assert rows == [("delivery", "recipient@example.com"), ("open", "recipient@example.com"),
                                        ("click", "recipient@example.com"), ("open", None)]


def test_a_crash_between_effect_and_commit_is_repaired_by_the_rerun(readers):
    """Effects are applied before the event row is committed; re-running applies them again
    (idempotently) and then stores the row once."""
    [event] = parse_message(raw_body(notification("event-bounce", email="mary@example.com")))
    with open_recorder(readers) as recorder:
        recorder._apply(event)  # as if the process died right after the effect
    assert status_of(readers, "mary@example.com") == (SubscriberStatus.BOUNCED, True)
    with open_recorder(readers) as recorder:
        result = recorder.record(event)
    assert result.outcome is Outcome.RECORDED and "suppressed" in result.effect


def test_dead_letters_are_kept_once(readers):
    with open_recorder(readers) as recorder:
        assert recorder.keep_aside("sqs-1", "garbage", "message body is not JSON")
        assert not recorder.keep_aside("sqs-1", "garbage again", "message body is not JSON")
        kept = dead_letters(recorder.conn)
    assert [(d.message_id, d.body) for d in kept] == [("sqs-1", "garbage")]


def test_dead_letters_can_be_retried_once_understood(readers, cli):
    good = raw_body(notification("event-bounce", email="mary@example.com"))
    with open_recorder(readers) as recorder:
        recorder.keep_aside("sqs-1", good, "unknown SES notification type (from an older version)")
        recorder.keep_aside("sqs-2", "garbage", "message body is not JSON")
    result = cli("events", "dead-letters", "--retry")
    assert result.exit_code == 0
    assert "1 recorded now, 1 still kept aside" in result.stderr
    [line] = result.stdout.splitlines()
    assert "sqs-2  message body is not JSON" in line
    assert status_of(readers, "mary@example.com") == (SubscriberStatus.BOUNCED, True)
