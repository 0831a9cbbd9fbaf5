"""`doctor` against a real moto server: a missing identity, and everything in place; its
database checks on SQLite and on PostgreSQL."""

from __future__ import annotations

import boto3
import pytest

from events_support import make_queue
from newsletter.config import load_config
from newsletter.doctor import Status, run_checks
from newsletter.store import open_store


def configure(project, moto, **ses):
    settings = {"endpoint_url": moto, "region": "us-east-1", **ses}
    text = 'transport = "ses"\n' + (project / "newsletter.toml").read_text(encoding="utf-8")
    text += "\n[ses]\n" + "".join(f'{k} = "{v}"\n' for k, v in settings.items())
    (project / "newsletter.toml").write_text(text, encoding="utf-8")
    config = load_config()
    with open_store(config) as store:  # creates and migrates the database
        store.create_list("daily")
        store.add_subscriber("reader@example.org", lists=["daily"])
    return config


def aws(moto, service):
    return boto3.client(service, region_name="us-east-1", endpoint_url=moto)


def everything_in_place(moto):
    _, queue_url = make_queue(moto)
    topic = aws(moto, "sns").create_topic(Name="ses-events")["TopicArn"]
    ses = aws(moto, "ses")
    ses.verify_domain_identity(Domain="example.com")
    ses.verify_domain_dkim(Domain="example.com")
    ses.create_configuration_set(ConfigurationSet={"Name": "newsletter"})
    ses.create_configuration_set_event_destination(
        ConfigurationSetName="newsletter",
        EventDestination={"Name": "to-sns", "Enabled": True,
                          "MatchingEventTypes": ["bounce", "complaint", "delivery", "open", "click"],
                          "SNSDestination": {"TopicARN": topic}})
    return queue_url


def by_name(checks):
    return {c.name: c for c in checks}


def test_everything_in_place(project, moto, cli, backend_project, backend):
    queue_url = everything_in_place(moto)
    config = configure(project, moto, queue_url=queue_url, configuration_set="newsletter")
    checks = by_name(run_checks(config))
    assert checks["configuration"].status is Status.OK
    assert checks["secret"].status is Status.OK
    assert checks["database"].status is Status.OK and "schema version" in checks["database"].detail
    assert "(latest), 1 subscribers" in checks["database"].detail
    assert ("PostgreSQL database" in checks["database"].detail) == (backend == "postgresql")
    assert checks["sender identity"].detail == "example.com verified for sending"
    assert checks["DKIM"].status is Status.OK
    # moto has no SES v2 GetAccount; its quota is the sandbox's 200/day at 1/s
    assert checks["account"].status is Status.WARN and "sandbox" in checks["account"].detail
    assert checks["sending quota"].detail == "max send rate 1/s; 200 of 200 left in the last 24 h"
    assert "'newsletter' → arn:aws:sns:" in checks["configuration set"].detail
    assert checks["SQS queue"].status is Status.OK and "0 messages waiting" in checks["SQS queue"].detail
    assert checks["events"].status is Status.OK and "no event received yet" in checks["events"].detail

    result = cli("doctor")
    assert result.exit_code == 0, result.stdout
    lines = result.stdout.splitlines()
    assert len(lines) == len(checks)
    assert lines[0].startswith("ok    configuration")
    assert any(l.startswith("warn  account") and "request production access" in l for l in lines)


def test_a_missing_identity_fails_with_a_hint(project, moto, cli):
    _, queue_url = make_queue(moto)
    configure(project, moto, queue_url=queue_url)
    result = cli("doctor")
    assert result.exit_code == 1
    line = next(l for l in result.stdout.splitlines() if "sender identity" in l)
    assert line.startswith("FAIL") and "neither example.com nor news@example.com is verified" in line
    assert "aws sesv2 create-email-identity --email-identity example.com" in line
    assert any(l.startswith("warn  configuration set") for l in result.stdout.splitlines())


@pytest.mark.parametrize("problem, name, expected", [
    ("no-config-set", "configuration set", "'ghost' does not exist"),
    ("no-destination", "configuration set", "no enabled SNS event destination"),
    ("no-queue", "SQS queue", "ses.queue_url is not set"),
    ("bad-queue", "SQS queue", "NonExistentQueue"),
])
def test_each_missing_piece_fails_its_check(project, moto, problem, name, expected):
    queue_url = everything_in_place(moto)
    ses = {"queue_url": queue_url, "configuration_set": "newsletter"}
    if problem == "no-config-set":
        ses["configuration_set"] = "ghost"
    if problem == "no-destination":
        aws(moto, "ses").create_configuration_set(ConfigurationSet={"Name": "bare"})
        ses["configuration_set"] = "bare"
    if problem == "no-queue":
        del ses["queue_url"]
    if problem == "bad-queue":
        ses["queue_url"] = f"{moto}/123456789012/missing"
    checks = by_name(run_checks(configure(project, moto, **ses)))
    assert checks[name].status is Status.FAIL
    assert expected in checks[name].detail


