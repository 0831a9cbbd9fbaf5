"""`stats`: per-edition figures from the ledger and the events recorded against it."""

from __future__ import annotations

import json

import pytest

from events_support import database, insert_send, notification, record_notifications
from newsletter.config import load_config
from newsletter.feedback.stats import all_stats, edition_stats
from newsletter.store import open_store

LINK_A = "https://example.org/story-a"
LINK_B = "https://example.org/story-b"


@pytest.fixture
def sent(backend_project):
    """Two editions: a bad one (3% bounces, 1% complaints) and a clean one."""
    config = load_config()
    emails = [f"reader{n}@example.com" for n in range(200)]
    with open_store(config) as store:
        store.create_list("daily")
        for email in emails:
            store.add_subscriber(email, lists=["daily"])
    insert_send(config, "2026-11-23", [(e, f"a-{n}") for n, e in enumerate(emails[:100])],
                created_at="2026-11-23T07:00:00Z")
    insert_send(config, "2026-11-24", [(e, f"b-{n}") for n, e in enumerate(emails)],
                created_at="2026-11-24T07:00:00Z")

    def ev(name, n, prefix="a", **kw):
        return notification(name, email=emails[n], message_id=f"{prefix}-{n}", **kw)

    docs = [ev("event-bounce", 0), ev("identity-bounce-permanent", 1), ev("identity-bounce-transient", 2)]
    docs += [ev("event-delivery", n) for n in range(3, 100)]
    docs += [ev("event-complaint", 3)]
    docs += [ev("event-open", n) for n in range(3, 12)]
    docs += [ev("event-open", 4, timestamp="2026-11-23T09:00:00.000Z")]  # a second open, same reader
    docs += [ev("event-click", 5, link=LINK_A), ev("event-click", 5, link=LINK_A, timestamp="2026-11-23T10:00:00Z"),
             ev("event-click", 6, link=LINK_A), ev("event-click", 12, link=LINK_B)]  # 12: a click, no open
    docs += [ev("identity-bounce-permanent", 0, prefix="b")]
    docs += [ev("identity-delivery", n, prefix="b") for n in range(1, 200)]
    record_notifications(config, docs)
    return config


def test_edition_figures(sent):
    with database(sent) as conn:
        s = edition_stats(conn, "2026-11-23")
    assert (s.recipients, s.sent, s.delivered) == (100, 100, 97)
    assert (s.hard_bounces, s.soft_bounces, s.bounces, s.complaints) == (2, 1, 3, 1)
    assert (s.unique_opens, s.unique_clicks) == (10, 3)  # 3..11 opened, 12 only clicked
    assert s.rates["bounce"] == pytest.approx(0.03)
    assert s.rates["complaint"] == pytest.approx(0.01)
    assert s.rates["open"] == pytest.approx(10 / 97)
    assert [(l.url, l.unique_clicks, l.clicks) for l in s.top_links] == [(LINK_A, 2, 3), (LINK_B, 1, 1)]
    assert len(s.warnings) == 2
    assert "bounce rate 3.00% ≥ 2%" in s.warnings[0]
    assert "complaint rate 1.00% far above 0.05%" in s.warnings[1]


def test_readers_who_left_mid_send_are_counted_as_skipped(sent):
    with database(sent) as conn:
        send_id = conn.execute("SELECT id FROM sends WHERE slug = '2026-11-24'").fetchone()[0]
        conn.execute("UPDATE deliveries SET state = 'skipped' WHERE send_id = ? AND email = 'reader199@example.com'",
                     (send_id,))
        s = edition_stats(conn, "2026-11-24")
    assert (s.recipients, s.sent, s.skipped, s.failed, s.pending) == (200, 199, 1, 0, 0)
    assert s.as_dict()["skipped"] == 1


def test_a_clean_edition_has_no_warnings_and_editions_come_newest_first(sent):
    with database(sent) as conn:
        found = all_stats(conn)
    assert [s.slug for s in found] == ["2026-11-24", "2026-11-23"]
    clean = found[0]
    assert (clean.sent, clean.delivered, clean.hard_bounces, clean.complaints) == (200, 199, 1, 0)
    assert clean.rates["bounce"] == pytest.approx(0.005)
    assert clean.warnings == []


def test_stats_json(sent, cli):
    result = cli("stats", "2026-11-23", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["slug"] == "2026-11-23"
    assert (data["sent"], data["delivered"], data["bounces"], data["complaints"]) == (100, 97, 3, 1)
    assert data["rates"]["bounce"] == 0.03
    assert data["top_links"][0] == {"url": LINK_A, "clicks": 3, "unique_clicks": 2}
    assert "warning: 2026-11-23: bounce rate" in result.stderr
    every = json.loads(cli("stats", "--json").stdout)
    assert [d["slug"] for d in every] == ["2026-11-24", "2026-11-23"]


def test_stats_table_is_plain_when_not_a_terminal(sent, cli):
    result = cli("stats")
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["edition", "recipients", "sent"]
    assert lines[1].split()[:3] == ["2026-11-24", "200", "200"]
    assert "2+1 (3.0%)" in lines[2] and "1 (1.0%)" in lines[2]
    detail = cli("stats", "2026-11-23").stdout
    assert LINK_A in detail and "2 readers" in detail


def test_unknown_edition_is_a_one_line_error(backend_project, cli):
    result = cli("stats", "1999-01-01")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: no send for edition '1999-01-01' (see `newsletter sends ls`)"
    assert cli("stats").stderr.strip() == "no editions sent yet"


def test_a_database_that_refuses_the_reads_is_a_one_line_error(sent, cli):
    """A driver error while reading (here: the events table gone, as in a half-restored
    backup) is one line naming the database, exit 2, on either engine."""
    with database(sent) as conn:
        conn.execute("ALTER TABLE events RENAME TO events_elsewhere")
    for args in (("stats",), ("stats", "2026-11-23", "--json")):
        result = cli(*args)
        assert result.exit_code == 2, result.output
        [line] = result.stderr.splitlines()
        assert line.startswith("error: ") and "events" in line and "Traceback" not in result.output
