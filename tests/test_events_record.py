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


_RECORDER = r"""
import json, sys, time
from pathlib import Path
from newsletter.config import load_config
from newsletter.feedback.parse import parse_message
from newsletter.config import EventsConfig
from newsletter.feedback.record import open_recorder

bodies, go = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
outcomes = []
with open_recorder(load_config()) as recorder:
    recorder.settings = EventsConfig(soft_bounce_limit=3, soft_bounce_window_days=14)
    while not go.exists():
        time.sleep(0.005)
    for body in bodies:
        outcomes += [recorder.record(e).outcome.value for e in parse_message(body)]
print(json.dumps(outcomes))
"""


def test_recorders_running_at_once_store_each_event_once_and_count_each_others_bounces(readers, tmp_path):
    """Four processes record at the same moment (`events pull` on two hosts, say): the same five
    notifications each (in a different order), and one soft bounce of one reader each, all at the
    same SES time. Every notification is stored and applied once, and the bounces count each
    other: the third and the fourth reach the limit of 3, and the reader is bounced."""
    import json
    import os
    import subprocess
    import sys

    shared = [sns_body(notification("identity-bounce-permanent")),
              raw_body(notification("event-complaint", email="mary@example.com")),
              raw_body(notification("event-delivery", email="recipient@example.com")),
              sns_body(notification("event-open", email="recipient@example.com")),
              raw_body(notification("event-click", email="recipient@example.com"))]
    go = tmp_path / "go"
    procs = []
    for k in range(4):
        soft = raw_body(notification("identity-bounce-transient", email="richard@example.com",
                                     message_id=f"soft-{k}", timestamp="2026-11-20T07:00:00.000Z"))
        mine = [soft] + shared[k:] + shared[:k]
        (tmp_path / f"bodies-{k}.json").write_text(json.dumps(mine), encoding="utf-8")
        procs.append(subprocess.Popen(
            [sys.executable, "-c", _RECORDER, str(tmp_path / f"bodies-{k}.json"), str(go)],
            cwd=os.getcwd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    go.touch()
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outcomes += json.loads(out)
    assert outcomes.count("recorded") == 5 + 4 and outcomes.count("duplicate") == 3 * 5
    assert query(readers, "SELECT count(*) FROM events") == [(9,)]
    effects = [r[0] for r in query(readers, "SELECT effect FROM events WHERE provider_message_id LIKE 'soft-%'")]
    assert sorted(e for e in effects if e) == ["richard@example.com is now bounced: 3 soft bounces within 14 days",
                                               "richard@example.com suppressed: 4 soft bounces within 14 days"]
    assert status_of(readers, "richard@example.com") == (SubscriberStatus.BOUNCED, True)
    assert status_of(readers, "jane@example.com") == (SubscriberStatus.BOUNCED, True)
    assert status_of(readers, "mary@example.com") == (SubscriberStatus.COMPLAINED, True)


def test_a_message_id_in_several_ledger_rows_links_the_event_to_its_reader(readers):
    """SES ids are unique per message, but a ledger restored or copied may hold one twice: the
    event goes to the row of its own address (whatever the case), else the first row."""
    insert_send(readers, "2026-11-23", rows=[("mary@example.com", "shared-id")])
    insert_send(readers, "2026-11-24", rows=[("Recipient@Example.com", "shared-id")])
    record_all(readers, raw_body(notification("event-open", email="recipient@example.com", message_id="shared-id")))
    record_all(readers, raw_body(notification("event-click", email="nobody@example.com", message_id="shared-id")))
    rows = query(readers, "SELECT e.type, d.email FROM events e JOIN deliveries d ON d.id = e.delivery_id "
                 "ORDER BY e.id")
    assert rows == [("open", "Recipient@Example.com"), ("click", "mary@example.com")]
