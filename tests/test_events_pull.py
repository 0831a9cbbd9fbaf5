"""`events pull` against a real moto server: SQS queue, SNS topic, SES identity notifications;
the events recorded in the project database on both engines (the ``backend`` fixture: SQLite,
and a real PostgreSQL server through NEWSLETTER_DATABASE_URL, which the subprocesses inherit)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import boto3
import pytest

from events_support import make_queue, notification, query, queue_depth, raw_body, sns_body
from newsletter.config import load_config
from newsletter.feedback.pull import DIE_AFTER_COMMIT_ENV, pull_events
from newsletter.feedback.record import open_recorder
from newsletter.store import open_store
from newsletter.store.models import SubscriberStatus


def configure(project, moto, queue_url, **extra):
    lines = ["", "[ses]", f'endpoint_url = "{moto}"', f'queue_url = "{queue_url}"', 'region = "us-east-1"']
    lines += [f'{k} = "{v}"' for k, v in extra.items()]
    with open(project / "newsletter.toml", "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    config = load_config()
    with open_store(config) as store:
        store.create_list("daily")
        for email in ("jane@example.com", "richard@example.com", "mary@example.com",
                      "recipient1@example.com", "recipient@example.com"):
            store.add_subscriber(email, lists=["daily"])
    return config


def pull(config, **kwargs):
    notes = []
    with open_recorder(config) as recorder:
        summary = pull_events(config, recorder, wait_seconds=0, report=lambda lvl, msg: notes.append((lvl, msg)),
                              **kwargs)
    return summary, notes


def count(config, sql, *args):
    return query(config, sql, *args)[0][0]


def subscriber(config, email):
    with open_store(config) as store:
        return store.get_subscriber(email).status, store.is_suppressed(email)


def test_pull_records_both_envelopes_and_shapes_and_empties_the_queue(backend_project, moto):
    sqs, url = make_queue(moto)
    config = configure(backend_project, moto, url)
    bodies = [
        sns_body(notification("identity-bounce-permanent")),
        raw_body(notification("event-complaint", email="richard@example.com")),
        sns_body(notification("event-delivery", email="mary@example.com")),
        raw_body(notification("identity-delivery")),
        sns_body(notification("event-open")),
        raw_body(notification("event-click")),
        sns_body(notification("event-send")),
    ]
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    summary, notes = pull(config)
    assert (summary.messages, summary.recorded, summary.ignored, summary.kept_aside) == (7, 6, 1, 0)
    assert summary.by_type == {"bounce": 1, "complaint": 1, "delivery": 2, "open": 1, "click": 1}
    assert subscriber(config, "jane@example.com") == (SubscriberStatus.BOUNCED, True)
    assert subscriber(config, "richard@example.com") == (SubscriberStatus.COMPLAINED, True)
    assert ("effect", "jane@example.com is now bounced: hard bounce (General · 5.1.1 · smtp; 550 5.1.1 "
                      "<jane@example.com>... User unknown)") in notes
    assert queue_depth(sqs, url) == (0, 0)


def test_duplicates_are_ignored_and_malformed_messages_kept_aside(backend_project, moto):
    sqs, url = make_queue(moto)
    config = configure(backend_project, moto, url)
    bounce = notification("event-bounce", email="mary@example.com")
    sqs.send_message(QueueUrl=url, MessageBody=sns_body(bounce))
    sqs.send_message(QueueUrl=url, MessageBody="{this is not json")
    sqs.send_message(QueueUrl=url, MessageBody=raw_body(bounce))  # the same event, other envelope
    sqs.send_message(QueueUrl=url, MessageBody=sns_body(bounce))  # SNS redelivery
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"eventType": "Teleport", "mail": {"messageId": "x"}}))
    sqs.send_message(QueueUrl=url, MessageBody=raw_body(notification("event-complaint", email="jane@example.com")))
    summary, notes = pull(config)
    assert (summary.recorded, summary.duplicates, summary.kept_aside) == (2, 2, 2)
    assert count(config, "SELECT COUNT(*) FROM events") == 2
    assert count(config, "SELECT COUNT(*) FROM dead_letters") == 2
    warnings = [m for lvl, m in notes if lvl == "warning"]
    assert len(warnings) == 2 and "message body is not JSON" in warnings[0]
    assert "unknown SES notification type 'Teleport'" in warnings[1]
    # the loop went on past the bad messages
    assert subscriber(config, "jane@example.com") == (SubscriberStatus.COMPLAINED, True)
    assert queue_depth(sqs, url) == (0, 0)


def test_sns_topic_to_queue_with_raw_delivery_on_and_off(backend_project, moto):
    sqs, url = make_queue(moto)
    config = configure(backend_project, moto, url)
    sns = boto3.client("sns", region_name="us-east-1", endpoint_url=moto)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    enveloped = sns.create_topic(Name="ses-events")["TopicArn"]
    raw = sns.create_topic(Name="ses-events-raw")["TopicArn"]
    sns.subscribe(TopicArn=enveloped, Protocol="sqs", Endpoint=arn)
    sns.subscribe(TopicArn=raw, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    sns.publish(TopicArn=enveloped, Message=json.dumps(notification("event-bounce", email="mary@example.com")))
    sns.publish(TopicArn=raw, Message=json.dumps(notification("identity-complaint")))
    summary, _ = pull(config)
    assert summary.by_type == {"bounce": 1, "complaint": 1}
    assert subscriber(config, "mary@example.com") == (SubscriberStatus.BOUNCED, True)
    assert subscriber(config, "richard@example.com") == (SubscriberStatus.COMPLAINED, True)


def test_ses_identity_notifications_reach_the_queue_through_sns(backend_project, moto):
    """moto's SES publishes its canned bounce (for recipient1@example.com) to the identity's
    bounce topic when mail goes to an address containing "bounce"."""
    sqs, url = make_queue(moto)
    config = configure(backend_project, moto, url)
    ses, sesv2 = (boto3.client(s, region_name="us-east-1", endpoint_url=moto) for s in ("ses", "sesv2"))
    sns = boto3.client("sns", region_name="us-east-1", endpoint_url=moto)
    topic = sns.create_topic(Name="ses-bounces")["TopicArn"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    ses.verify_domain_identity(Domain="example.com")
    ses.set_identity_notification_topic(Identity="example.com", NotificationType="Bounce", SnsTopic=topic)
    raw = b"From: news@example.com\r\nTo: bounce@simulator.amazonses.com\r\nSubject: hi\r\n\r\nhello\r\n"
    sesv2.send_email(FromEmailAddress="news@example.com",
                     Destination={"ToAddresses": ["bounce@simulator.amazonses.com"]},
                     Content={"Raw": {"Data": raw}})
    summary, _ = pull(config)
    assert summary.by_type["bounce"] >= 1
    assert subscriber(config, "recipient1@example.com") == (SubscriberStatus.BOUNCED, True)


def test_watch_keeps_polling_until_stopped(backend_project, moto):
    sqs, url = make_queue(moto)
    config = configure(backend_project, moto, url)
    polls = []

    def stop():
        polls.append(1)
        if len(polls) == 2:  # a message arrives while the loop is idle
            sqs.send_message(QueueUrl=url, MessageBody=raw_body(notification("event-open")))
        return len(polls) > 4

    summary, _ = pull(config, watch=True, stop=stop)
    assert len(polls) == 5 and summary.recorded == 1


def test_pull_without_a_queue_or_with_a_wrong_one_is_a_one_line_error(backend_project, moto, cli):
    result = cli("events", "pull")
    assert result.exit_code == 2 and "ses.queue_url is not set" in result.stderr
    configure(backend_project, moto, f"{moto}/123456789012/no-such-queue")
    result = cli("events", "pull")
    assert result.exit_code == 2
    assert "no such SQS queue" in result.stderr and "Traceback" not in result.output


def _run_pull(project, extra_env=None):
    env = dict(os.environ, **(extra_env or {}))
    return subprocess.run([sys.executable, "-m", "newsletter", "events", "pull", "--wait", "0"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=60)


def test_killed_between_commit_and_delete_loses_nothing_and_counts_nothing_twice(backend_project, moto):
    """NEWSLETTER_EVENTS_DIE_AFTER_COMMIT=N makes the process os._exit(86) right after the N-th
    queue message is committed, before DeleteMessage: the worst moment to die."""
    sqs, url = make_queue(moto, visibility=1)
    config = configure(backend_project, moto, url)
    sqs.send_message(QueueUrl=url, MessageBody=sns_body(notification("identity-bounce-permanent")))
    sqs.send_message(QueueUrl=url, MessageBody=raw_body(notification("event-complaint", email="mary@example.com")))
    sqs.send_message(QueueUrl=url, MessageBody=raw_body(notification("event-open")))

    first = _run_pull(backend_project, {DIE_AFTER_COMMIT_ENV: "2"})
    assert first.returncode == 86, first.stderr
    committed = count(config, "SELECT COUNT(*) FROM events")
    assert committed == 2
    assert sum(queue_depth(sqs, url)) == 3  # nothing was deleted

    time.sleep(1.5)  # the visibility timeout lets the received messages come back
    second = _run_pull(backend_project)
    assert second.returncode == 0, second.stderr
    assert "1 events recorded" in second.stderr and "2 duplicates" in second.stderr
    assert count(config, "SELECT COUNT(*) FROM events") == 3
    assert count(config, "SELECT COUNT(*) FROM events WHERE type = 'bounce'") == 1
    assert subscriber(config, "jane@example.com") == (SubscriberStatus.BOUNCED, True)
    assert subscriber(config, "mary@example.com") == (SubscriberStatus.COMPLAINED, True)
    assert queue_depth(sqs, url) == (0, 0)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "systemctl-stop"])
def test_watch_stops_cleanly_with_exit_130(backend_project, moto, signum):
    sqs, url = make_queue(moto)
    configure(backend_project, moto, url)
    sqs.send_message(QueueUrl=url, MessageBody=raw_body(notification("event-open")))
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "events", "pull", "--watch", "--wait", "1"],
                            cwd=backend_project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "stopped" in err
    assert "1 queue messages: 1 events recorded (1 open)" in err


def test_network_trouble_backs_off_in_watch_mode_and_stops_a_one_shot_pull(backend_project):
    from conftest import free_port

    from newsletter.errors import TransportError

    config = configure(backend_project, f"http://127.0.0.1:{free_port()}", "http://127.0.0.1:1/123456789012/q")
    with pytest.raises(TransportError, match="cannot read the SQS queue"):
        pull(config)
    polls = []
    summary, notes = pull(config, watch=True, stop=lambda: polls.append(1) or len(polls) > 1)
    assert notes[0][0] == "warning" and "retrying in 2 s" in notes[0][1]


def test_cli_pull_prints_effects_and_a_summary(backend_project, moto, cli):
    sqs, url = make_queue(moto)
    configure(backend_project, moto, url)
    sqs.send_message(QueueUrl=url, MessageBody=sns_body(notification("identity-bounce-permanent")))
    sqs.send_message(QueueUrl=url, MessageBody="garbage")
    result = cli("events", "pull", "--wait", "0")
    assert result.exit_code == 0, result.output
    assert "jane@example.com is now bounced" in result.stderr
    assert "warning: kept message" in result.stderr
    assert "2 queue messages: 1 events recorded (1 bounce), 0 duplicates, 0 ignored, 1 kept aside" in result.stderr
    listed = cli("events", "dead-letters", "--json")
    [kept] = json.loads(listed.stdout)
    assert kept["body"] == "garbage" and "not JSON" in kept["reason"]
