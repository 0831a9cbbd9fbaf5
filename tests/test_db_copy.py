"""`newsletter db copy SRC DST` between real SQLite files and a real PostgreSQL server: a project
made through the real code paths (readers, a send to the outbox, SES events, a dead letter,
rate-limit hits, gathered feeds) goes SQLite → PostgreSQL → PostgreSQL → SQLite → SQLite with
the same rows in every table, the same export and id counters that never hand an id out twice;
a non-empty target, a table or column the target lacks and a source with an import still
running are refused in one line; an interrupted, killed, failing or miscounted copy leaves the
target empty."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from conftest import SAMPLES
from events_support import notification, record_notifications
from tests.local_http import LocalSite, Route, rss, utc
from newsletter.config import load_config
from newsletter.feedback.record import open_recorder
from newsletter.store import open_rate_limiter

from newsletter.errors import StoreError
from newsletter.audience.importer import export_subscribers
from newsletter.store import open_store
from newsletter.store.consent import record_consent
from newsletter.store.copy import copy_database
from newsletter.audience.formats import Consent


def _fill(url: str, rows: int = 300) -> None:
    with open_store(url) as store:
        store.create_list("news", description="Daily", public=True)
        store.create_list("weekly", double_opt_in=True)
        store.import_rows(((f"bulk{i}@example.com", i + 2, f"Bulk{i}@Example.com", f"B {i}",
                            json.dumps({"n": str(i)}), "active") for i in range(rows)),
                          list_name="news")
        store.add_subscriber("Uni@Bücher.de", name="Ü", lists=["news", "weekly"],
                             attributes={"city": "Köln"})
        store.subscribe("pending@example.com", list_ids=[store.get_list("weekly").id])
        store.unsubscribe(store.get_subscriber("bulk1@example.com").id)
        store.set_status("bulk2@example.com", "bounced", reason="550")
        store.erase("bulk3@example.com")
        store.suppress("never@example.com", "manual")
        record_consent(store, [Consent("bulk5@example.com", 7, optin_at="2026-01-02T03:04:05Z",
                                       optin_ip="192.0.2.1", evidence={"OPTIN_TIME": "2026-01-02"}),
                               Consent("Uni@Bücher.de", 8, confirmed_at="2026-01-03T00:00:00Z")],
                       "mailchimp export (members.zip)")


def _state(url: str) -> dict:
    with open_store(url) as store:
        out = io.StringIO()
        export_subscribers(store, out)
        return {
            "export": out.getvalue(),
            "lists": [(l.id, l.name, l.description, l.optin.value, l.public, l.created_at)
                      for l in store.lists()],
            "subscribers": [(s.id, s.email, s.name, s.attributes, s.status.value, s.source,
                             s.created_at, s.confirmed_at, s.unsubscribed_at, s.uid, s.legacy_tokens,
                             store.export_subscriber(s.id)["consent"],
                             [(m.list_id, m.status.value, m.created_at, m.confirmed_at,
                               m.unsubscribed_at) for m in store.memberships(s.id)])
                            for s in store.iter_subscribers()],
            "suppressed": [store.is_suppressed(e) for e in
                           ("bulk2@example.com", "bulk3@example.com", "never@example.com",
                            "bulk4@example.com")],
            "counts": store.list_counts(),
        }


def test_round_trip_sqlite_postgresql_sqlite_keeps_everything(tmp_path, pg_url, project, cli):
    first, last = str(tmp_path / "first.db"), str(tmp_path / "last.db")
    _fill(first)
    before = _state(first)
    result = cli("db", "copy", first, pg_url)
    assert result.exit_code == 0, result.stderr
    assert "copied 2 lists, 301 subscribers" in result.stdout and "counts verified" in result.stdout
    assert _state(pg_url) == before
    result = cli("db", "copy", pg_url, last)
    assert result.exit_code == 0, result.stderr
    assert _state(last) == before
    assert sum(1 for s in before["subscribers"] if s[11]) == 2  # the consent records came along
    assert len({s[9] for s in before["subscribers"]}) == len(before["subscribers"])  # uids kept
    # ids go on where they stopped, on both engines (no id is handed out twice)
    for url in (pg_url, last):
        with open_store(url) as store:
            new = store.add_subscriber("after@example.com", lists=["news"]).subscriber
            assert new.id == max(s[0] for s in before["subscribers"]) + 1
            assert store.create_list("third").id == 3


def test_a_non_empty_target_is_refused_and_left_alone(tmp_path, pg_url, project, cli):
    source = str(tmp_path / "s.db")
    _fill(source, rows=10)
    with open_store(pg_url) as store:
        store.create_list("already-here")
    result = cli("db", "copy", source, pg_url)
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "is not empty (1 lists)" in result.stderr
    with open_store(pg_url) as store:
        assert [l.name for l in store.lists()] == ["already-here"]
    assert cli("db", "copy", source, source).exit_code == 2  # the same database


@pytest.mark.parametrize("direction", ["to-postgresql", "to-sqlite"])
def test_an_interrupted_copy_leaves_the_target_empty(tmp_path, pg_url, direction):
    sqlite_url = str(tmp_path / "s.db")
    source, target = (sqlite_url, pg_url) if direction == "to-postgresql" else (pg_url, sqlite_url)
    _fill(source, rows=12_000)

    def interrupt(table, done):
        if table == "memberships" and done >= 5000:  # lists and subscribers are in already
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        copy_database(source, target, on_progress=interrupt)
    with open_store(target) as store:
        assert store.lists() == [] and store.count_subscribers() == 0
    assert copy_database(source, target).counts["subscribers"] == 12_001  # and it can be redone


CHILD = """
import sys
from newsletter.store.copy import copy_database
def progress(table, done):
    print(table, done, flush=True)
