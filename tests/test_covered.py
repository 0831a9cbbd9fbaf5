""""Already covered" warnings in `check` and the preview, from editions really sent (outbox), with
the project's database on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

from newsletter.config import load_config
from newsletter.edition.covered import SentItem, covered_findings, same_title, sent_items
from newsletter.edition.source import load_edition
from newsletter.store.connection import connect

SENT = """---
title: "Daily"
date: {day}T08:00:00+00:00
number: 212
---

Lede.

---

1.  [Open models close the gap with closed ones](https://news.example.com/open-models?utm_source=rss)

    Summary.

2.  [Chip export rules tighten again](https://chips.example.org/rules)

    Summary.
"""

TODAY = """---
title: "Daily"
date: {day}T08:00:00+00:00
---

Lede.

---

1.  [Something new](https://new.example.com/a)

    Summary.

2.  [A different headline](http://www.news.example.com/open-models/?fbclid=xyz#comments)

    Summary.

3.  [Something else](https://else.example.com/)

    Summary.

4.  [Chip export rules tighten again!](https://other-site.example.net/copy)

    Summary.
"""


def _send(cli, edition):
    assert cli("lists", "create", "daily").exit_code == 0
    assert cli("subscribers", "add", "ada@example.com", "--list", "daily").exit_code == 0
    result = cli("send", str(edition), "--list", "daily", "--yes")
    assert result.exit_code == 0, result.output


def test_check_and_preview_warn_about_items_sent_in_the_last_30_days(project, cli, backend_project):
    (project / "editions").mkdir()
    sent_day = (datetime.now(timezone.utc) - timedelta(days=1)).date()
    sent = project / "editions" / f"{sent_day}.md"
    sent.write_text(SENT.format(day=sent_day), encoding="utf-8")
    _send(cli, sent)
    today = project / "editions" / f"{sent_day + timedelta(days=1)}.md"
    today.write_text(TODAY.format(day=sent_day + timedelta(days=1)), encoding="utf-8")
    result = cli("check", str(today), "--json")
    found = [f for f in json.loads(result.stdout)["findings"] if f["code"] == "already-covered"]
    assert [f["message"].split(" (same")[0] for f in found] == [
        f"item 2 ran on {sent_day} (#212)", f"item 4 ran on {sent_day} (#212)"]
    assert found[0]["line"] == 14 and "same link" in found[0]["message"]
    assert "same title" in found[1]["message"]
    # the sent edition itself is not "already covered" by its own send
    own = json.loads(cli("check", str(sent), "--json").stdout)["findings"]
    assert not [f for f in own if f["code"] == "already-covered"]
    # the preview page (real HTTP on 127.0.0.1) shows the same warning
    import urllib.request

    from newsletter.render.preview import Preview, PreviewServer

    server = PreviewServer(Preview(today, load_config()))
    server.start(watch=False)
    try:
        with urllib.request.urlopen(server.url, timeout=10) as response:
            page = response.read().decode("utf-8")
    finally:
        server.stop()
    assert f"item 2 ran on {sent_day} (#212)" in page and f"item 4 ran on {sent_day} (#212)" in page


def test_the_preview_page_lists_the_warning(project, cli, backend_project):
    from newsletter.render.build import build_edition

    (project / "editions").mkdir()
    sent_day = (datetime.now(timezone.utc) - timedelta(days=2)).date()
    sent = project / "editions" / f"{sent_day}.md"
    sent.write_text(SENT.format(day=sent_day), encoding="utf-8")
    _send(cli, sent)
    today = project / "editions" / "next.md"
    today.write_text(TODAY.format(day=sent_day + timedelta(days=2)), encoding="utf-8")
    _, _, findings = build_edition(today, load_config())
    assert sum(f.code == "already-covered" for f in findings) == 2


def test_sends_older_than_30_days_do_not_count(project, cli, backend_project):
    (project / "editions").mkdir()
    sent = project / "editions" / "2020-01-01.md"
    sent.write_text(SENT.format(day="2020-01-01"), encoding="utf-8")
    _send(cli, sent)
    config = load_config()
    conn = connect(config)
    try:
        conn.execute("UPDATE sends SET created_at = '2020-01-01T08:00:00Z', first_sent_at = '2020-01-01T08:00:00Z'")
        recent = sent_items(conn, datetime.now(timezone.utc) - timedelta(days=30), config=config)
        assert recent == []
        everything = sent_items(conn, datetime(2019, 1, 1, tzinfo=timezone.utc), config=config)
        assert [s.title for s in everything][0].startswith("Open models")
    finally:
        conn.close()


def test_near_identical_titles():
    assert same_title("Open models close the gap", "open models close the gap!")
    assert same_title("ＯｐｅｎＡＩ 发布新模型 GPT-6", "OpenAI发布新模型GPT-6")
    assert not same_title("OpenAI releases GPT-6", "Google releases Gemini 4")
    assert not same_title("AI", "A1")  # short: only exact matches
    edition = load_edition_text()
    sent = [SentItem("https://x.example/1", "Something else entirely", date(2025, 10, 13), None, "other")]
    assert [f.message for f in covered_findings(edition, sent)] == ["item 3 ran on 2025-10-13 (same title: 'Something else entirely')"]


def load_edition_text():
    from pathlib import Path

    from newsletter.config import Config
    from newsletter.edition.parse import parse_edition

    text = TODAY.format(day="2025-10-14").replace("Something else", "Something else, entirely")
    return parse_edition(text, path=Path("x.md"), config=Config(root=Path(".")))


def test_check_never_creates_a_database_and_ignores_one_it_cannot_read(project, cli, monkeypatch):
    from newsletter.edition.covered import covered_check

    (project / "editions").mkdir()
    today = project / "editions" / "today.md"
    today.write_text(TODAY.format(day="2026-11-24"), encoding="utf-8")
    config = load_config()
    edition = load_edition(today, config=config)
    assert covered_check(edition, config) == []
    assert not (project / "subscribers").exists()  # no SQLite file was made
    from conftest import free_port

    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"postgresql://nobody@127.0.0.1:{free_port()}/gone")
    assert covered_check(edition, load_config()) == []  # unreachable: no warning, no traceback
    result = cli("check", str(today))
    assert "Traceback" not in result.output
