"""A send is a snapshot: the archive, the feed, "view in browser" and `archive build` serve what
was sent whatever happens to the file; numbers are assigned once; a resume sends the frozen
version; the send's identity is its source; several sends per edition with audience options;
test copies apart; and the upgrade of a database holding sends from before snapshots."""

from __future__ import annotations

import email
import re
import signal
import sqlite3
from email import policy

import httpx
import pytest

from fake_ses import FakeSes
from test_send import outbox_messages, spawn_send, use_ses, wait_for
from newsletter.config import load_config
from newsletter.store.ledger import Ledger
from newsletter.store import db, open_store

# every test here runs on both engines (SQLite, and a real PostgreSQL server)
pytestmark = pytest.mark.usefixtures("backend_project")

EDITION = """\
---
title: "{title}"
date: {date}
{extra}---

A lede for @@nl:name@@ about {title}.

---

1.  [First story of {title}](https://example.org/{slug}/one)

    The first summary.

2.  [Second story](https://example.net/{slug}/two)

    The second summary.

---

## The file's own essay

The essay of the file.
"""


def write(path, title: str, date: str = "2026-11-20T08:00:00+00:00", extra: str = "") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(EDITION.format(title=title, date=date, extra=extra, slug=path.stem), encoding="utf-8")
    return str(path)


def readers(n: int, list_name: str = "daily", start: int = 0, **attributes: str) -> list[str]:
    with open_store(load_config()) as store:
        if store.get_list(list_name) is None:
            store.create_list(list_name)
        out = []
        for i in range(start, start + n):
            address = f"reader{i:04d}@example.com"
            store.add_subscriber(address, name=f"Reader {i}", lists=[list_name], attributes=attributes)
            out.append(address)
    return out


def recipients_of(project, slug: str) -> list[str]:
    return sorted(m["To"].addresses[0].addr_spec for m in outbox_messages(project, slug))


def send(cli, path: str, *args: str):
    result = cli("send", path, *(args or ("--list", "daily")), "--yes")
    assert result.exit_code == 0, result.output
    return result


# -- the archive serves what was sent -----------------------------------------------------------------

@pytest.fixture
def site(web_server, project):
    url, config = web_server()
    with httpx.Client(base_url=url, timeout=30) as client:
        yield url, config, client


def view_in_browser(project, slug: str) -> str:
    """The "view in browser" URL of the first message the send wrote to the outbox."""
    message = outbox_messages(project, slug)[0]
    html = message.get_body(preferencelist=("html",)).get_content()
    found = re.search(r'href="([^"]*/archive/[^"]+)"', html)
    assert found, "no view-in-browser link"
    return found.group(1)


def test_archive_feed_and_view_in_browser_serve_the_snapshot(site, project, cli):
    url, config, client = site
    readers(2)
    # (a) a file outside editions/
    outside = write(project / "drafts" / "elsewhere.md", "Sent from elsewhere",
                    date="2026-11-18T08:00:00+00:00", extra="slug: elsewhere\n")
    send(cli, outside)
    # (b) a send with --essay: the pasted article, not the file's own essay
    essay_path = project / "pasted-essay.md"
    essay_path.write_text("## The pasted essay\n\nWhat readers got instead.\n", encoding="utf-8")
    with_essay = write(project / "editions" / "2026-11-19.md", "Essay swapped", date="2026-11-19T08:00:00+00:00")
    send(cli, with_essay, "--list", "daily", "--essay", str(essay_path))
    # (c) edited, (d) deleted and (e) broken after their send
    edited = write(project / "editions" / "2026-11-20.md", "Before the edit", date="2026-11-20T08:00:00+00:00")
    deleted = write(project / "editions" / "2026-11-21.md", "Then deleted", date="2026-11-21T08:00:00+00:00")
    broken = write(project / "editions" / "2026-11-22.md", "Then broken", date="2026-11-22T08:00:00+00:00")
    for path in (edited, deleted, broken):
        send(cli, path)
    links = {slug: view_in_browser(project, slug) for slug in
             ("elsewhere", "2026-11-19", "2026-11-20", "2026-11-21", "2026-11-22")}
    write(project / "editions" / "2026-11-20.md", "After the edit", date="2026-11-20T08:00:00+00:00")
    (project / "editions" / "2026-11-21.md").unlink()
    (project / "editions" / "2026-11-22.md").write_text("---\ntitle: [unclosed\n---\n", encoding="utf-8")
    (project / "pasted-essay.md").unlink()

    expected = {"elsewhere": "Sent from elsewhere", "2026-11-19": "Essay swapped", "2026-11-20": "Before the edit",
                "2026-11-21": "Then deleted", "2026-11-22": "Then broken"}
    for slug, title in expected.items():
        assert links[slug] == f"{url}/archive/{slug}"
        page = client.get(f"/archive/{slug}")
        assert page.status_code == 200, (slug, page.status_code)
        assert title in page.text and "@@nl:" not in page.text
    essay_page = client.get("/archive/2026-11-19").text
    assert "The pasted essay" in essay_page and "The file&#39;s own essay" not in essay_page \
        and "The file's own essay" not in essay_page
    assert "After the edit" not in client.get("/archive/2026-11-20").text
    index = client.get("/archive").text
    for title in expected.values():
        assert title in index
    feed = client.get("/feed.xml")
    assert feed.status_code == 200
    for title in expected.values():
        assert title in feed.text
    assert "After the edit" not in feed.text

    out = project / "site"
    built = cli("archive", "build", "--output", str(out))
    assert built.exit_code == 0, built.output
    for slug, title in expected.items():
        assert title in (out / "archive" / slug / "index.html").read_text(encoding="utf-8")
    assert "Before the edit" in (out / "feed.xml").read_text(encoding="utf-8")