copy_database(sys.argv[1], sys.argv[2], on_progress=progress)
"""


def _kill_copy_at(source: str, target: str, table: str) -> None:
    """Run the copy in a child and SIGKILL it once it reports copying ``table``."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, source, target],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith(table):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_killed_copy_leaves_the_target_empty(tmp_path, pg_url):
    source = str(tmp_path / "s.db")
    _fill(source, rows=60_000)
    _kill_copy_at(source, pg_url, "subscribers")
    with open_store(pg_url) as store:
        assert store.lists() == [] and store.count_subscribers() == 0
    assert copy_database(source, pg_url).counts["subscribers"] == 60_001


def test_counts_that_do_not_match_roll_the_copy_back(tmp_path, pg_url):
    source = str(tmp_path / "s.db")
    _fill(source, rows=50)
    with open_store(pg_url) as store:  # a target that silently drops some rows
        store.conn.raw.execute(
            "CREATE FUNCTION drop_some() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.id % 10 = 0 THEN RETURN NULL; END IF; RETURN NEW; END $$")
        store.conn.raw.execute("CREATE TRIGGER lossy BEFORE INSERT ON subscribers "
                               "FOR EACH ROW EXECUTE FUNCTION drop_some()")
    with pytest.raises(StoreError, match=r"subscribers has 46 rows after the copy, the source "
                                         r"51; nothing was copied"):
        copy_database(source, pg_url)
    with open_store(pg_url) as store:
        assert store.lists() == [] and store.count_subscribers() == 0


def test_dot_means_the_projects_own_database(tmp_path, pg_url, project, cli):
    _fill(str(project / "subscribers" / "subscribers.db"), rows=5)
    result = cli("db", "copy", ".", pg_url)
    assert result.exit_code == 0 and "copied 2 lists, 6 subscribers" in result.stdout


# -- a whole project, every table ---------------------------------------------------------------

EDITION = "editions/2025-10-14.md"


def _project_db(project: Path) -> str:
    return str(project / "subscribers" / "subscribers.db")


