"""Human and machine opens and clicks, on realistic SES event JSON recorded the way `events pull`
records it; and `stats` on an outbox send."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from events_support import database, insert_send, notification, record_notifications
from newsletter.config import load_config
from newsletter.feedback.engagement import Activity, judge, open_reason
from newsletter.feedback.stats import edition_stats
from newsletter.store import open_store

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
DELIVERED = datetime(2026, 11, 24, 7, 0, 13, tzinfo=timezone.utc)


def at(seconds: float) -> str:
    return (DELIVERED + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def event(kind: str, email: str, msg: str, *, when: float, agent: str = "", ip: str = "192.0.2.1",
          link: str | None = None) -> dict:
    doc = notification(f"event-{kind}", email=email, message_id=msg, timestamp=at(when), link=link)
    if kind in ("open", "click"):
        doc[kind]["userAgent"] = agent
        doc[kind]["ipAddress"] = ip
    return doc


LINKS = [f"https://example.org/story-{n}" for n in range(4)]


@pytest.fixture
def mixed(backend_project):
    config = load_config()
    emails = [f"r{n}@example.com" for n in range(10)]
    with open_store(config) as store:
        store.create_list("daily")
        for e in emails:
            store.add_subscriber(e, lists=["daily"])
    insert_send(config, "2026-11-24", [(e, f"m-{n}") for n, e in enumerate(emails)])
    docs = [event("delivery", e, f"m-{n}", when=0) for n, e in enumerate(emails)]
    m = lambda n: (emails[n], f"m-{n}")  # noqa: E731
    docs += [
        event("open", *m(0), when=3600, agent=IPHONE),                                   # reader
        event("open", *m(1), when=1, agent="Mozilla/5.0", ip="17.58.101.4"),             # Apple MPP
        event("open", *m(2), when=2, agent="Mozilla/5.0", ip="17.58.101.9"),             # MPP, then
        event("click", *m(2), when=5400, agent=IPHONE, ip="198.51.100.7", link=LINKS[0]),  # a reader's click
        event("open", *m(3), when=40, agent=GMAIL_PROXY, ip="66.249.84.1"),              # image proxy
        event("click", *m(4), when=2, agent=CHROME, link=LINKS[1]),                     # 2 s after delivery
        *[event("click", *m(5), when=600 + i * 0.2, agent=CHROME, link=LINKS[i]) for i in range(4)],  # every link
        event("click", *m(6), when=900, agent=CHROME, ip="40.107.22.13", link=LINKS[0]),  # Microsoft Defender
        event("click", *m(7), when=900, agent="Mimecast Web Security Service", link=LINKS[0]),  # scanner UA
        event("click", *m(8), when=7200, agent=CHROME, ip="203.0.113.50", link=LINKS[3]),  # reader, pixel blocked
    ]
    record_notifications(config, docs)
    return config


def test_stats_separate_readers_from_machines(mixed):
    with database(mixed) as conn:
        s = edition_stats(conn, "2026-11-24")
    assert s.delivered == 10
    assert (s.unique_opens, s.unique_clicks) == (9, 6)  # everything, as before
    assert (s.human_opens, s.machine_opens) == (3, 2)    # r0, r2, r8 / r1, r3
    assert (s.human_clicks, s.machine_clicks) == (2, 4)  # r2, r8 / r4, r5, r6, r7
    assert s.rates["human_open"] == pytest.approx(0.3) and s.rates["machine_open"] == pytest.approx(0.2)
    assert s.machine_reasons["open: Apple Mail Privacy Protection"] == 2
    assert s.machine_reasons["click: every link at once"] == 4
    assert s.machine_reasons["click: within 10 s of delivery"] == 1
    assert s.machine_reasons["click: security scanner (address range)"] == 1
    assert s.machine_reasons["click: security scanner (user agent)"] == 1


def test_stats_command_shows_both_and_json_carries_both(mixed, cli):
    data = json.loads(cli("stats", "2026-11-24", "--json").stdout)
    assert (data["human_opens"], data["machine_opens"], data["human_clicks"], data["machine_clicks"]) == (3, 2, 2, 4)
    assert data["rates"]["human_click"] == 0.2 and data["rates"]["machine_click"] == 0.4
    assert data["delivery_events"] is True
    table = cli("stats", "2026-11-24").stdout
    assert "3 (30.0%) +2 machine" in table and "2 (20.0%) +4 machine" in table
    assert "machine activity: " in table


def test_rules_one_by_one():
    assert open_reason(Activity("open", DELIVERED, "Mozilla/5.0", "203.0.113.1")) == "Apple Mail Privacy Protection"
    assert open_reason(Activity("open", DELIVERED, IPHONE, "17.1.2.3")) == "Apple Mail Privacy Protection"
    assert open_reason(Activity("open", DELIVERED, IPHONE, "203.0.113.1")) is None
    assert open_reason(Activity("open", DELIVERED, "Mozilla/5.0 (Windows NT 10.0) YahooMailProxy", "")) == "image proxy"
    later = DELIVERED + timedelta(minutes=30)
    # two links 2 s apart, in a send where only two links were ever clicked: "every link"
    two = [Activity("click", later, CHROME, "", LINKS[0]), Activity("click", later + timedelta(seconds=2), CHROME, "", LINKS[1])]
    assert judge([], two, delivered_at=DELIVERED, send_links=2).machine_click
    assert judge([], two, delivered_at=DELIVERED, send_links=4).human_click  # 2 of 4 links: a reader may
    slow = [Activity("click", later, CHROME, "", LINKS[0]), Activity("click", later + timedelta(seconds=40), CHROME, "", LINKS[1]),
            Activity("click", later + timedelta(seconds=90), CHROME, "", LINKS[2])]
    verdict = judge([], slow, delivered_at=DELIVERED, send_links=4)
    assert verdict.human_click and verdict.human_open and not verdict.machine_click
    assert judge([], [Activity("click", later, "python-requests/2.31", "", LINKS[0])],
                 delivered_at=DELIVERED).machine_click


def test_stats_on_an_outbox_send_says_there_are_no_delivery_events(backend_project, cli):
    project = backend_project
    (project / "editions").mkdir()
    (project / "editions" / "2026-11-24.md").write_text(
        '---\ntitle: "Daily"\ndate: 2026-11-24T08:00:00+00:00\n---\n\nLede.\n', encoding="utf-8")
    assert cli("lists", "create", "daily").exit_code == 0
    assert cli("subscribers", "add", "ada@example.com", "--list", "daily").exit_code == 0
    assert cli("send", "editions/2026-11-24.md", "--list", "daily", "--yes").exit_code == 0
    result = cli("stats", "2026-11-24")
    assert result.exit_code == 0
    assert "delivered 0" not in result.stdout and "0.0%" not in result.stdout
    assert "n/a (outbox)" in result.stdout
    assert "outbox, which produces no delivery" in result.stderr
    data = json.loads(cli("stats", "2026-11-24", "--json").stdout)
    assert data["delivery_events"] is False and data["rates"]["delivery"] is None



def test_an_event_whose_payload_is_not_json_does_not_fail_the_figures(mixed):
    """SQLite's json_valid() guard, and PostgreSQL's nl_jsonb() (NULL for text that is not
    JSON): a damaged row (a copy from elsewhere, a hand edit) leaves that reader's open
    unjudged, and the rest of the send's figures stand."""
    with database(mixed) as conn:
        conn.execute("UPDATE events SET payload = '{\"open\": {\"userAgent\": ' "
                     "WHERE type = 'open' AND email = 'r0@example.com'")
        s = edition_stats(conn, "2026-11-24")
    assert (s.unique_opens, s.unique_clicks) == (9, 6)  # the event still counts as an open
    assert (s.human_opens, s.machine_opens) == (2, 2)   # r0's is no longer judged human
    assert (s.human_clicks, s.machine_clicks) == (2, 4)


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite has no parallel query
def test_stats_on_postgresql_survive_a_parallel_plan(mixed, backend):
    """A big send makes PostgreSQL plan the engagement query in parallel; nl_jsonb() (an
    exception block, so a subtransaction) must keep it out of parallel workers. Costs of zero
    make the planner choose a parallel plan on this small send too."""
    with database(mixed) as conn:
        for setting in ("parallel_setup_cost", "parallel_tuple_cost", "min_parallel_table_scan_size",
                        "min_parallel_index_scan_size"):
            conn.execute(f"SET {setting} = 0")
        conn.execute("SET max_parallel_workers_per_gather = 2")
        conn.execute("SET enable_indexscan = off")
        conn.execute("SET enable_bitmapscan = off")
        s = edition_stats(conn, "2026-11-24")
    assert (s.human_opens, s.machine_opens, s.human_clicks, s.machine_clicks) == (3, 2, 2, 4)