# -- numbers -----------------------------------------------------------------------------------

def masthead_number(text: str) -> str | None:
    found = re.search(r"No\. (\d+)", text)
    return found.group(1) if found else None


def test_numbers_are_assigned_at_first_send_and_never_move(site, project, cli):
    url, config, client = site
    readers(1)
    first = write(project / "editions" / "2026-12-01.md", "First", date="2026-12-01T08:00:00+00:00")
    send(cli, first)
    # a draft dated earlier and an oddly named file do not renumber what was mailed
    draft = write(project / "editions" / "2026-11-30.md", "Earlier draft", date="2026-11-30T08:00:00+00:00")
    write(project / "editions" / "2026-12-01-partners.md", "Partners", date="2026-12-01T09:00:00+00:00",
          extra="slug: partners\n")
    assert masthead_number(client.get("/archive/2026-12-01").text) == "1"
    built = cli("build", draft)
    assert built.exit_code == 0, built.output
    assert "No. 2" in (project / "build" / "2026-11-30.txt").read_text(encoding="utf-8")  # what it will get
    result = send(cli, draft)
    assert "(No. 2)" in result.output
    assert masthead_number(client.get("/archive/2026-11-30").text) == "2"
    # `number:` in the front matter wins; the next one follows the highest
    chosen = write(project / "editions" / "2026-12-02.md", "Chosen", date="2026-12-02T08:00:00+00:00",
                   extra="number: 10\n")
    send(cli, chosen)
    later = write(project / "editions" / "2026-12-03.md", "Later", date="2026-12-03T08:00:00+00:00")
    send(cli, later)
    assert masthead_number(client.get("/archive/2026-12-03").text) == "11"
    taken = write(project / "editions" / "2026-12-04.md", "Taken", date="2026-12-04T08:00:00+00:00",
                  extra="number: 2\n")
    refused = cli("send", taken, "--list", "daily", "--yes")
    assert refused.exit_code == 2 and "number 2 is already edition '2026-11-30'" in refused.output
    assert "Traceback" not in refused.output
    for slug, number in (("2026-12-01", "1"), ("2026-11-30", "2"), ("2026-12-02", "10")):
        assert masthead_number(client.get(f"/archive/{slug}").text) == number
    # the build (the preview's) of an edition sent already shows its own number, not a new one
    assert cli("build", first).exit_code == 0
    assert masthead_number((project / "build" / "2026-12-01.txt").read_text(encoding="utf-8")) == "1"


# -- resume sends the frozen version -------------------------------------------------------------

@pytest.fixture
def fake_ses(project):
    server = FakeSes().start()
    use_ses(project, server.url)
    yield server
    server.stop()


