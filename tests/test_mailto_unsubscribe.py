"""The List-Unsubscribe mailto made real: a send offers `mailto:<[unsubscribe] mailto>?subject=
unsubscribe TOKEN`; the reader's mail client writes there; SES receives it (receipt rule → SNS →
the events queue, all on a moto server) as a `Received` notification; `events pull` verifies the
token and unsubscribes exactly like the one-click POST, idempotently, recorded as an event."""

from __future__ import annotations

import copy
import email
import json
import uuid
from email import policy
from urllib.parse import unquote, urlsplit

import boto3
import pytest

from events_support import FIXTURES, database, make_queue, raw_body, sns_body
from newsletter.config import load_config, load_secret
from newsletter.feedback.parse import EventType, parse_message
from newsletter.store import open_store
from newsletter.store.connection import connect, is_postgres
from newsletter.store.models import MembershipStatus, SubscriberStatus
from newsletter.tokens import make_token

MAILTO = "unsubscribe@news.example.com"
EDITION = """\
---
title: "Test Daily, 24 November"
date: 2026-11-24T07:00:00+00:00
---

Today's lede.

---

1.  [A story worth reading](https://example.org/story)

    Its summary.
"""
READERS = ["ann@example.org", "bob@example.org"]


def received(subject: str, *, sender: str, recipient: str = MAILTO) -> dict:
    """A `Received` notification (fixture written from the SES developer guide's example)."""
    doc = json.loads((FIXTURES / "received-unsubscribe.json").read_text(encoding="utf-8"))
    doc["mail"]["messageId"] = uuid.uuid4().hex
    doc["mail"]["source"] = sender
    doc["mail"]["commonHeaders"]["subject"] = subject
    doc["mail"]["commonHeaders"]["from"] = [sender]
    doc["receipt"]["recipients"] = [recipient]
    doc["mail"]["destination"] = [recipient]
    return doc