def test_local_problems(project, cli, monkeypatch):
    (project / ".newsletter-secret").unlink()
    result = cli("doctor")
    assert result.exit_code == 1
    out = result.stdout
    assert "FAIL  secret" in out and "run `newsletter init` or set NEWSLETTER_SECRET" in out
    assert "warn  database" in out and "does not exist yet" in out
    assert "skip  SES" in out
    monkeypatch.setenv("NEWSLETTER_SECRET", "s" * 32)
    assert cli("doctor").exit_code == 0


def test_an_unreachable_endpoint_is_a_failed_check_not_a_traceback(project, cli):
    from conftest import free_port

    (project / "newsletter.toml").write_text(
        'transport = "ses"\n' + (project / "newsletter.toml").read_text(encoding="utf-8")
        + f'\n[ses]\nendpoint_url = "http://127.0.0.1:{free_port()}"\nqueue_url = "http://127.0.0.1:1/q"\n',
        encoding="utf-8")
    result = cli("doctor")
    assert result.exit_code == 1
    assert "cannot reach SES" in result.stdout and "Traceback" not in result.output


def test_kept_aside_messages_are_reported(project, moto, backend_project):
    from newsletter.store.connection import connect

    queue_url = everything_in_place(moto)
    config = configure(project, moto, queue_url=queue_url, configuration_set="newsletter")
    conn = connect(config)
    try:
        conn.execute("INSERT INTO dead_letters (message_id, reason, body, received_at) "
                     "VALUES ('sqs-1', 'message body is not JSON', 'garbage', '2026-11-30T08:00:00Z')")
        conn.execute("INSERT INTO events (message_id, type, occurred_at, received_at, payload) "
                     "VALUES ('ses-1', 'delivery', '2026-11-30T08:00:00Z', '2026-11-30T08:00:05Z', '{}')")
    finally:
        conn.close()
    check = by_name(run_checks(config))["events"]
    assert check.status is Status.WARN and "1 queue messages kept aside" in check.detail
    assert "last event received 2026-11-30T08:00:05Z" in check.detail
    assert "newsletter events dead-letters" in check.hint


def test_the_database_checks_on_both_engines(project, backend_project, backend, cli):
    """Not created yet (SQLite) or not migrated (an empty PostgreSQL database); then current,
    counting the subscribers; the sandbox quota check counts the active ones; `stats` reads the
    same database."""
    from newsletter.doctor import _active_subscribers, check_database, check_events

    config = load_config()
    found = check_database(config)
    if backend == "sqlite":
        assert found.status is Status.WARN and "does not exist yet" in found.detail
        assert check_events(config).status is Status.SKIP and _active_subscribers(config) is None
        assert not (project / "subscribers").exists()  # doctor made no database
    with open_store(config) as store:
        store.create_list("daily")
        for address in ("a@example.org", "b@example.org", "c@example.org"):
            store.add_subscriber(address, lists=["daily"])
        store.unsubscribe(store.get_subscriber("c@example.org").id)
    found = check_database(config)
    assert found.status is Status.OK and "(latest), 3 subscribers" in found.detail, found.detail
    assert _active_subscribers(config) == 2  # the unsubscribed reader does not count
    assert check_events(config).detail.startswith("no event received yet")
    result = cli("stats")
    assert result.exit_code == 0 and "no editions sent yet" in result.stderr, result.output


def test_a_database_behind_the_program_says_how_to_migrate(project, backend, pg_empty_url, monkeypatch):
    from newsletter.doctor import check_database, check_events

    if backend == "postgresql":
        monkeypatch.setenv("NEWSLETTER_DATABASE_URL", pg_empty_url)  # reachable, no tables yet
        hint = "run `newsletter db migrate`"
    else:
        import sqlite3

        (project / "subscribers").mkdir()
        sqlite3.connect(project / "subscribers" / "subscribers.db").execute("PRAGMA user_version = 3").connection.close()
        hint = "the next command that opens it migrates it"
    config = load_config()
    found = check_database(config)
    assert found.status is Status.FAIL and "this program needs" in found.detail and hint in found.hint
    assert check_events(config).status is Status.SKIP
