"""CSV import and export through the real code on real databases (SQLite files and a real
PostgreSQL server: the ``store`` fixture runs each test on both): the edge cases, consent, one
transaction (interrupted imports leave nothing behind), and the export → import round trip."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from newsletter.errors import ValidationError
from newsletter.audience.importer import export_subscribers, import_csv
from newsletter.store import open_store, sqlite_bulk
from newsletter.store.models import SubscriberStatus


@pytest.fixture
def store(db_url):
    with open_store(db_url) as s:
        s.create_list("news")
        yield s


def _schema(store) -> str:
    """The tables and indexes, as text (to see that an interrupted import put everything back)."""
    if store.backend == "postgresql":
        return store.conn.execute(
            "SELECT string_agg(indexdef, ';' ORDER BY indexname) FROM pg_indexes "
            "WHERE schemaname = 'public'").fetchone()[0] + store.conn.execute(
            "SELECT string_agg(conname || pg_get_constraintdef(oid), ';' ORDER BY conname) "
            "FROM pg_constraint WHERE connamespace = 'public'::regnamespace").fetchone()[0]
    return store.conn.execute("SELECT group_concat(sql) FROM sqlite_master").fetchone()[0]


def write(tmp_path: Path, content: str | bytes, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def run(store, path, **kwargs):
    rejects = []
    summary = import_csv(store, path, list_name="news", on_reject=rejects.append, **kwargs)
    return summary, rejects


def test_bom_crlf_quoted_commas_blank_lines_and_case_insensitive_header(store, tmp_path):
    path = write(tmp_path, "\ufeffEMAIL,Name,City\r\n"
                           "ada@example.com,\"Lovelace, Ada\",London\r\n"
                           "\r\n"
                           "grace@example.com,\"Grace \"\"Amazing\"\" Hopper\",\r\n")
    summary, rejects = run(store, path)
    assert rejects == []
    assert (summary.rows, summary.added, summary.rejected) == (2, 2, 0)
    ada = store.get_subscriber("ada@example.com")
    assert ada.name == "Lovelace, Ada" and ada.attributes == {"city": "London"}  # names normalised
    grace = store.get_subscriber("grace@example.com")
    assert grace.name == 'Grace "Amazing" Hopper' and grace.attributes == {}


def test_duplicates_differing_in_case_are_merged_the_last_row_kept_whole(store, tmp_path):
    path = write(tmp_path, "email,name,city\n"
                           "Ada@Example.com,Ada,London\n"
                           "b@example.com,B,\n"
                           "ADA@example.COM,,Paris\n"
                           "ada@example.com,Ada L.,\n")
    summary, _ = run(store, path)
    assert (summary.added, summary.duplicates) == (2, 2)
    ada = store.get_subscriber("ada@example.com")
    # the spelling and the values come from the same (last) row, never one row's spelling
    # with another's values
    assert ada.email == "ada@example.com"
    assert ada.name == "Ada L." and ada.attributes == {}
    assert store.count_subscribers(list_name="news") == 2


def test_invalid_and_non_ascii_local_parts_are_rejected_with_line_numbers(store, tmp_path):
    path = write(tmp_path, "email,name\n"
                           "ok@example.com,OK\n"
                           "not-an-address,X\n"
                           "jörg@example.com,Jörg\n"
                           ",empty\n"
                           "\"multi\nline@example.com\",Y\n"
                           "too@many.com,a,b\n"
                           "idn@bücher.de,IDN\n")
    summary, rejects = run(store, path)
    assert [(r.line, r.email) for r in rejects] == [
        (3, "not-an-address"), (4, "jörg@example.com"), (5, ""), (6, "multi\nline@example.com"),
        (8, "too@many.com")]  # line numbers count the quoted line break
    assert "must be ASCII" in rejects[1].reason
    assert "fields" in rejects[4].reason
    assert (summary.rows, summary.added, summary.rejected) == (7, 2, 5)
    idn = store.get_subscriber("IDN@BÜCHER.DE")
    assert idn.email == "idn@bücher.de"
    assert sorted(r.email for r in store.recipients("news")) == ["idn@xn--bcher-kva.de",
                                                                 "ok@example.com"]


def test_control_characters_in_names_and_attributes_are_stripped_and_counted(store, tmp_path):
    path = write(tmp_path, "email,name,note\n"
                           "a@example.com,\"Evil\r\nBcc: x@example.com\",\"line1\nline2\"\n"
                           "b@example.com,Tab\tName,\x07bell\n")
    summary, rejects = run(store, path)
    assert rejects == [] and summary.cleaned == 2
    a = store.get_subscriber("a@example.com")
    assert a.name == "Evil Bcc: x@example.com" and a.attributes == {"note": "line1 line2"}
    assert store.get_subscriber("b@example.com").name == "Tab Name"


@pytest.mark.parametrize("content, message", [
    (b"email,name\na@example.com,Caf\xe9\n", "not UTF-8"),
    ("name,city\nAda,London\n", "no 'email' column"),
    ("", "is empty"),
    ("email,Email\na@example.com,b@example.com\n", "appears twice"),
    ("email,city,city\na@example.com,x,y\n", "appears twice"),
    ('email,name\n"a@example.com,oops\n', "malformed CSV"),
])
def test_bad_files_stop_with_one_line_and_write_nothing(store, tmp_path, content, message):
    store.add_subscriber("existing@example.com", lists=["news"])
    path = write(tmp_path, content)
    with pytest.raises(ValidationError, match=message) as info:
        run(store, path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert store.count_subscribers() == 1


def test_non_utf8_error_names_the_line(store, tmp_path):
    good = "".join(f"u{i}@example.com,U\n" for i in range(3000))
    path = write(tmp_path, b"email,name\n" + good.encode() + b"bad@example.com,\xff\xfe\n")
    with pytest.raises(ValidationError) as info:
        run(store, path)
    assert info.value.line == 3002
    assert store.count_subscribers() == 0


def test_unreadable_file_and_unknown_list(store, tmp_path):
    with pytest.raises(ValidationError, match="cannot read"):
        run(store, tmp_path / "missing.csv")
    with pytest.raises(ValidationError, match="no such list"):
        import_csv(store, write(tmp_path, "email\n"), list_name="nope")


def test_consent_is_kept_on_import_and_counted(store, tmp_path):
    store.create_list("other")
    for e in ("unsub@example.com", "bounce@example.com", "complain@example.com",
              "left@example.com", "fine@example.com"):
        store.add_subscriber(e, lists=["news"])
    store.unsubscribe(store.get_subscriber("unsub@example.com").id)
    store.set_status("bounce@example.com", SubscriberStatus.BOUNCED)
    store.set_status("complain@example.com", SubscriberStatus.COMPLAINED)
    store.unsubscribe(store.get_subscriber("left@example.com").id, store.get_list("news").id)
    store.suppress("supp@example.com", "manual")
    store.erase("erased@example.com")
    path = write(tmp_path, "email,name\n" + "".join(
        f"{e},New\n" for e in ("UNSUB@example.com", "bounce@example.com", "complain@example.com",
                               "left@example.com", "supp@example.com", "erased@example.com",
                               "fine@example.com", "new@example.com")))
    summary, _ = run(store, path)
    assert (summary.kept_by_consent, summary.updated, summary.added) == (6, 1, 1)
    assert store.get_subscriber("unsub@example.com").status == SubscriberStatus.UNSUBSCRIBED
    assert store.get_subscriber("unsub@example.com").name == ""
    assert store.get_subscriber("supp@example.com") is None
    assert store.get_subscriber("erased@example.com") is None
    assert sorted(r.email for r in store.recipients("news")) == ["fine@example.com",
                                                                 "new@example.com"]
    # the same file into another list: the left-one-list reader may join that one
    summary = import_csv(store, path, list_name="other")
    assert summary.kept_by_consent == 5 and summary.updated == 3


def test_reimport_counts_unchanged_and_updated(store, tmp_path):
    run(store, write(tmp_path, "email,name\na@example.com,A\nb@example.com,B\n"))
    summary, _ = run(store, write(tmp_path, "email,name\na@example.com,A\nB@example.com,Bee\n"
                                            "c@example.com,C\n"))
    assert (summary.unchanged, summary.updated, summary.added) == (1, 1, 1)
    assert store.get_subscriber("b@example.com").name == "Bee"


def test_dry_run_counts_but_writes_nothing(store, tmp_path):
    summary, _ = run(store, write(tmp_path, "email\na@example.com\nA@example.com\n"), dry_run=True)
    assert (summary.added, summary.duplicates, summary.dry_run) == (1, 1, True)
    assert store.count_subscribers() == 0


@pytest.mark.parametrize("empty", [True, False], ids=["bulk-path", "staged-path"])
def test_interrupt_from_the_progress_callback_rolls_everything_back(store, tmp_path, empty):
    if not empty:
        store.add_subscriber("before@example.com", lists=["news"])
    schema = _schema(store)
    rows = "".join(f"user{i}@example.com,User {i}\n" for i in range(25_000))
    path = write(tmp_path, "email,name\n" + rows)
    calls = []

    def interrupt(done, total):
        calls.append(done)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_csv(store, path, list_name="news", on_progress=interrupt)
    assert store.count_subscribers() == (0 if empty else 1)
    assert not store.conn.in_transaction
    # the bulk path's dropped index is back
    assert _schema(store) == schema
    assert import_csv(store, path, list_name="news").added == 25_000  # and it can be redone


CHILD = """
import sys
from newsletter.audience.importer import import_csv
from newsletter.store import open_store
with open_store(sys.argv[1]) as store:
    def progress(done, total):
        print("progress", done, flush=True)
    import_csv(store, sys.argv[2], list_name="news", on_progress=progress)