def _make_project(project: Path, cli) -> None:
    """Every table filled the way the program fills it: readers and consent (the store), a
    send to the outbox (editions, snapshots, sends, deliveries, send_workers), SES events
    recorded by the feedback code (one about a delivery), a queue message kept aside, rate-limit
    hits, and a `gather` of a feed served on 127.0.0.1 (feeds, entries, candidates)."""
    db = _project_db(project)
    _fill(db, rows=40)
    (project / "editions").mkdir(exist_ok=True)
    shutil.copy(SAMPLES / "2025-10-14-ai-digest.md", project / EDITION)
    result = cli("send", EDITION, "--list", "news", "--yes")
    assert result.exit_code == 0, result.output
    config = load_config()
    with sqlite3.connect(db) as conn:
        sent = conn.execute("SELECT email, provider_message_id FROM deliveries WHERE state = 'sent' "
                            "ORDER BY id LIMIT 2").fetchall()
    assert len(sent) == 2 and all(p for _, p in sent)
    record_notifications(config, [
        notification("event-bounce", email=sent[0][0], message_id=sent[0][1]),
        notification("event-open", email=sent[1][0], message_id=sent[1][1]),
        notification("event-delivery", email="stranger@example.com", message_id="0000-other"),
    ])
    with open_recorder(config) as recorder:
        assert recorder.keep_aside("sqs-1", "{this is not json", "message body is not JSON")
    limiter = open_rate_limiter(config)
    try:
        assert [limiter.hit("ip:203.0.113.7", 2, 3600) for _ in range(3)] == [True, True, False]
        assert limiter.hit("confirm:abc", 5, 3600)
    finally:
        limiter.close()
    with LocalSite() as site:
        start = utc(2026, 11, 20, 8, 0)
        site.routes["/rss"] = Route(rss(site.base, "rss", 4, start),
                                    content_type="application/rss+xml", etag='"v1"')
        with open(project / "newsletter.toml", "a", encoding="utf-8") as fh:
            fh.write(f'\n[sources]\nfeeds = ["{site.url("/rss")}"]\n')
        # (entries older than the send just made: listed since an earlier date)
        result = cli("gather", "--since", "2026-11-01")
        assert result.exit_code == 0, result.output


def _tables(url: str) -> dict[str, list[str]]:
    """The data tables of a database and their columns (sorted: the engines order some apart)."""
    if url.startswith("postgresql://"):
        with psycopg.connect(url) as conn:
            found: dict[str, list[str]] = {}
            for table, column in conn.execute(
                    "SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name <> 'schema_migrations'"):
                found.setdefault(table, []).append(column)
    else:
        with sqlite3.connect(url) as conn:
            found = {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")]
                     for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                              "AND name NOT LIKE 'sqlite%'")}
    return {t: sorted(c) for t, c in found.items()}


def _dump(url: str, tables: dict[str, list[str]]) -> dict[str, list[tuple]]:
    """Every row of ``tables``, values as SQLite gives them back (booleans as 0/1, bytes)."""
    def norm(v):
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, memoryview):
            return bytes(v)
        return v

    out = {}
    if url.startswith("postgresql://"):
        conn = psycopg.connect(url)
    else:
        conn = sqlite3.connect(url)
    try:
        for table, columns in tables.items():
            rows = conn.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
            out[table] = sorted((tuple(norm(v) for v in r) for r in rows), key=repr)
    finally:
        conn.close()
    return out


def test_a_whole_project_goes_round_trip_with_every_table(tmp_path, project, cli, pg_server, pg_url):
    _make_project(project, cli)
    first = _project_db(project)
    # the newest reader is erased: their id was handed out and must never be given again
    with open_store(first) as store:
        newest = max(s.id for s in store.iter_subscribers())
        assert store.erase(store.get_subscriber_by_id(newest).email)
    journal = {"imports", "import_undo"}
    tables = {t: c for t, c in _tables(first).items() if t not in journal}
    before = _dump(first, tables)
    # every table holds something (the test is only as good as its data)
    empty = [t for t, rows in before.items() if not rows]
    assert not empty, empty
    assert {"editions", "snapshots", "sends", "deliveries", "send_workers", "events", "dead_letters",
            "rate_events", "feeds", "feed_entries", "gather_candidates"} <= set(tables)
    assert any(r for r in before["events"] if r[tables["events"].index("delivery_id")] is not None)
    export = _state(first)["export"]

    second_pg = pg_server.database(template=pg_server.template)
    try:
        last, again = str(tmp_path / "last.db"), str(tmp_path / "again.db")
        for src, dst in ((first, pg_url), (pg_url, second_pg), (second_pg, last), (last, again)):
            result = cli("db", "copy", src, dst)
            assert result.exit_code == 0, result.output
            assert "counts verified" in result.stdout
            assert f"{len(before['deliveries'])} deliveries" in result.stdout
            assert _dump(dst, tables) == before, (src, dst)
            assert _state(dst)["export"] == export
        # id counters: past the erased reader on every engine, and on past the copied ledger rows
        for url in (pg_url, second_pg, last, again):
            with open_store(url) as store:
                new = store.add_subscriber("after@example.com", lists=["news"]).subscriber
                assert new.id == newest + 1, url
        with psycopg.connect(second_pg) as conn:
            top = conn.execute("SELECT max(id) FROM events").fetchone()[0]
            assert conn.execute("INSERT INTO dead_letters (message_id, reason, body, received_at) "
                                "VALUES ('x', 'r', 'b', 'now') RETURNING id").fetchone()[0] == len(before["dead_letters"]) + 1
            assert conn.execute("INSERT INTO events (message_id, type, occurred_at, received_at, payload) "
                                "VALUES ('n', 'open', 'now', 'now', '{}') RETURNING id").fetchone()[0] == top + 1
    finally:
        pg_server.drop(second_pg)


