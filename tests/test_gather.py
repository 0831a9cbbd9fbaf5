"""`newsletter gather` against real feeds served on 127.0.0.1: RSS, Atom, RDF, a broken feed,
one that answers 304, candidates, `--add`."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from newsletter.config import load_config
from newsletter.edition.source import load_edition
from newsletter.sources.gather import clean_summary, parse_feed
from tests.local_http import LocalSite, Route, atom, rdf, rss, utc

START = utc(2026, 11, 20, 8, 0)
EDITION = """---
title: "Daily"
date: 2026-11-24T08:00:00+00:00
---

Lede.

---

1.  [Already here]({link})

    Summary.
"""


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def site():
    with LocalSite() as s:
        s.routes.update({
            "/rss": Route(rss(s.base, "rss", 5, START), content_type="application/rss+xml", etag='"v1"'),
            "/atom": Route(atom(s.base, "atom", 5, START), content_type="application/atom+xml",
                           last_modified="Fri, 20 Nov 2026 09:00:00 GMT"),
            "/rdf": Route(rdf(s.base, "rdf", 5, START), content_type="application/rdf+xml"),
            "/broken": Route(b"<html><body>this is not a feed</body>", content_type="text/html"),
            "/gone": Route(b"no", status=404, content_type="text/plain"),
        })
        yield s


@pytest.fixture
def desk(project, site):
    feeds = [site.url(p) for p in ("/rss", "/atom", "/rdf", "/broken", "/gone")]
    with open(project / "newsletter.toml", "a", encoding="utf-8") as fh:
        fh.write("\n[sources]\nfeeds = [" + ", ".join(f'"{u}"' for u in feeds) + "]\n")
    (project / "editions").mkdir()
    edition = project / "editions" / "2026-11-24.md"
    # the rss feed's first story is in an edition already (other tracking parameters, http → https)
    edition.write_text(EDITION.format(link=site.url("/rss/story-1?id=1&utm_campaign=x")), encoding="utf-8")
    return edition


def test_three_formats_broken_feeds_and_candidates(cli, desk, site, backend_project):
    result = cli("gather", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    warnings = [l for l in result.stderr.splitlines() if l.startswith("warning:")]
    assert len(warnings) == 2
    assert any("/broken" in w and "not a" in w for w in warnings)
    assert any("/gone" in w and "404" in w for w in warnings)
    titles = [c["title"] for c in data["candidates"]]
    assert len(titles) == 14 and "rss story 1" not in titles  # already in an edition
    assert {"rss story 5", "atom story 5", "rdf story 5"} <= set(titles)
    assert [c["number"] for c in data["candidates"]] == list(range(1, 15))
    published = [c["published"] for c in data["candidates"]]
    assert published == sorted(published, reverse=True)  # newest first
    first = data["candidates"][0]
    assert "utm_source" not in first["url"] and first["domain"] == "127.0.0.1"
    assert first["first_sentence"] == "The atom story number 5."  # plain text, tags gone


def test_feeds_are_fetched_at_the_same_time(cli, desk, site):
    for path in ("/rss", "/atom", "/rdf"):
        site.routes[path].delay = 0.3  # each answer takes a while: they overlap only if concurrent
    assert cli("gather", "--json").exit_code == 0
    assert site.max_in_flight >= 3


def test_conditional_get_and_304_keeps_the_candidates(cli, desk, site, backend_project):
    first = json.loads(cli("gather", "--json").stdout)
    site.requests.clear()
    second = json.loads(cli("gather", "--json").stdout)
    headers = {path: h for path, h in site.requests}
    assert headers["/rss"]["if-none-match"] == '"v1"'
    assert headers["/atom"]["if-modified-since"] == "Fri, 20 Nov 2026 09:00:00 GMT"
    statuses = {f["url"].rsplit("/", 1)[1]: f["status"] for f in second["feeds"]}
    assert statuses == {"rss": "304", "atom": "304", "rdf": "200", "broken": "error", "gone": "error"}
    assert [c["url"] for c in second["candidates"]] == [c["url"] for c in first["candidates"]]
    assert all("newsletter/" in h["user-agent"] and "Test Daily" in h["user-agent"] for h in headers.values())


def test_add_appends_candidates_then_they_are_no_longer_listed(cli, desk, site, backend_project):
    listed = cli("gather")
    assert listed.exit_code == 0
    assert listed.stdout.splitlines()[0].startswith(" 1. ")
    data = json.loads(cli("gather", "--json").stdout)
    want = [data["candidates"][2], data["candidates"][0]]
    result = cli("gather", "--add", "3", "1", str(desk))
    assert result.exit_code == 0, result.output
    items = load_edition(desk, config=load_config()).items
    assert [i.title for i in items[1:]] == [c["title"] for c in want]
    summary = items[1].summary
    assert "<script>" not in summary and "alert" not in summary
    assert f"[here]({site.base}/more)" in summary and "**" in summary
    again = json.loads(cli("gather", "--json").stdout)
    assert {c["url"] for c in want}.isdisjoint(c["url"] for c in again["candidates"])
    assert len(again["candidates"]) == 12


def test_since_and_bad_arguments(cli, desk, site, backend_project):
    data = json.loads(cli("gather", "--json", "--since", "2026-11-20T08:25:00+00:00").stdout)
    assert {c["title"].split()[-1] for c in data["candidates"]} == {"4", "5"}
    bad = cli("gather", "--add", "x", str(desk))
    assert bad.exit_code == 2 and "not a candidate number" in bad.stderr
    unknown = cli("gather", "--add", "99", str(desk))
    assert unknown.exit_code == 2 and "no candidate 99" in unknown.stderr
    assert cli("gather", "--since", "yesterday").exit_code == 2


def test_a_send_moves_since_and_its_links_are_no_longer_candidates(cli, desk, site, backend_project):
    """After a send (the outbox, through the ledger of this backend), `gather` starts from its
    first message and leaves out every link the send carried, even with an earlier --since."""
    sent = desk.parent / "2026-11-25.md"
    sent.write_text(EDITION.replace("2026-11-24", "2026-11-25").format(
        link=site.url("/atom/story-5?id=5")), encoding="utf-8")
    assert cli("lists", "create", "daily").exit_code == 0
    assert cli("subscribers", "add", "ada@example.com", "--list", "daily").exit_code == 0
    # the edition file is renamed after the send: what counts is what the send carried
    started = datetime.now(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert cli("send", str(sent), "--list", "daily", "--yes").exit_code == 0
    sent.rename(desk.parent / "gone.txt")
    before = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    data = json.loads(cli("gather", "--json").stdout)
    assert started <= data["since"] <= before  # the send's first message, not the feeds'
    assert data["candidates"] == []  # every entry is older than the send
    earlier = json.loads(cli("gather", "--json", "--since", "2026-11-20T08:25:00+00:00").stdout)
    assert {c["title"] for c in earlier["candidates"]} == {"rss story 4", "rss story 5", "atom story 4",
                                                           "rdf story 4", "rdf story 5"}


def test_summary_cleaning_keeps_only_http_links():
    md = clean_summary('<p>See <a href="javascript:alert(1)">this</a> and <a href="https://ok.example/">that</a>'
                       '<img src="x.png"> <style>p{}</style></p><p>Two *stars*.</p>')
    assert "javascript" not in md and "[that](https://ok.example/)" in md
    assert "x.png" not in md and "p{}" not in md
    assert md.endswith("Two \\*stars\\*.")


def test_a_feed_without_entries_but_valid_is_not_an_error():
    title, entries = parse_feed(b'<?xml version="1.0"?><rss version="2.0"><channel><title>Empty</title>'
                                b"</channel></rss>", "https://x.example/rss")
    assert (title, entries) == ("Empty", [])
    with pytest.raises(ValueError):
        parse_feed(b"\x00\x01 garbage", "https://x.example/rss")


def test_sources_configuration_errors(project, cli):
    assert cli("gather").exit_code == 2  # no feeds configured
    assert "no feeds: add [sources] feeds" in cli("gather").stderr
    toml = (project / "newsletter.toml").read_text(encoding="utf-8")
    (project / "newsletter.toml").write_text(toml + '\n[sources]\nfeeds = ["ftp://example.com/rss"]\n', encoding="utf-8")
    bad = cli("gather")
    assert bad.exit_code == 2 and "sources.feeds: 'ftp://example.com/rss' is not an http(s) URL" in bad.stderr
    (project / "newsletter.toml").write_text(toml + '\n[sources]\nfeeds = "https://example.com/rss"\n', encoding="utf-8")
    assert "sources.feeds must be an array of strings" in cli("gather").stderr


def test_gbk_feed_and_relative_links_in_summaries():
    body = ('<?xml version="1.0" encoding="gbk"?><rss version="2.0"><channel><title>中文频道</title>'
            "<item><title>国产芯片量产</title><link>/news/1?utm_source=rss</link>"
            "<description>&lt;p&gt;详见&lt;a href=&quot;/news/1/more&quot;&gt;全文&lt;/a&gt;。&lt;/p&gt;</description>"
            "<pubDate>Tue, 24 Nov 2026 08:00:00 +0800</pubDate></item></channel></rss>").encode("gbk")
    title, entries = parse_feed(body, "https://news.example.cn/rss.xml")
    assert title == "中文频道"
    [entry] = entries
    assert entry.title == "国产芯片量产" and entry.url == "https://news.example.cn/news/1"
    assert entry.summary == "详见[全文](https://news.example.cn/news/1/more)。"
    assert entry.published.isoformat() == "2026-11-24T00:00:00+00:00"


# -- the feed state in the database, on both engines (newsletter.store.feeds) -------------------
def _state(db_url):
    from newsletter.store.connection import connect

    return connect(db_url)


def test_feed_state_is_kept_and_replaced_the_same_on_both_engines(db_url):
    from newsletter.store import feeds as state

    conn = _state(db_url)
    try:
        entries = [state.StoredEntry(f"https://a.example/{i}", f"a.example/{i}", f"A {i}", "", None)
                   for i in range(3)]
        state.remember(conn, [
            state.PolledFeed("https://a.example/rss", "200", "Feed A", '"e1"', None, None, entries),
            state.PolledFeed("https://b.example/rss", "error", error="the server answered 500"),
        ], "2026-11-20T08:00:00Z")
        assert state.validators(conn) == {"https://a.example/rss": ('"e1"', None),
                                          "https://b.example/rss": (None, None)}
        # a later failure keeps the validators and the entries; a 304 keeps the title
        state.remember(conn, [state.PolledFeed("https://a.example/rss", "error", error="timeout")],
                       "2026-11-20T09:00:00Z")
        assert state.validators(conn)["https://a.example/rss"] == ('"e1"', None)
        assert [e.url for e in state.stored_entries(conn, "https://a.example/rss")] == [e.url for e in entries]
        state.remember(conn, [state.PolledFeed("https://a.example/rss", "304", "", '"e1"', "Fri")],
                       "2026-11-20T10:00:00Z")
        row = conn.execute("SELECT title, status, last_modified FROM feeds WHERE url = ?",
                           ("https://a.example/rss",)).fetchone()
        assert tuple(row) == ("Feed A", "304", "Fri")
        # a 200 replaces what the feed listed (a repeated entry is kept once)
        fresh = [state.StoredEntry("https://a.example/9", "a.example/9", "A 9", "**sum**", "2026-11-20T07:00:00Z")] * 2
        state.remember(conn, [state.PolledFeed("https://a.example/rss", "200", "Feed A2", '"e2"', None, None, fresh)],
                       "2026-11-20T11:00:00Z")
        assert state.stored_entries(conn, "https://a.example/rss") == fresh[:1]
        assert state.validators(conn)["https://a.example/rss"] == ('"e2"', None)
    finally:
        conn.close()


def test_the_numbered_list_is_replaced_whole_even_by_concurrent_runs(db_url):
    """Two `gather` runs at once (here: threads, each with its own connection) each replace the
    list in one transaction: no run fails on the other's numbers, and the list read afterwards
    is one run's, whole."""
    import threading

    from newsletter.store import feeds as state

    def listing(tag: str, count: int):
        return [state.ListedCandidate(n, "https://f.example/rss", f"https://f.example/{tag}/{n}",
                                      f"{tag} {n}", "", None) for n in range(1, count + 1)]

    failures: list[BaseException] = []

    def run(tag: str, count: int) -> None:
        conn = _state(db_url)
        try:
            for _ in range(15):
                state.keep_candidates(conn, listing(tag, count), "2026-11-20T08:00:00Z")
        except BaseException as err:  # reported below
            failures.append(err)
        finally:
            conn.close()

    _state(db_url).close()  # migrated once, before the threads start
    threads = [threading.Thread(target=run, args=(tag, count)) for tag, count in (("x", 7), ("y", 4))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    conn = _state(db_url)
    try:
        found = state.listed_candidates(conn)
        assert list(found) in (list(range(1, 8)), list(range(1, 5)))
        assert len({c.url.split("/")[3] for c in found.values()}) == 1  # one run's list
        state.keep_candidates(conn, [], "2026-11-20T09:00:00Z")
        assert state.listed_candidates(conn) == {}
    finally:
        conn.close()


def test_the_last_send_is_the_first_message_of_the_latest_edition(db_url):
    """``last_sent_at`` reads the ledger's sends: per edition its first message (a later send of
    the same edition to another list does not move it); a send without an edition counts by its
    slug; nothing sent yet is None."""
    from newsletter.store import feeds as state

    conn = _state(db_url)
    try:
        assert state.last_sent_at(conn) is None
        conn.execute("INSERT INTO editions (id, slug, source_path, date_utc, created_at) "
                     "VALUES (1, 'one', 'e/one.md', '2026-11-01T08:00:00Z', '2026-11-01T07:00:00Z')")
        sends = [  # (edition, slug, seq, created_at, first_sent_at)
            (1, "one", 1, "2026-11-01T07:00:00Z", "2026-11-01T08:00:00Z"),
            (1, "one", 2, "2026-11-25T07:00:00Z", "2026-11-25T08:00:00Z"),  # later joiners
            (None, "by-hand", 1, "2026-11-10T07:00:00Z", None),
        ]
        for edition_id, slug, seq, created, first in sends:
            conn.execute("INSERT INTO sends (edition_id, seq, slug, list_name, subject, transport, "
                         "created_at, first_sent_at) VALUES (?, ?, ?, 'daily', 's', 'outbox', ?, ?)",
                         (edition_id, seq, slug, created, first))
        assert state.last_sent_at(conn) == "2026-11-10T07:00:00Z"
    finally:
        conn.close()