def subjects(fake: FakeSes) -> set[str]:
    return {str(email.message_from_string(m["raw"], policy=policy.default)["Subject"]) for m in fake.messages}


def test_sigint_edit_resume_sends_only_the_frozen_version(project, fake_ses, cli):
    people = readers(60)
    path = project / "editions" / "2025-10-14.md"
    write(path, "Frozen title", date="2025-10-14T08:00:00+08:00")
    fake_ses.configure(latency=0.02)
    proc = spawn_send(project, "--rate", "30", "--concurrency", "2")
    wait_for(lambda: len(fake_ses.messages) >= 8, proc)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 130, output
    write(path, "Edited title", date="2025-10-14T08:00:00+08:00")
    resumed = cli("send", "editions/2025-10-14.md", "--list", "daily", "--transport", "ses", "--yes")
    assert resumed.exit_code == 0, resumed.output
    assert "editions/2025-10-14.md changed since this send started at" in resumed.output
    assert "resuming sends the version frozen then" in resumed.output
    assert subjects(fake_ses) == {"Frozen title"}
    assert sorted(to for m in fake_ses.messages for to in m["to"]) == people
    shown = cli("sends", "show", "2025-10-14")
    assert "subject:    Frozen title" in shown.output and "title:      Frozen title" in shown.output
    assert "Frozen title" in cli("stats", "2025-10-14").output


def started_not_sent(config, path: str) -> None:
    """A send whose snapshot and recipients are frozen but nothing went out (as after a crash)."""
    from newsletter.audience.segments import make_audience
    from newsletter.send.job import SendJob, SendOptions, prepare_send

    audience = make_audience(["daily"])
    job = SendJob(config, prepare_send(config, path, audience), audience, SendOptions(transport="outbox"))
    try:
        job._create_send()
    finally:
        job.close()


@pytest.mark.parametrize("change", ["offset", "slug"])
def test_offset_or_slug_change_is_the_same_edition(project, cli, change):
    people = readers(20)
    path = project / "editions" / "2026-11-20.md"
    write(path, "Same edition", date="2026-11-20T16:00:00+08:00")
    started_not_sent(load_config(), str(path))
    if change == "offset":
        write(path, "Same edition", date="2026-11-20T08:00:00+00:00")  # the same instant
    else:
        write(path, "Same edition", date="2026-11-20T16:00:00+08:00", extra="slug: renamed\n")
    result = send(cli, str(path))
    assert "changed since this send started" in result.output
    assert "send:       2026-11-20 (resuming)" in result.output
    assert recipients_of(project, "2026-11-20") == people  # one message each, no fresh send
    assert not (project / "outbox" / "renamed").exists()
    with Ledger.open(load_config()) as ledger:
        assert len(ledger.sends()) == 1


@pytest.mark.parametrize("damage", ["broken", "deleted"])
def test_a_broken_or_deleted_file_still_resumes_its_send(project, cli, damage):
    people = readers(5)
    path = project / "editions" / "2026-11-20.md"
    write(path, "Resumable")
    started_not_sent(load_config(), str(path))
    if damage == "broken":
        path.write_text("---\ntitle: [unclosed\n---\n", encoding="utf-8")
    else:
        path.unlink()
    result = send(cli, "editions/2026-11-20.md")
    assert "editions/2026-11-20.md changed since this send started" in result.output
    assert recipients_of(project, "2026-11-20") == people
    assert {m["Subject"] for m in outbox_messages(project, "2026-11-20")} == {"Resumable"}
    # with nothing to resume, the broken file is the one-line error it always was
    again = cli("send", "editions/2026-11-20.md", "--list", "other", "--yes")
    assert again.exit_code == 2 and "Traceback" not in again.output


# -- audiences and several sends per edition -----------------------------------------------------

