"""The whole loop on a moto server: a real `newsletter send` through SES, SES feedback published
to SNS → SQS (realistic notifications carrying the SES message ids the send recorded),
`events pull`, then `stats` and a later send that leaves the bounced and complained out."""

from __future__ import annotations

import json

import boto3

from events_support import insert_send, make_queue, notification, query
from newsletter.config import load_config
from newsletter.store import open_store
from newsletter.store.models import SubscriberStatus

EDITION = """\
---
title: "Test Daily, {day} November"
date: 2026-11-{day}T07:00:00+00:00
---

Today's lede.

---

1.  [A story worth reading](https://example.org/story-{day})

    Its summary.

---

## Essay

A closing thought.
"""

READERS = ["ann@example.org", "bob@example.org", "cat@example.org", "dan@example.org"]


def setup_project(project, moto):
    sqs, queue_url = make_queue(moto)
    aws = {s: boto3.client(s, region_name="us-east-1", endpoint_url=moto) for s in ("ses", "sns")}
    topic = aws["sns"].create_topic(Name="ses-events")["TopicArn"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws["sns"].subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    aws["ses"].verify_domain_identity(Domain="example.com")
    text = 'transport = "ses"\n' + (project / "newsletter.toml").read_text(encoding="utf-8")
    text += f'\n[ses]\nendpoint_url = "{moto}"\nqueue_url = "{queue_url}"\nregion = "us-east-1"\n'
    (project / "newsletter.toml").write_text(text, encoding="utf-8")
    (project / "editions").mkdir()
    for day in ("23", "24"):
        (project / "editions" / f"2026-11-{day}.md").write_text(EDITION.format(day=day), encoding="utf-8")
    config = load_config()
    with open_store(config) as store:
        store.create_list("daily")
        for email in READERS:
            store.add_subscriber(email, lists=["daily"])
    return config, aws["sns"], topic


def provider_ids(config, slug):
    rows = query(config, "SELECT d.email, d.provider_message_id FROM deliveries d JOIN sends s ON s.id = d.send_id "
                 "WHERE s.slug = ? AND d.state = 'sent'", slug)
    return dict(rows)


def feedback_for(ids: dict[str, str]) -> list[dict]:
    """SES's word on a send to READERS (``ids``: address -> SES message id): bob bounced, cat
    complained, the rest delivered, ann opened and clicked story 23."""
    return [
        notification("identity-bounce-permanent", email="bob@example.org", message_id=ids["bob@example.org"]),
        notification("event-complaint", email="cat@example.org", message_id=ids["cat@example.org"]),
        *[notification("event-delivery", email=e, message_id=ids[e]) for e in READERS if e != "bob@example.org"],
        notification("event-open", email="ann@example.org", message_id=ids["ann@example.org"]),
        notification("event-click", email="ann@example.org", message_id=ids["ann@example.org"],
                     link="https://example.org/story-23"),
    ]


def test_bounce_and_complaint_from_a_real_send_are_never_mailed_again(backend_project, moto, cli):
    config, sns, topic = setup_project(backend_project, moto)
    result = cli("send", "editions/2026-11-23.md", "--list", "daily", "--yes")
    assert result.exit_code == 0, result.output
    ids = provider_ids(config, "2026-11-23")
    assert set(ids) == set(READERS) and all(ids.values())

    feedback = feedback_for(ids)
    for doc in feedback:
        sns.publish(TopicArn=topic, Message=json.dumps(doc))
    pulled = cli("events", "pull", "--wait", "0")
    assert pulled.exit_code == 0, pulled.output
    assert "bob@example.org is now bounced" in pulled.stderr
    assert "cat@example.org is now complained" in pulled.stderr

    with open_store(config) as store:
        assert store.get_subscriber("bob@example.org").status is SubscriberStatus.BOUNCED
        assert store.get_subscriber("cat@example.org").status is SubscriberStatus.COMPLAINED
        assert store.is_suppressed("bob@example.org") and store.is_suppressed("cat@example.org")

    stats = json.loads(cli("stats", "2026-11-23", "--json").stdout)
    assert (stats["sent"], stats["delivered"], stats["hard_bounces"], stats["complaints"]) == (4, 3, 1, 1)
    assert (stats["unique_opens"], stats["unique_clicks"]) == (1, 1)
    assert stats["top_links"] == [{"url": "https://example.org/story-23", "clicks": 1, "unique_clicks": 1}]

    again = cli("send", "editions/2026-11-24.md", "--list", "daily", "--yes")
    assert again.exit_code == 0, again.output
    assert set(provider_ids(config, "2026-11-24")) == {"ann@example.org", "dan@example.org"}


def test_pull_dead_letters_and_stats_commands_on_both_engines(backend_project, backend, moto, cli):
    """`events pull`, `events dead-letters` and `stats` on the project database, whichever engine
    holds it (PostgreSQL through NEWSLETTER_DATABASE_URL, as a deployment sets it): SES feedback
    through SNS → SQS about a send whose ledger rows carry the SES message ids."""
    config, sns, topic = setup_project(backend_project, moto)
    ids = {email: f"0100019a-{n:04d}-ses" for n, email in enumerate(READERS)}
    insert_send(config, "2026-11-23", ids.items(), created_at="2026-11-23T07:00:00Z")
    feedback = feedback_for(ids)
    for doc in feedback:
        sns.publish(TopicArn=topic, Message=json.dumps(doc))
    sns.publish(TopicArn=topic, Message=json.dumps(feedback[0]))  # SNS delivers twice at times
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto)
    sqs.send_message(QueueUrl=config.ses.queue_url, MessageBody="{not json")
    pulled = cli("events", "pull", "--wait", "0")
    assert pulled.exit_code == 0, pulled.output
    assert "bob@example.org is now bounced" in pulled.stderr
    assert "cat@example.org is now complained" in pulled.stderr
    assert "7 events recorded" in pulled.stderr and "1 duplicates" in pulled.stderr
    assert "1 kept aside" in pulled.stderr

    # the rows are where the configuration says, and only there
    assert query(config, "SELECT count(*) FROM events") == [(7,)]
    assert query(config, "SELECT count(*) FROM events WHERE delivery_id IS NULL") == [(0,)]
    sqlite_file = backend_project / "subscribers" / "subscribers.db"
    assert sqlite_file.exists() is (backend == "sqlite")
    with open_store(config) as store:
        assert store.get_subscriber("bob@example.org").status is SubscriberStatus.BOUNCED
        assert store.is_suppressed("bob@example.org") and store.is_suppressed("cat@example.org")

    [kept] = json.loads(cli("events", "dead-letters", "--json").stdout)
    assert kept["body"] == "{not json" and "not JSON" in kept["reason"]
    retried = cli("events", "dead-letters", "--retry")
    assert retried.exit_code == 0 and "0 recorded now, 1 still kept aside" in retried.stderr

    stats = json.loads(cli("stats", "2026-11-23", "--json").stdout)
    assert (stats["sent"], stats["delivered"], stats["hard_bounces"], stats["complaints"]) == (4, 3, 1, 1)
    assert (stats["unique_opens"], stats["unique_clicks"]) == (1, 1)
    assert stats["top_links"] == [{"url": "https://example.org/story-23", "clicks": 1, "unique_clicks": 1}]
    table = cli("stats")
    assert table.exit_code == 0 and table.stdout.splitlines()[1].split()[:3] == ["2026-11-23", "4", "4"]
    assert "warning: 2026-11-23: bounce rate 25.00%" in table.stderr