def test_a_table_the_target_does_not_have_is_refused_by_name(tmp_path, pg_url, project, cli):
    source = str(tmp_path / "s.db")
    _fill(source, rows=6)
    with sqlite3.connect(source) as conn:  # a table of a newer program (or someone's own)
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("CREATE TABLE drafts (id INTEGER PRIMARY KEY)")  # empty: nothing to lose
        conn.execute("INSERT INTO notes (body) VALUES ('keep me'), ('me too')")
    for target in (pg_url, str(tmp_path / "t.db")):
        result = cli("db", "copy", source, target)
        assert result.exit_code == 2
        error = result.stderr.strip()
        assert "\n" not in error and "cannot copy 2 notes from" in error
        assert "has no such table" in error and "drafts" not in error
        with open_store(target) as store:
            assert store.lists() == []
    with sqlite3.connect(source) as conn:
        conn.execute("DELETE FROM notes")
    assert cli("db", "copy", source, pg_url).exit_code == 0  # an empty one is no loss


def test_a_column_the_target_does_not_have_is_refused(tmp_path, pg_url, cli, project):
    source = str(tmp_path / "s.db")
    _fill(source, rows=6)
    with sqlite3.connect(source) as conn:
        conn.execute("ALTER TABLE sends ADD COLUMN colour TEXT")
    result = cli("db", "copy", source, pg_url)
    assert result.exit_code == 2
    assert "table sends has no column colour" in result.stderr and "nothing was copied" in result.stderr


def test_feeds_tables_go_both_ways(tmp_path, pg_url, project, cli):
    with LocalSite() as site:
        site.routes["/rss"] = Route(rss(site.base, "rss", 3, utc(2026, 11, 20, 8, 0)),
                                    content_type="application/rss+xml")
        with open(project / "newsletter.toml", "a", encoding="utf-8") as fh:
            fh.write(f'\n[sources]\nfeeds = ["{site.url("/rss")}"]\n')
        assert cli("gather").exit_code == 0
    source = _project_db(project)
    feed_tables = {t: c for t, c in _tables(source).items()
                   if t in ("feeds", "feed_entries", "gather_candidates")}
    before = _dump(source, feed_tables)
    assert all(before.values())
    other = str(tmp_path / "other.db")
    assert cli("db", "copy", source, other).exit_code == 0
    assert _dump(other, feed_tables) == before
    result = cli("db", "copy", source, pg_url)
    assert result.exit_code == 0, result.output
    assert "1 feeds, 3 feed_entries, 3 gather_candidates" in result.stdout
    assert _dump(pg_url, feed_tables) == before
    back = str(tmp_path / "back.db")
    assert cli("db", "copy", pg_url, back).exit_code == 0
    assert _dump(back, feed_tables) == before