"""


@pytest.mark.parametrize("empty", [True, False], ids=["bulk-path", "staged-path"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_a_killed_import_leaves_the_database_as_it_was(tmp_path, sig, empty, db_url, backend):
    db = db_url
    with open_store(str(db)) as s:
        s.create_list("news")
        if not empty:
            s.add_subscriber("before@example.com", lists=["news"])
    path = write(tmp_path, "email,name\n" + "".join(f"u{i}@example.com,U\n"
                                                    for i in range(300_000)))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().startswith("progress")  # well inside the transaction
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    with open_store(str(db)) as s:
        if backend == "sqlite":
            assert s.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert sqlite_bulk.can_bulk_load(s.conn)  # the unique index is in place
        assert [x.email for x in s.iter_subscribers()] == ([] if empty else ["before@example.com"])
        assert s.conn.execute("SELECT count(*) FROM memberships").fetchone()[0] == (0 if empty else 1)
        # and the same import can be run again to the end
        assert import_csv(s, path, list_name="news").added == 300_000


def test_status_column_imports_opt_outs_and_never_reactivates(store, tmp_path):
    store.add_subscriber("active@example.com", lists=["news"])
    path = write(tmp_path, "email,status\nactive@example.com,unsubscribed\n"
                           "gone@example.com,bounced\nnew@example.com,\nodd@example.com,vip\n")
    summary, rejects = run(store, path)
    assert [r.line for r in rejects] == [5] and "status 'vip'" in rejects[0].reason
    assert (summary.added, summary.updated) == (2, 1)
    assert store.get_subscriber("active@example.com").status == SubscriberStatus.UNSUBSCRIBED
    assert store.get_subscriber("gone@example.com").status == SubscriberStatus.BOUNCED
    assert store.is_suppressed("gone@example.com")
    assert [r.email for r in store.recipients("news")] == ["new@example.com"]


def test_export_then_import_round_trip(store, tmp_path):
    store.create_list("weekly", double_opt_in=True)
    src = write(tmp_path, "email,name,city,lang\n"
                          "a@example.com,\"Smith, A\",Paris,fr\n"
                          "b@bücher.de,B,,de\n"
                          "c@example.com,\"quote \"\"c\"\"\",Rome,\n"
                          "d@example.com,D,Oslo,no\n")
    run(store, src)
    store.unsubscribe(store.get_subscriber("d@example.com").id)
    out = io.StringIO()
    assert export_subscribers(store, out, list_name="news") == 4
    exported = tmp_path / "export.csv"
    exported.write_text(out.getvalue(), encoding="utf-8")
    assert out.getvalue().splitlines()[0] == "email,name,status,city,lang"

    def state(s):
        return [(x.email, x.name, x.attributes, x.status.value)
                for x in s.iter_subscribers(list_name="news")]

    with open_store(str(tmp_path / "copy.db")) as copy:
        copy.create_list("news")
        summary = import_csv(copy, exported, list_name="news")
        assert summary.added == 4 and summary.rejected == 0
        assert state(copy) == state(store)
        assert [r.email for r in copy.recipients("news")] == [r.email for r in store.recipients("news")]
        again = io.StringIO()
        export_subscribers(copy, again, list_name="news")
        assert again.getvalue() == out.getvalue()


def test_export_jsonl_and_status_filter(store):
    store.add_subscriber("a@example.com", lists=["news"], attributes={"k": "v"})
    store.add_subscriber("b@example.com", lists=["news"])
    store.unsubscribe(store.get_subscriber("b@example.com").id)
    out = io.StringIO()
    progress = []
    count = export_subscribers(store, out, fmt="jsonl", status=SubscriberStatus.ACTIVE,
                               on_progress=lambda d, t: progress.append((d, t)))
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert count == 1 and records[0]["email"] == "a@example.com"
    assert records[0]["attributes"] == {"k": "v"} and progress[-1] == (1, 1)
    with pytest.raises(ValidationError):
        export_subscribers(store, io.StringIO(), fmt="xml")


def test_an_opt_out_later_in_the_file_wins_over_an_earlier_duplicate(store, tmp_path):
    path = write(tmp_path, "email,status\nnew@example.com,active\nNEW@example.com,unsubscribed\n"
                           "other@example.com,complained\nOTHER@example.com,\n")
    summary, _ = run(store, path)
    assert (summary.added, summary.duplicates) == (2, 2)
    new = store.get_subscriber("new@example.com")
    assert new.status == SubscriberStatus.UNSUBSCRIBED
    assert new.unsubscribed_at is not None and new.confirmed_at is None
    assert [m.status.value for m in store.memberships(new.id)] == ["unsubscribed"]
    assert store.get_subscriber("other@example.com").status == SubscriberStatus.COMPLAINED
    assert store.is_suppressed("other@example.com")
    assert list(store.recipients("news")) == []


def test_attribute_names_are_normalised_and_survive_a_round_trip(store, tmp_path):
    summary, _ = run(store, write(tmp_path, "EMAIL,Home City,Zip\na@example.com,Paris,75001\n"))
    assert summary.added == 1
    assert store.get_subscriber("a@example.com").attributes == {"home_city": "Paris", "zip": "75001"}
    store.add_subscriber("a@example.com", attributes={"HOME  City": "Lyon"})
    assert store.get_subscriber("a@example.com").attributes == {"home_city": "Lyon", "zip": "75001"}
    out = io.StringIO()
    export_subscribers(store, out)
    assert out.getvalue().splitlines()[0] == "email,name,status,home_city,zip"
    assert import_csv(store, write(tmp_path, out.getvalue(), "again.csv"),
                      list_name="news").unchanged == 1


MIXED = ("email,name,status,city\n"
         "b@example.com,B,,Oslo\n"
         "A@example.com,A,,\n"
         "a@EXAMPLE.com,,,Rome\n"
         "c@bücher.de,C,unsubscribed,\n"
         "d@example.com,D,bounced,\n"
         "b@example.com,,unsubscribed,\n"
         "e@example.com,E,unconfirmed,\n"
         "not-valid,X,,\n")


def _state(store):
    subscribers = sorted((s.email, s.name, s.attributes, s.status.value,
                          s.confirmed_at is not None, s.unsubscribed_at is not None,
                          tuple(m.status.value for m in store.memberships(s.id)))
                         for s in store.iter_subscribers())
    return subscribers, sorted(r.email for r in store.recipients("news"))


def test_the_bulk_and_the_staged_path_agree(tmp_path):
    path = write(tmp_path, MIXED)
    results = []
    for name, unrelated_suppression in (("bulk", False), ("staged", True)):
        with open_store(str(tmp_path / f"{name}.db")) as s:
            s.create_list("news")
            if unrelated_suppression:  # anything on record sends the import down the staged path
                s.suppress("someone.else@example.com", "manual")
            summary = import_csv(s, path, list_name="news")
            suppressed = s.is_suppressed("d@example.com")
            results.append((summary.as_dict(), _state(s), suppressed))
            assert s.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert sqlite_bulk.can_bulk_load(s.conn)
    assert results[0] == results[1]
    summary, (subscribers, recipients), suppressed = results[0]
    assert (summary["added"], summary["duplicates"], summary["rejected"]) == (5, 2, 1)
    # duplicates: the last row kept whole (spelling and values), an opt-out winning
    assert recipients == ["a@EXAMPLE.com"] and suppressed
    assert ("a@EXAMPLE.com", "", {"city": "Rome"}, "active", True, False, ("active",)) in subscribers
    assert ("b@example.com", "", {}, "unsubscribed", False, True,
            ("unsubscribed",)) in subscribers


def test_a_database_without_the_named_index_uses_the_staged_path(tmp_path):
    with open_store(str(tmp_path / "old.db")) as s:
        s.create_list("news")
        s.conn.execute("DROP INDEX subscribers_by_key")
        s.conn.execute("CREATE UNIQUE INDEX legacy_key ON subscribers(email_key)")
        assert not sqlite_bulk.can_bulk_load(s.conn)
        summary = import_csv(s, write(tmp_path, MIXED), list_name="news")
        assert (summary.added, summary.duplicates) == (5, 2)
        assert [r.email for r in s.recipients("news")] == ["a@EXAMPLE.com"]


def test_import_rows_api_records_the_source_verbatim(store):
    from newsletter.store.base import ImportRow

    rows = [ImportRow("a@example.com", 2, "a@example.com", "A", "{}", "active")]
    summary = store.import_rows(rows, list_name="news", source="crm'); DROP TABLE lists; --")
    assert summary.added == 1
    assert store.get_subscriber("a@example.com").source == "crm'); DROP TABLE lists; --"
    assert store.get_list("news") is not None


@pytest.mark.parametrize("unrelated_suppression", [False, True], ids=["empty", "with-suppressions"])
def test_postgresql_imports_exactly_as_sqlite_does(tmp_path, pg_url, unrelated_suppression):
    """The same file into SQLite and into PostgreSQL (COPY, then set-based merging): the same
    counts, subscribers, memberships, recipients and suppressions; then a second file naming
    existing subscribers (the consent rules) agrees too."""
    first = write(tmp_path, MIXED)
    second = write(tmp_path, "email,name,status,city\n"
                             "A@example.com,Anne,,Lyon\n"       # updated
                             "b@example.com,B2,,\n"             # unsubscribed: kept by consent
                             "e@example.com,,active,\n"         # unconfirmed -> active
                             "d@example.com,D,,\n"              # bounced + suppressed
                             "f@example.com,F,complained,\n"    # new, suppressed
                             "F@example.com,,,\n", "second.csv")
    results = []
    for url in (str(tmp_path / "s.db"), pg_url):
        with open_store(url) as s:
            s.create_list("news")
            if unrelated_suppression:
                s.suppress("someone.else@example.com", "manual")
            summaries = [import_csv(s, first, list_name="news").as_dict()]
            state = [_state(s)]
            summaries.append(import_csv(s, second, list_name="news").as_dict())
            state.append(_state(s))
            suppressed = [s.is_suppressed(e) for e in ("d@example.com", "f@example.com")]
            results.append((summaries, state, suppressed))
            if url == pg_url:  # the bulk path's dropped index and foreign keys are back
                from newsletter.store import postgres_bulk

                assert postgres_bulk.can_bulk_load(s.conn)
    assert results[0] == results[1]
    summaries, state, suppressed = results[1]
    assert suppressed == [True, True]
    assert (summaries[1]["updated"], summaries[1]["kept_by_consent"]) == (2, 2)


@pytest.mark.parametrize("max_runs", [1000, 0], ids=["copied", "selected"])
def test_a_first_postgresql_import_without_duplicates_adds_the_memberships_sqlite_does(
        tmp_path, pg_url, monkeypatch, max_runs):
    """No duplicates in the file: PostgreSQL COPYs the memberships from the runs of statuses
    it saw (or, past ``_MAX_RUNS`` runs, reads them back with INSERT … SELECT): the same rows,
    timestamps and suppressions as SQLite either way."""
    from newsletter.store import postgres_bulk

    monkeypatch.setattr(postgres_bulk, "_MAX_RUNS", max_runs)
    path = write(tmp_path, "email,name,status\n" + "".join(
        f"u{i}@example.com,U{i},{status}\n" for i, status in enumerate(
            ["", "active", "unsubscribed", "bounced", "bounced", "unconfirmed", "complained",
             "active", "", "unconfirmed"])))
    results = []
    for url in (str(tmp_path / "s.db"), pg_url):
        with open_store(url) as s:
            s.create_list("news")
            summary = import_csv(s, path, list_name="news").as_dict()
            memberships = [tuple(r) for r in s.conn.execute(
                "SELECT s.email, m.status, m.created_at = s.created_at, m.confirmed_at, "
                "m.unsubscribed_at, m.confirmed_at = s.confirmed_at, "
                "m.unsubscribed_at = s.unsubscribed_at FROM memberships m "
                "JOIN subscribers s ON s.id = m.subscriber_id ORDER BY s.email").fetchall()]
            results.append((summary, _state(s), [m[:3] + (m[3] is None, m[4] is None) + m[5:]
                                                 for m in memberships],
                            [s.is_suppressed(f"u{i}@example.com") for i in range(10)]))
            if url == pg_url:
                assert postgres_bulk.can_bulk_load(s.conn)
    assert results[0] == results[1]
    summary, _, memberships, suppressed = results[1]
    assert summary["added"] == 10 and len(memberships) == 10
    assert suppressed == [False, False, False, True, True, False, True, False, False, False]