def test_union_exclude_where_give_each_reader_one_message(project, cli):
    with open_store(load_config()) as store:
        for name in ("a", "b", "press"):
            store.create_list(name)
        people = {
            "ann@example.com": (["a", "b"], {"city": "Berlin", "plan": "pro"}),
            "bob@example.com": (["a"], {"city": "berlin", "plan": "free"}),
            "cat@example.com": (["b"], {"city": "Berlin"}),
            "dan@example.com": (["b", "press"], {"city": "Berlin", "plan": "pro"}),
            "eve@example.com": (["a", "b"], {"city": "Paris", "plan": "pro"}),
            "fay@example.com": (["b"], {"city": "Berlin", "plan": "team", "company": "ACME"}),
        }
        for address, (lists, attrs) in people.items():
            store.add_subscriber(address, lists=lists, attributes=attrs)
    path = write(project / "editions" / "2026-11-20.md", "Segments")
    dry = cli("send", path, "--list", "a", "--list", "b", "--exclude-list", "press", "--where", "city=Berlin",
              "--where", "plan!=free", "--dry-run")
    assert dry.exit_code == 0, dry.output
    for line in ("list a: 3", "+ list b: 6", "− list press: 5", "where city=Berlin: 4", "where plan!=free: 3",
                 "recipients: 3"):
        assert line in dry.output, dry.output
    assert not (project / "outbox").exists()
    send(cli, path, "--list", "a", "--list", "b", "--exclude-list", "press", "--where", "city=Berlin",
         "--where", "plan!=free")
    assert recipients_of(project, "2026-11-20") == ["ann@example.com", "cat@example.com", "fay@example.com"]
    # the same conditions on the subscriber commands, to check a segment first
    counted = cli("subscribers", "count", "--where", "city=Berlin", "--where", "has:company")
    assert counted.exit_code == 0 and counted.output.strip() == "1"
    listed = cli("subscribers", "ls", "--list", "b", "--where", "plan!=free")
    assert listed.exit_code == 0
    assert [line.split()[2] for line in listed.output.splitlines()] == [
        "ann@example.com", "cat@example.com", "dan@example.com", "eve@example.com", "fay@example.com"]
    bad = cli("subscribers", "count", "--where", "city")
    assert bad.exit_code == 2 and "expected key=value, key!=value or has:key" in bad.output
    assert "Traceback" not in bad.output


def test_a_second_send_skips_earlier_recipients_and_again_sends_again(project, cli):
    daily = readers(3, "daily")
    weekly = readers(2, "weekly", start=2)  # reader0002 is on both lists
    path = write(project / "editions" / "2026-11-20.md", "Twice")
    send(cli, path, "--list", "daily")
    second = send(cli, path, "--list", "weekly")
    assert "send:       2026-11-20#2 (new)" in second.output
    assert "already received this edition: 1" in second.output
    assert recipients_of(project, "2026-11-20") == sorted(daily + ["reader0003@example.com"])
    # the same list later: only the people who joined since
    same = cli("send", path, "--list", "daily", "--yes")
    assert same.exit_code == 0 and "every reader of daily already received 2026-11-20" in same.output
    joined = readers(1, "daily", start=7)
    third = send(cli, path, "--list", "daily")
    assert "send:       2026-11-20#3 (new)" in third.output
    assert recipients_of(project, "2026-11-20") == sorted(daily + weekly[1:] + joined)
    again = send(cli, path, "--list", "weekly", "--again")
    assert "2026-11-20#4: sent 2" in again.output
    assert len(outbox_messages(project, "2026-11-20")) == 3 + 1 + 1 + 2
    ls = cli("sends", "ls").output
    for ref in ("2026-11-20#2", "2026-11-20#3", "2026-11-20#4"):
        assert ref in ls
    shown = cli("sends", "show", "2026-11-20")
    assert "2026-11-20: 4 sends" in shown.output
    one = cli("sends", "show", "2026-11-20#2")
    assert "send:       2026-11-20#2" in one.output and "earlier:    1" in one.output
    assert "skipped:    1" in one.output  # the contract's delivery state for "already received"
    with Ledger.open(load_config()) as ledger:
        rows = ledger.deliveries(ledger.find_send("2026-11-20#2").id, states=["skipped"])
        assert [(r["email"], r["last_error"]) for r in rows] == [
            ("reader0002@example.com", "already received this edition in an earlier send")]
    assert "2026-11-20#3" not in one.output
    stats = cli("stats", "2026-11-20", "--json")
    assert stats.exit_code == 0 and '"sent": 7' in stats.output


