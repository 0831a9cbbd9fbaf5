"""Parsing SES notifications: both SNS envelopes × both SES shapes, every event type."""

from __future__ import annotations

import json

import pytest

from events_support import notification, raw_body, sns_body
from newsletter.feedback.parse import EventType, Ignored, MalformedMessage, parse_message

CASES = [
    # fixture, type, subtype, detail contains, email
    ("identity-bounce-permanent", EventType.BOUNCE, "Permanent", "550 5.1.1", "jane@example.com"),
    ("identity-bounce-transient", EventType.BOUNCE, "Transient", "MailboxFull", "richard@example.com"),
    ("identity-complaint", EventType.COMPLAINT, "abuse", None, "richard@example.com"),
    ("identity-delivery", EventType.DELIVERY, None, "250 ok", "mary@example.com"),
    ("event-bounce", EventType.BOUNCE, "Permanent", "user unknown", "recipient@example.com"),
    ("event-complaint", EventType.COMPLAINT, "abuse", None, "recipient@example.com"),
    ("event-delivery", EventType.DELIVERY, None, "250 2.6.0", "recipient@example.com"),
    ("event-open", EventType.OPEN, None, None, "recipient@example.com"),
    ("event-click", EventType.CLICK, None, None, "recipient@example.com"),
    ("event-reject", EventType.REJECT, None, "Bad content", "recipient@example.com"),
    ("event-rendering-failure", EventType.RENDERING_FAILURE, None, "MyTemplate", "recipient@example.com"),
    ("event-delivery-delay", EventType.DELIVERY_DELAY, "TransientCommunicationFailure", "4.4.1",
     "recipient@example.com"),
]


@pytest.mark.parametrize("wrap", [raw_body, sns_body], ids=["raw", "sns-envelope"])
@pytest.mark.parametrize("name, etype, subtype, detail, email", CASES, ids=[c[0] for c in CASES])
def test_every_type_in_both_envelopes(wrap, name, etype, subtype, detail, email):
    doc = notification(name)
    [event] = parse_message(wrap(doc))
    assert event.type is etype
    assert event.subtype == subtype
    assert event.email == email
    assert event.provider_message_id == doc["mail"]["messageId"]
    assert event.occurred_at.endswith("Z") and len(event.occurred_at) == 20
    if detail:
        assert detail in event.detail
    assert event.payload == doc


def test_the_event_id_is_the_same_with_and_without_the_envelope():
    doc = notification("event-bounce", email="a@example.org")
    [raw] = parse_message(raw_body(doc))
    [wrapped] = parse_message(sns_body(doc))
    [again] = parse_message(sns_body(doc))  # SNS redelivery: a new SNS MessageId, same event
    assert raw.event_id == wrapped.event_id == again.event_id
    other = notification("event-bounce", email="b@example.org")
    assert parse_message(raw_body(other))[0].event_id != raw.event_id


def test_click_keeps_the_link_and_hard_bounce_is_flagged():
    [click] = parse_message(raw_body(notification("event-click", link="https://example.org/x?a=1")))
    assert click.link == "https://example.org/x?a=1"
    [bounce] = parse_message(raw_body(notification("event-bounce")))
    [soft] = parse_message(raw_body(notification("identity-bounce-transient")))
    assert bounce.is_hard_bounce and not soft.is_hard_bounce


def test_a_bounce_naming_several_recipients_becomes_one_event_each():
    doc = notification("identity-bounce-permanent")
    doc["bounce"]["bouncedRecipients"].append(
        {"emailAddress": "Mary Major <mary@example.com>", "status": "5.1.1", "action": "failed"})
    events = parse_message(sns_body(doc))
    assert [e.email for e in events] == ["jane@example.com", "mary@example.com"]
    assert len({e.event_id for e in events}) == 2


def test_moto_canned_feedback_is_understood_despite_its_placeholder_type():
    from moto.ses.feedback import BOUNCE, COMMON_MAIL

    doc = dict(COMMON_MAIL, bounce=BOUNCE)  # notificationType is "Bounce, Complaint, or Delivery."
    events = parse_message(json.dumps(doc))
    assert {e.type for e in events} == {EventType.BOUNCE}
    assert events[0].email == "recipient1@example.com"
    assert events[0].occurred_at == "2012-05-25T14:59:38Z"


@pytest.mark.parametrize("name, reason", [
    ("event-send", "Send event"),
])
def test_known_but_untracked_events_are_ignored(name, reason):
    result = parse_message(sns_body(notification(name)))
    assert isinstance(result, Ignored) and reason in result.reason


def test_sns_subscription_confirmation_and_ses_topic_test_are_ignored():
    confirmation = json.dumps({"Type": "SubscriptionConfirmation", "MessageId": "x", "TopicArn": "arn:t",
                               "Message": "You have chosen to subscribe…",
                               "SubscribeURL": "https://sns.example/confirm"})
    assert "confirm it by opening https://sns.example/confirm" in parse_message(confirmation).reason
    ses_test = {"notificationType": "AmazonSnsSubscriptionSucceeded",
                "message": "You have successfully subscribed your Amazon SNS topic"}
    assert isinstance(parse_message(sns_body(ses_test)), Ignored)


@pytest.mark.parametrize("body, message", [
    ("not json at all", "message body is not JSON"),
    ("[1, 2]", "not an object"),
    ('{"hello": "world"}', "no eventType/notificationType"),
    (json.dumps({"Type": "Notification", "TopicArn": "arn:t", "Message": "{broken"}), "SNS Message is not JSON"),
    (json.dumps({"Type": "Surprise", "TopicArn": "arn:t", "Message": "{}"}), "unknown SNS message Type"),
    (json.dumps({"eventType": "Teleport", "mail": {"messageId": "m"}}), "unknown SES notification type 'Teleport'"),
    (json.dumps({"eventType": "Bounce", "bounce": {"bounceType": "Permanent", "bouncedRecipients": [],
                                                   "timestamp": "2026-01-01T00:00:00Z"}}), "without mail.messageId"),
])
def test_malformed_messages_say_why(body, message):
    with pytest.raises(MalformedMessage, match=message):
        parse_message(body)


def test_missing_pieces_are_malformed():
    doc = notification("event-bounce")
    doc["bounce"]["bouncedRecipients"] = []
    with pytest.raises(MalformedMessage, match="names no recipient"):
        parse_message(raw_body(doc))
    doc = notification("event-bounce")
    doc["bounce"]["bounceType"] = "Sideways"
    with pytest.raises(MalformedMessage, match="unknown bounceType"):
        parse_message(raw_body(doc))
    doc = notification("event-delivery")
    doc["delivery"]["recipients"] = ["not-an-address"]
    with pytest.raises(MalformedMessage, match="not an email address"):
        parse_message(raw_body(doc))
    doc = notification("event-open")
    doc["open"]["timestamp"] = "yesterday-ish"
    with pytest.raises(MalformedMessage, match="not a date"):
        parse_message(raw_body(doc))