def test_a_target_with_only_ledger_rows_is_not_empty(tmp_path, pg_url, cli, project):
    source = str(tmp_path / "s.db")
    _fill(source, rows=3)
    limiter = open_rate_limiter(pg_url)
    try:
        limiter.hit("ip:192.0.2.9", 5, 60)
    finally:
        limiter.close()
    result = cli("db", "copy", source, pg_url)
    assert result.exit_code == 2 and "is not empty (1 rate_events)" in result.stderr
    target = str(tmp_path / "t.db")
    _fill(target, rows=6)
    result = cli("db", "copy", pg_url, target)
    assert result.exit_code == 2 and "is not empty (2 lists, 7 subscribers" in result.stderr


def test_a_missing_source_or_an_unreachable_server_is_one_line(tmp_path, cli, project):
    result = cli("db", "copy", str(tmp_path / "nope.db"), str(tmp_path / "t.db"))
    assert result.exit_code == 2 and "nope.db: no such database file" in result.stderr
    assert not (tmp_path / "nope.db").exists() and not (tmp_path / "t.db").exists()
    source = str(tmp_path / "s.db")
    _fill(source, rows=6)
    from conftest import free_port

    result = cli("db", "copy", source, f"postgresql://nobody@127.0.0.1:{free_port()}/news")
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "cannot connect to PostgreSQL database 'news'" in result.stderr


def test_a_source_with_an_import_still_running_is_refused(tmp_path, pg_url, project, cli):
    db = _project_db(project)
    _fill(db, rows=6)  # not empty: a large import goes in chunks, journalled, one at a time
    big = project / "big.csv"
    big.write_text("email,name\n" + "".join(f"import{i}@example.com,I {i}\n" for i in range(30_000)),
                   encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "subscribers", "import", str(big),
                             "--list", "news"], cwd=project, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, NEWSLETTER_IMPORT_CHUNK="300"))
    try:
        deadline = time.monotonic() + 60
        while True:
            with sqlite3.connect(db, timeout=30) as conn:
                if conn.execute("SELECT count(*) FROM imports WHERE state = 'applying'").fetchone()[0]:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "the import never started"
            time.sleep(0.02)
        proc.send_signal(signal.SIGSTOP)  # alive, half applied
        result = cli("db", "copy", ".", pg_url)
        assert result.exit_code == 2
        error = result.stderr.strip()
        assert "\n" not in error and "an import into list 'news' is still running" in error
        assert f"pid {proc.pid}" in error
        with open_store(pg_url) as store:
            assert store.lists() == []
        proc.send_signal(signal.SIGCONT)
        assert proc.wait(timeout=120) == 0
    finally:
        proc.send_signal(signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = cli("db", "copy", ".", pg_url)
    assert result.exit_code == 0, result.output
    assert "30,007 subscribers" in result.stdout


def test_a_failure_in_a_later_table_leaves_the_target_empty(tmp_path, pg_url, project, cli):
    """A source whose events name a delivery that is not there (SQLite does not always enforce
    its foreign keys): PostgreSQL refuses the row, and the readers copied before it go too."""
    source = str(tmp_path / "s.db")
    _fill(source, rows=20)
    with sqlite3.connect(source) as conn:
        conn.execute("INSERT INTO events (message_id, type, email, delivery_id, occurred_at, received_at, "
                     "payload) VALUES ('m1', 'open', 'x@example.com', 999, 'now', 'now', '{}')")
    result = cli("db", "copy", source, pg_url)
    assert result.exit_code == 2
    error = result.stderr.strip()
    assert "\n" not in error and "failed (table events), nothing was copied" in error
    assert "foreign key" in error
    with open_store(pg_url) as store:
        assert store.lists() == [] and store.count_subscribers() == 0
    target = str(tmp_path / "t.db")  # the same source into SQLite: its foreign keys are on
    result = cli("db", "copy", source, target)
    assert result.exit_code == 2 and "(table events)" in result.stderr
    with open_store(target) as store:
        assert store.lists() == [] and store.count_subscribers() == 0


def test_a_copy_killed_while_writing_sqlite_leaves_it_empty(tmp_path, pg_url):
    _fill(pg_url, rows=60_000)
    target = tmp_path / "t.db"
    _kill_copy_at(pg_url, str(target), "memberships")
    with open_store(str(target)) as store:
        assert store.lists() == [] and store.count_subscribers() == 0
    assert copy_database(pg_url, str(target)).counts["subscribers"] == 60_001