def test_test_copies_are_apart_and_need_no_yes(project, cli):
    readers(2)
    path = write(project / "editions" / "2026-11-20.md", "Tested")
    test = cli("send", path, "--list", "daily", "--test", "me@example.com")
    assert test.exit_code == 0, test.output
    assert recipients_of(project, "_test/2026-11-20") == ["me@example.com"]
    assert not (project / "outbox" / "2026-11-20").exists()
    send(cli, path)
    assert recipients_of(project, "2026-11-20") == ["reader0000@example.com", "reader0001@example.com"]
    assert recipients_of(project, "_test/2026-11-20") == ["me@example.com"]
    assert "sent:       2" in cli("sends", "show", "2026-11-20").output


# -- upgrading a database with sends from before snapshots ---------------------------------------------

def _database_before_snapshots(project, backend: str, request, monkeypatch):
    """The project's database at the schema before snapshots (SQLite 4, PostgreSQL 6), holding
    one reader and two sends made then; returns a function giving the schema version of a
    connection and the latest one."""
    now = "2026-11-01T08:00:00Z"
    rows = [("INSERT INTO subscribers (id, email, email_key, status, created_at) "
             "VALUES (1, 'old@example.com', 'old@example.com', 'active', ?)", (now,)),
            ("INSERT INTO lists (id, name, created_at) VALUES (1, 'daily', ?)", (now,)),
            ("INSERT INTO memberships (subscriber_id, list_id, status, created_at) VALUES (1, 1, 'active', ?)", (now,))]
    for i, slug in enumerate(("2026-11-01", "2026-11-02"), start=1):
        rows.append(("INSERT INTO sends (id, slug, list_name, list_id, subject, transport, recipients, created_at, "
                     "first_sent_at, finished_at) VALUES (?, ?, 'daily', 1, ?, 'outbox', 1, ?, ?, ?)",
                     (i, slug, f"Old subject {slug}", now, now, now)))
        rows.append(("INSERT INTO deliveries (send_id, subscriber_id, email, state, sent_at, updated_at) "
                     "VALUES (?, 1, 'old@example.com', 'sent', ?, ?)", (i, now, now)))
    if backend == "sqlite":
        path = db.sqlite_path(load_config().database_url)
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = sqlite3.connect(path)
        for version, _name, sql in db.migrations():
            if version <= 4:
                raw.executescript(sql)
        raw.execute("PRAGMA user_version = 4")
        for sql, args in rows:
            raw.execute(sql, args)
        raw.commit()
        raw.close()
        return db.schema_version, db.latest_version()
    from newsletter.store import pg

    url = request.getfixturevalue("pg_empty_url")
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", url)
    conn = pg.connect(url, migrate=False)
    conn.raw.execute(pg._VERSION_TABLE)
    for version, name, sql in pg.migrations():
        if version <= 6:
            conn.raw.execute(sql)
            conn.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                         (version, name, now))
    for sql, args in rows:
        conn.execute(sql, args)
    conn.close()
    return pg.schema_version, pg.latest_version()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_rebuilds_snapshots_of_earlier_sends(project, cli, backend, request, monkeypatch):
    """An upgrade of a database holding sends from before snapshots (both engines' migration 007)
    rebuilds their snapshots from the edition files that are still there."""
    version_of, latest = _database_before_snapshots(project, backend, request, monkeypatch)
    config = load_config()
    write(project / "editions" / "2026-11-01.md", "Old edition kept", date="2026-11-01T08:00:00+00:00")
    # 2026-11-02's file is gone

    with Ledger.open(config) as ledger:
        assert version_of(ledger.conn) == latest
        first = ledger.find_send("2026-11-01")
        snap = ledger.snapshot(first.snapshot_id)
        assert snap.reconstructed and "Old edition kept" in snap.html
        assert ledger.edition("2026-11-01").number == 1  # its place in the folder: what it showed
        assert ledger.find_send("2026-11-02").snapshot_id is None
        assert ledger.progress(first.id).sent == 1
        assert first.list_ids == [1]
    shown = cli("sends", "show", "2026-11-01")
    assert "reconstructed" in shown.output and "sent:       1" in shown.output
    # a reader who got an old edition is not sent it again by a new send
    again = cli("send", "editions/2026-11-01.md", "--list", "daily", "--yes")
    assert "every reader of daily already received 2026-11-01" in again.output
    # the rebuilt snapshot is now what the archive serves, and later edits change nothing
    write(project / "editions" / "2026-11-01.md", "Edited later", date="2026-11-01T08:00:00+00:00")
    out = project / "site"
    assert cli("archive", "build", "--output", str(out)).exit_code == 0
    assert "Old edition kept" in (out / "archive" / "2026-11-01" / "index.html").read_text(encoding="utf-8")
    assert not (out / "archive" / "2026-11-02").exists()


