"""Helpers for the events tests: realistic SES notifications (tests/fixtures/ses-notifications,
written from the SES developer guide's examples) with the recipient, message id and time
swapped in, wrapped in either SNS envelope variant, plus a moto-backed queue."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "ses-notifications"
_RECIPIENT_LISTS = ("bouncedRecipients", "complainedRecipients", "delayedRecipients")
_DETAIL_KEYS = ("bounce", "complaint", "delivery", "open", "click", "deliveryDelay", "reject", "failure")


def notification(name: str, *, email: str | None = None, message_id: str | None = None,
                 timestamp: str | None = None, link: str | None = None) -> dict:
    """The fixture ``name`` (without .json), addressed to ``email`` about SES message ``message_id``."""
    doc = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    mail = doc["mail"]
    if message_id:
        mail["messageId"] = message_id
    for key in _DETAIL_KEYS:
        detail = doc.get(key)
        if not isinstance(detail, dict):
            continue
        if email:
            for list_key in _RECIPIENT_LISTS:
                for rec in detail.get(list_key, []):
                    rec["emailAddress"] = email
            if "recipients" in detail:
                detail["recipients"] = [email]
        if timestamp and "timestamp" in detail:
            detail["timestamp"] = timestamp
        if link and "link" in detail:
            detail["link"] = link
    if email:
        mail["destination"] = [email]
    return doc


def raw_body(doc: dict) -> str:
    """The queue body with SNS raw message delivery on: the SES JSON itself."""
    return json.dumps(doc)


def sns_body(doc: dict, *, sns_message_id: str | None = None) -> str:
    """The queue body with raw message delivery off: the SNS JSON envelope around it."""
    envelope = json.loads((FIXTURES / "sns-envelope-notification.json").read_text(encoding="utf-8"))
    envelope["Message"] = json.dumps(doc)
    envelope["MessageId"] = sns_message_id or str(uuid.uuid4())
    return json.dumps(envelope)


def make_queue(moto_url: str, name: str = "newsletter-ses-events", *, visibility: int = 30):
    """A real SQS queue on the moto server; returns (client, queue_url)."""
    import boto3

    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto_url)
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(visibility)})["QueueUrl"]
    return sqs, url


def queue_depth(sqs, url: str) -> tuple[int, int]:
    """(visible, in flight) messages."""
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def database(config):
    """The project's database on whichever engine it is (SQLite file or PostgreSQL), as a
    context manager giving the connection."""
    from contextlib import closing

    from newsletter.store.connection import connect

    return closing(connect(config))


def query(config, sql: str, *args) -> list[tuple]:
    """Rows of ``sql`` on the project's database (either engine), as tuples."""
    with database(config) as conn:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]


def insert_send(config, slug: str, rows, *, created_at: str = "2026-11-24T07:00:00Z") -> None:
    """A finished send with one 'sent' delivery per (email, provider message id), written with
    SQL the way the send command leaves the ledger (for tests that need many rows quickly),
    on either engine."""
    from newsletter.store.connection import write

    rows = list(rows)
    with database(config) as conn, write(conn):
        send_id = conn.execute(
            "INSERT INTO sends (slug, list_name, subject, transport, recipients, created_at, finished_at) "
            "VALUES (?, 'daily', ?, 'ses', ?, ?, ?) RETURNING id",
            (slug, f"Test Daily {slug}", len(rows), created_at, created_at)).fetchone()[0]
        for email, provider_id in rows:
            sub = conn.execute("SELECT id FROM subscribers WHERE email = ?", (email,)).fetchone()
            conn.execute(
                "INSERT INTO deliveries (send_id, subscriber_id, email, state, provider_message_id, sent_at, "
                "updated_at) VALUES (?, ?, ?, 'sent', ?, ?, ?)",
                (send_id, sub[0] if sub else None, email, provider_id, created_at, created_at))


def record_notifications(config, docs: list[dict]) -> None:
    """Parse and record ``docs`` as ``events pull`` would, every other one wrapped in SNS (both
    shapes reach the queue)."""
    from newsletter.feedback.parse import parse_message
    from newsletter.feedback.record import open_recorder

    with open_recorder(config) as recorder:
        for n, doc in enumerate(docs):
            for event in parse_message(sns_body(doc) if n % 2 else raw_body(doc)):
                recorder.record(event)