@pytest.fixture
def inbound(backend_project, moto, cli):
    """A project that sends to the outbox, offers the mailto, and reads SES notifications from a
    queue that an SNS topic (the receipt rule's action) delivers to; on either engine."""
    sqs, queue_url = make_queue(moto)
    sns = boto3.client("sns", region_name="us-east-1", endpoint_url=moto)
    topic = sns.create_topic(Name="newsletter-inbound")["TopicArn"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    text = (backend_project / "newsletter.toml").read_text(encoding="utf-8")
    text += (f'\n[ses]\nendpoint_url = "{moto}"\nqueue_url = "{queue_url}"\nregion = "us-east-1"\n'
             f'\n[unsubscribe]\nmailto = "{MAILTO}"\n')
    (backend_project / "newsletter.toml").write_text(text, encoding="utf-8")
    (backend_project / "editions").mkdir()
    (backend_project / "editions" / "2026-11-24.md").write_text(EDITION, encoding="utf-8")
    assert cli("lists", "create", "daily").exit_code == 0
    assert cli("lists", "create", "weekly").exit_code == 0
    for address in READERS:
        assert cli("subscribers", "add", address, "--list", "daily", "--list", "weekly").exit_code == 0
    result = cli("send", "editions/2026-11-24.md", "--list", "daily", "--yes")
    assert result.exit_code == 0, result.output
    messages = {}
    for path in (backend_project / "outbox" / "2026-11-24" / "new").iterdir():
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        messages[msg["To"].addresses[0].addr_spec] = msg
    return sns, topic, sqs, queue_url, messages


def mailto_of(msg) -> tuple[str, str]:
    """(address, subject) of the message's List-Unsubscribe mailto, as a mail client reads it."""
    header = str(msg["List-Unsubscribe"])
    uris = [part.strip().strip("<>") for part in header.split(",")]
    assert uris[0].startswith("https://") and len(uris) == 2
    target = urlsplit(uris[1])
    assert target.scheme == "mailto"
    query = dict(part.split("=", 1) for part in target.query.split("&"))
    return target.path, unquote(query["subject"])


def membership(address: str, list_name: str) -> MembershipStatus:
    with open_store(load_config()) as store:
        sub = store.get_subscriber(address)
        return next(m.status for m in store.memberships(sub.id) if m.list_name == list_name)


def events_of_type(kind: str) -> list:
    with database(load_config()) as conn:
        return [dict(zip(("email", "subtype", "effect"), r)) for r in conn.execute(
            "SELECT email, subtype, effect FROM events WHERE type = ? ORDER BY id", (kind,))]


def test_a_mail_to_the_mailto_unsubscribes_that_reader_from_that_list(inbound, cli):
    sns, topic, sqs, queue_url, messages = inbound
    address, subject = mailto_of(messages["ann@example.org"])
    assert address == MAILTO and subject.startswith("unsubscribe ")
    sns.publish(TopicArn=topic, Message=json.dumps(received(subject, sender="ann@example.org")))
    result = cli("events", "pull")
    assert result.exit_code == 0, result.output
    assert "ann@example.org unsubscribed from list daily (by mail)" in result.output
    assert membership("ann@example.org", "daily") is MembershipStatus.UNSUBSCRIBED
    assert membership("ann@example.org", "weekly") is MembershipStatus.ACTIVE  # like the one-click POST
    assert membership("bob@example.org", "daily") is MembershipStatus.ACTIVE
    rows = events_of_type("unsubscribe")
    assert [(r["email"], r["subtype"]) for r in rows] == [("ann@example.org", "mailto")]
    # a second mail with the same token (the reader pressed the button twice): nothing changes
    sns.publish(TopicArn=topic, Message=json.dumps(received(subject, sender="ann@example.org")))
    again = cli("events", "pull")
    assert again.exit_code == 0 and "was already unsubscribed from list daily" in again.output
    assert len(events_of_type("unsubscribe")) == 2
    with open_store(load_config()) as store:
        assert store.get_subscriber("ann@example.org").status is SubscriberStatus.ACTIVE


def test_a_redelivered_notification_is_recorded_once(inbound, cli):
    sns, topic, sqs, queue_url, messages = inbound
    _, subject = mailto_of(messages["bob@example.org"])
    doc = received(subject, sender="bob@example.org")
    sqs.send_message(QueueUrl=queue_url, MessageBody=raw_body(doc))
    sqs.send_message(QueueUrl=queue_url, MessageBody=sns_body(doc))
    result = cli("events", "pull")
    assert result.exit_code == 0, result.output
    assert "1 events recorded (1 unsubscribe), 1 duplicates" in result.output
    assert membership("bob@example.org", "daily") is MembershipStatus.UNSUBSCRIBED


def test_the_token_in_a_plus_address_and_behind_a_reply_prefix(inbound, cli):
    sns, topic, sqs, queue_url, messages = inbound
    _, subject = mailto_of(messages["ann@example.org"])
    token = subject.split()[-1]
    local, _, domain = MAILTO.partition("@")
    sqs.send_message(QueueUrl=queue_url, MessageBody=raw_body(
        received("please stop", sender="someone@else.example", recipient=f"{local}+{token}@{domain}")))
    _, subject_bob = mailto_of(messages["bob@example.org"])
    sqs.send_message(QueueUrl=queue_url, MessageBody=raw_body(
        received("Re: " + subject_bob, sender="bob@example.org")))
    assert cli("events", "pull").exit_code == 0
    assert membership("ann@example.org", "daily") is MembershipStatus.UNSUBSCRIBED
    assert membership("bob@example.org", "daily") is MembershipStatus.UNSUBSCRIBED


@pytest.mark.parametrize("subject", [
    "unsubscribe",  # no token
    "unsubscribe " + make_token(b"another secret of enough length", "unsubscribe", 1, 1, uid=""),  # forged
    "unsubscribe TOKEN",  # preferences token in an unsubscribe's place: below
])
def test_no_or_a_forged_token_changes_nothing_but_is_recorded(inbound, cli, subject):
    sns, topic, sqs, queue_url, messages = inbound
    if subject == "unsubscribe TOKEN":
        subject = "unsubscribe " + make_token(load_secret(load_config()), "preferences", 1, 0, uid="")
    sqs.send_message(QueueUrl=queue_url, MessageBody=raw_body(received(subject, sender="ann@example.org")))
    result = cli("events", "pull")
    assert result.exit_code == 0, result.output
    assert "nothing done" in result.output
    assert membership("ann@example.org", "daily") is MembershipStatus.ACTIVE
    assert [r["effect"] for r in events_of_type("unsubscribe")][0].endswith("nothing done")


def test_parse_received_notification_both_envelopes():
    doc = received("Re: unsubscribe " + make_token(b"k" * 32, "unsubscribe", 7, 3, uid="ab" * 16), sender="Ann <ann@example.org>")
    for body in (raw_body(doc), sns_body(doc)):
        [event] = parse_message(body)
        assert event.type is EventType.UNSUBSCRIBE and event.subtype == "mailto"
        assert event.email == "ann@example.org"
        assert event.token == make_token(b"k" * 32, "unsubscribe", 7, 3, uid="ab" * 16)
        assert event.occurred_at == "2026-11-25T08:00:01Z"
    bare = copy.deepcopy(doc)
    bare["mail"]["commonHeaders"]["subject"] = "hello"
    [event] = parse_message(raw_body(bare))
    assert event.token is None


def test_without_the_setting_no_mailto_is_offered(project, cli):
    (project / "editions").mkdir()
    (project / "editions" / "2026-11-24.md").write_text(EDITION, encoding="utf-8")
    assert cli("lists", "create", "daily").exit_code == 0
    assert cli("subscribers", "add", "ann@example.org", "--list", "daily").exit_code == 0
    assert cli("send", "editions/2026-11-24.md", "--list", "daily", "--yes").exit_code == 0
    [path] = (project / "outbox" / "2026-11-24" / "new").iterdir()
    msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert "mailto:" not in str(msg["List-Unsubscribe"])
    assert str(msg["List-Unsubscribe"]).startswith("<https://news.example.com/unsubscribe/")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_a_database_that_refuses_the_mailto_unsubscribe_keeps_the_message(inbound, cli):
    """The one-click POST answers 503 when the database refuses the write (i9b); the mailto
    path caught that ``StoreError`` as "the list no longer exists: nothing to stop", recorded
    the event and deleted the queue message: an unsubscribe acknowledged and lost. It must stop
    with the message left in the queue, so the next `events pull` applies it."""
    sns, topic, sqs, queue_url, messages = inbound
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": "0"})
    _, subject = mailto_of(messages["ann@example.org"])
    sns.publish(TopicArn=topic, Message=json.dumps(received(subject, sender="ann@example.org")))
    conn = connect(load_config())
    # A real refusal of the write by the database (as a full disk or an I/O error would refuse it).
    if is_postgres(conn):
        conn.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                     "'BEGIN RAISE EXCEPTION ''could not write block: No space left on device''; END'")
        conn.execute("CREATE TRIGGER refuse BEFORE UPDATE ON memberships FOR EACH ROW EXECUTE FUNCTION refuse()")
    else:
        conn.execute("CREATE TRIGGER refuse BEFORE UPDATE ON memberships "
                     "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
    try:
        result = cli("events", "pull")
        assert result.exit_code == 2, result.output
        assert "nothing to stop" not in result.output
        assert membership("ann@example.org", "daily") is MembershipStatus.ACTIVE
        assert events_of_type("unsubscribe") == []
    finally:
        conn.execute("DROP TRIGGER refuse" + (" ON memberships" if is_postgres(conn) else ""))
        conn.close()
    again = cli("events", "pull")
    assert again.exit_code == 0, again.output
    assert "ann@example.org unsubscribed from list daily (by mail)" in again.output
    assert membership("ann@example.org", "daily") is MembershipStatus.UNSUBSCRIBED