def test_the_preview_shows_the_number_it_will_get(project, cli):
    from newsletter.render.preview import Preview, page

    readers(1)
    send(cli, write(project / "editions" / "2026-11-20.md", "Sent one"))
    draft = project / "editions" / "2026-11-21.md"
    write(draft, "A draft", date="2026-11-21T08:00:00+00:00")
    preview = Preview(draft, load_config())
    assert preview.state.number.startswith("No. 2 ")
    assert "No. 2 (assigned at its first send, then kept)" in page(preview.state)
    assert "No. 2" in preview.state.rendered.text
    sent = Preview(project / "editions" / "2026-11-20.md", load_config())
    assert sent.state.number.startswith("No. 1 ")


def test_an_international_domain_is_frozen_in_its_ascii_form(project, cli):
    with open_store(load_config()) as store:
        store.create_list("daily")
        store.create_list("weekly")
        store.add_subscriber("Leser@Bücher.de", lists=["daily", "weekly"])
        store.add_subscriber("plain@example.com", lists=["weekly"])
    path = write(project / "editions" / "2026-11-20.md", "IDN")
    send(cli, path, "--list", "daily", "--list", "weekly")
    assert recipients_of(project, "2026-11-20") == ["Leser@xn--bcher-kva.de", "plain@example.com"]


def test_another_file_with_a_sent_slug_and_another_date_is_refused(project, cli):
    readers(1)
    send(cli, write(project / "editions" / "2026-11-20.md", "The first", extra="slug: weekly-notes\n"))
    other = write(project / "editions" / "2026-11-27.md", "Another one", date="2026-11-27T08:00:00+00:00",
                  extra="slug: weekly-notes\n")
    refused = cli("send", other, "--list", "daily", "--yes")
    assert refused.exit_code == 2 and "slug 'weekly-notes' is already edition 1" in refused.output
    assert "give this edition its own `slug:`" in refused.output and "Traceback" not in refused.output
    # the same file moved elsewhere (same slug, same date) is the same edition
    moved = project / "archive-src" / "notes.md"
    moved.parent.mkdir()
    (project / "editions" / "2026-11-20.md").rename(moved)
    again = cli("send", str(moved), "--list", "daily", "--yes")
    assert again.exit_code == 0 and "every reader of daily already received weekly-notes" in again.output


def test_each_reader_of_a_multi_list_send_gets_the_list_id_of_the_list_their_token_names(project, cli):
    """List-Id is a static header: a send to several lists keeps a template per list, so a
    reader only on `weekly` is not told the mail came through `daily` (their unsubscribe link
    names weekly: the two must agree)."""
    from newsletter.config import load_secret
    from newsletter.tokens import verify_token

    config = load_config()
    with open_store(config) as store:
        daily, weekly = store.create_list("daily"), store.create_list("weekly")
        store.add_subscriber("both@example.com", lists=["daily", "weekly"])
        store.add_subscriber("weekly-only@example.com", lists=["weekly"])
        store.add_subscriber("daily-only@example.com", lists=["daily"])
    path = write(project / "editions" / "2026-11-20.md", "Lists")
    send(cli, path, "--list", "daily", "--list", "weekly")
    secret = load_secret(config)
    seen = {}
    for message in outbox_messages(project, "2026-11-20"):
        to = message["To"].addresses[0].addr_spec
        one_click = str(message["List-Unsubscribe"]).split("<", 1)[1].split(">", 1)[0]
        claims = verify_token(secret, "unsubscribe", one_click.rsplit("/", 1)[1])
        seen[to] = (str(message["List-Id"]).rsplit("<", 1)[1].split(".", 1)[0], claims.list_id)
    assert seen == {"both@example.com": ("daily", daily.id), "weekly-only@example.com": ("weekly", weekly.id),
                    "daily-only@example.com": ("daily", daily.id)}
